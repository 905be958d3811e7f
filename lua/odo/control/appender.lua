--- Bytes to events, for `odo append` (into the store) and the control
-- socket's append (into a running node): the same splitting, limits and
-- messages both ways. Bytes come in pieces of any size; events go out in
-- durable batches of at most 10,000 events or 16 MiB, so memory stays
-- bounded whatever the input's length.
--
-- How bytes become events (`split`): "lines", one event per line (split at
-- "\n", which is dropped; a last line without "\n" is one more event);
-- "whole", everything fed is one event (`odo append --binary`); "each",
-- each piece fed is one event (DATA arguments).
--
-- An event over the data limit (`odo.core.max_data`, 4 MiB) is refused as
-- soon as it gets over it, without waiting for its end: the events before
-- it are appended, it and what follows are not, and the message says so.
--
-- @module odo.control.appender

-- (plain Lua 5.1: odo-journal runs on 5.1 to 5.4 and LuaJIT; see odo.compat)
local core = require "odo.core"

local Appender = {}
Appender.__index = Appender

local BATCH_EVENTS = 10000
local BATCH_BYTES = 16777216
local SPLITS = { lines = true, whole = true, each = true }

--- A new appender.
-- @tparam function append `append(events)`: a store's or a node's append
--   to the chosen stream; returns the last revision or nil, err, name
-- @tparam table opts `split` ("lines", "whole" or "each"), `type` (the
--   events' type, default "text"), `on_commit` (`function(last, events)`
--   after each durable batch: the stream's last revision, the events
--   appended so far)
-- @treturn Appender
function Appender.new(append, opts)
  assert(type(append) == "function", "append must be a function")
  opts = opts or {}
  assert(SPLITS[opts.split or "lines"], "split must be \"lines\", \"whole\" or \"each\"")
  return setmetatable({
    append = append,
    split = opts.split or "lines",
    type = opts.type or "text",
    on_commit = opts.on_commit,
    pending = {},    -- events not written yet
    pending_bytes = 0,
    parts = {},      -- pieces of the event being read
    part_bytes = 0,
    seen = 0,        -- events read so far (the number of the next one - 1)
    events = 0,      -- events appended
    last = nil,      -- the stream's last revision after the last write
  }, Appender)
end

--- Writes the whole events read so far (a piece of a line waits for its
-- end). Returns true, or nil, "NAME: message", NAME (kept: each later call
-- returns the same).
function Appender:commit()
  if self.err then return nil, self.err, self.name end
  if #self.pending == 0 then return true end
  local last, err, name = self.append(self.pending)
  if not last then
    if self.events > 0 then
      err = ("%s (the %d events before were appended: last revision %s)"):format(err, self.events, tostring(self.last))
    end
    return self:_fail(err, name)
  end
  self.last = last
  self.events = self.events + #self.pending
  self.pending, self.pending_bytes = {}, 0
  if self.on_commit then self.on_commit(last, self.events) end
  return true
end

function Appender:_fail(err, name)
  self.err, self.name = err, name or tostring(err):match("^(%u+):")
  return nil, self.err, self.name
end

-- What was appended before a failure, for its message.
function Appender:_before()
  if self.events == 0 then return "nothing was appended" end
  return ("the %d before it were (last revision %s)"):format(self.events, tostring(self.last))
end

-- Refuses event number seen + 1, which is over the limit: writes what
-- came before it first.
function Appender:_refuse_big()
  local what = self.split == "lines" and "line" or "event"
  local ok, err, name = self:commit()
  if not ok then return nil, err, name end
  return self:_fail(("ETOOBIG: %s %d is over %d bytes, the limit of an event's data; %s"):format(
    what, self.seen + 1, core.max_data, self:_before()), "ETOOBIG")
end

-- Queues one whole event.
function Appender:_event(data)
  if #data > core.max_data then return self:_refuse_big() end
  self.seen = self.seen + 1
  self.pending[#self.pending + 1] = { type = self.type, data = data }
  self.pending_bytes = self.pending_bytes + #data
  if #self.pending >= BATCH_EVENTS or self.pending_bytes >= BATCH_BYTES then return self:commit() end
  return true
end

-- Adds a piece to the event being read.
function Appender:_part(bytes)
  if bytes == "" then return true end
  self.parts[#self.parts + 1] = bytes
  self.part_bytes = self.part_bytes + #bytes
  if self.part_bytes > core.max_data then return self:_refuse_big() end
  return true
end

-- The event being read, whole; its pieces are dropped.
function Appender:_take_part()
  local data = table.concat(self.parts)
  self.parts, self.part_bytes = {}, 0
  return data
end

--- Takes the next piece of input. Returns true, or nil, "NAME: message",
-- NAME once something failed (each later call returns the same).
-- @tparam string bytes
function Appender:feed(bytes)
  assert(type(bytes) == "string", "feed takes a string")
  if self.err then return nil, self.err, self.name end
  if self.split == "each" then return self:_event(bytes) end
  if self.split == "whole" then return self:_part(bytes) end
  local pos = 1
  while true do
    local nl = bytes:find("\n", pos, true)
    if not nl then break end
    local ok, err, name
    if #self.parts == 0 then
      ok, err, name = self:_event(bytes:sub(pos, nl - 1))
    else
      ok, err, name = self:_part(bytes:sub(pos, nl - 1))
      if ok then ok, err, name = self:_event(self:_take_part()) end
    end
    if not ok then return nil, err, name end
    pos = nl + 1
  end
  return self:_part(bytes:sub(pos))
end

--- Ends the input: appends what is left. Returns the stream's last
-- revision and the number of events appended, or nil, "NAME: message",
-- NAME ("EINVAL: nothing to append" when the input held no event).
function Appender:finish()
  if self.err then return nil, self.err, self.name end
  local ok, err, name = true, nil, nil
  if self.split == "whole" or (self.split == "lines" and #self.parts > 0) then
    if self.split == "whole" and #self.parts == 0 then return self:_fail("EINVAL: nothing to append", "EINVAL") end
    ok, err, name = self:_event(self:_take_part())
  end
  if ok then ok, err, name = self:commit() end
  if not ok then return nil, err, name end
  if self.events == 0 then return self:_fail("EINVAL: nothing to append", "EINVAL") end
  return self.last, self.events
end

return Appender
