--- The client end of the control socket, for the `odo` commands: connects
-- to `DIR/odo.sock`, sends messages, and receives them one at a time,
-- running luv's loop only while it waits. Reading pauses while messages
-- wait to be taken, so a slow consumer holds the node back rather than
-- filling memory. Timeouts are idle times (nothing received for so long),
-- never a limit on a long answer that keeps coming.
--
-- @module odo.control.client

-- (plain Lua 5.1: odo-journal runs on 5.1 to 5.4 and LuaJIT; see odo.compat)
local Frame = require "odo.control.frame"

local Client = {}
Client.__index = Client

local INBOX_MAX = 16 -- messages read ahead before reading pauses
-- A tail's snapshot line carries a whole snapshot (at most 1 GiB, in
-- base64 or JSON text): what the node sends is taken.
local MAX_PAYLOAD = 4294967296

-- "NAME: message" of a connection failure to `path`.
local function connect_error(path, err)
  local name = tostring(err):match("^(%u+)") or "ECONNREFUSED"
  if name == "EACCES" or name == "EPERM" then
    return ("EACCES: permission denied on %s (the node runs as another user?)"):format(path), "EACCES"
  end
  if name == "ENOTDIR" then
    return ("ENOTDIR: %s is not a folder, so no node runs there"):format(path:match("^(.*)/[^/]*$") or path),
      "ENOTDIR"
  end
  return ("%s: no node is running (%s)"):format(name, path), name
end

--- Connects to the control socket at `path`.
-- @tparam string path
-- @treturn Client
-- @treturn[2] nil
-- @treturn[2] string "NAME: message": ENOENT or ECONNREFUSED when no
--   node runs there, ENOTDIR when the folder is a file, EACCES when the
--   socket may not be opened
-- @treturn[2] string NAME
function Client.connect(path)
  local uv = require "luv"
  local pipe = uv.new_pipe(false)
  -- inbox[head..tail]: messages read, not taken yet
  local self = setmetatable({ uv = uv, pipe = pipe, path = path, inbox = {}, head = 1, tail = 0, writes = 0 },
    Client)
  local result
  -- a node whose socket's queue of connections is full answers EAGAIN:
  -- it is there, busy; try again for a few seconds before saying so
  for attempt = 1, 50 do
    result = nil
    local ok, err = pcall(pipe.connect, pipe, path, function(cerr) result = cerr or true end)
    if not ok then result = err end
    while result == nil do uv.run("once") end
    if not tostring(result):match("^EAGAIN") then break end
    pipe:close()
    uv.run("nowait")
    uv.sleep(math.min(10 * attempt, 200))
    pipe = uv.new_pipe(false)
    self.pipe = pipe
  end
  if tostring(result):match("^EAGAIN") then
    self:close()
    return nil, ("EAGAIN: the node at %s is too busy to take another connection (its queue is full); "
      .. "try again"):format(path), "EAGAIN"
  end
  if result ~= true then
    self:close()
    return nil, connect_error(path, result)
  end
  self.reading = true
  self.pipe_reader = Frame.reader(function(msg, payload)
    if msg then
      self.tail = self.tail + 1
      self.inbox[self.tail] = { msg, payload }
      if self.tail - self.head + 1 >= INBOX_MAX and self.reading then
        self.reading = false
        pipe:read_stop()
      end
    else
      self.ended = payload
    end
  end, function(why) self.bad = why end, MAX_PAYLOAD)
  pipe:read_start(self.pipe_reader)
  return self
end

--- Sends one message (a header table and an optional payload string).
function Client:send(obj, payload)
  if self.closed then return end
  self.writes = self.writes + 1
  local ok, err = pcall(self.pipe.write, self.pipe, Frame.message(obj, payload), function(werr)
    self.writes = self.writes - 1
    if werr and not self.write_error then self.write_error = werr end
  end)
  if not ok then
    self.writes = self.writes - 1
    self.write_error = err
  end
end

-- Runs the loop until cond() holds; false once `timeout_ms` passed without
-- anything received (nil: no limit).
function Client:_run(cond, timeout_ms)
  local uv = self.uv
  local timer, expired
  if timeout_ms then
    timer = uv.new_timer()
    timer:start(timeout_ms, 0, function() expired = true end)
  end
  local seen = self.tail
  while not cond() and not expired do
    uv.run("once")
    if timer and self.tail ~= seen then -- something came: the idle time starts again
      seen = self.tail
      timer:stop()
      timer:start(timeout_ms, 0, function() expired = true end)
    end
  end
  if timer then timer:close() end
  return not expired
end

--- Whether a message waits to be taken.
function Client:waiting()
  return self.head <= self.tail
end

--- Runs the loop until at most `max_pending` (default 0) sent messages
-- are still being written, a message arrives, or the connection ends.
-- Returns whether the writes got there (false when a message came first,
-- for the caller to read, or writing failed).
function Client:flush(max_pending)
  max_pending = max_pending or 0
  self:_run(function()
    return self.writes <= max_pending or self:waiting() or self.ended ~= nil or self.write_error ~= nil
  end)
  return self.writes <= max_pending and not self.write_error
end

--- The next message: header, payload (nil when it has none); or nil,
-- "NAME: message", NAME when the node closed the connection (EPIPE) or
-- nothing came for `timeout_ms` (ETIMEDOUT; nil: wait for ever).
function Client:receive(timeout_ms)
  local got = self:_run(function() return self:waiting() or self.ended ~= nil end, timeout_ms)
  if self:waiting() then
    local m = self.inbox[self.head]
    self.inbox[self.head] = nil
    self.head = self.head + 1
    if not self.reading and not self.closed and self.tail - self.head + 1 < INBOX_MAX / 2 then
      self.reading = true
      self.pipe:read_start(self.pipe_reader)
    end
    return m[1], m[2]
  end
  if not got then return nil, "ETIMEDOUT: the node did not answer", "ETIMEDOUT" end
  return nil, ("EPIPE: the node closed the control socket (%s)"):format(tostring(self.bad or self.ended)), "EPIPE"
end

--- Closes the connection (idempotent).
function Client:close()
  if self.closed then return end
  self.closed = true
  if not self.pipe:is_closing() then self.pipe:close() end
  self.uv.run("nowait")
end

return Client
