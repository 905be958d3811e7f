--- `odo tail --dir DIR STREAM [--from REV] [-f]`: a stream's events as
-- JSON lines {"stream","rev","ts","type","data"} (or "data_base64" when the
-- bytes are not UTF-8). When REV is behind the stream's compaction point,
-- the first line is the snapshot that stands for the events before it:
-- {"kind":"snapshot","stream","rev","format","origin","data"} (or
-- "data_base64"), then the events after it. With -f, keeps printing new
-- events: through the running node, or, with none running (or once it
-- stops), by looking into the store now and then (and switching to a node
-- that starts).
--
-- @module odo.cli.tail
local cli = require "odo.cli"
local Control = require "odo.control"
local Store = require "odo.store"
local compat = require "odo.compat"

local function emit(t)
  io.stdout:write(Control.encode(t), "\n")
  io.stdout:flush()
end

-- Prints what the store holds from `from`; returns the next revision.
local function from_store(dir, stream, from)
  local store, err, name = Store.open(dir .. "/store", { create = false })
  if not store then return nil, err, name end
  local st = store:stream(stream)
  local nxt = from or (st and st.first) or 1
  if st and nxt < st.first then
    local snap = store:snapshot_get(stream, "source")
    if snap and snap.rev + 1 >= nxt then
      emit(Control.snapshot_table(stream, snap))
      nxt = snap.rev + 1
    end
    if nxt < st.first then nxt = st.first end
  end
  if st and nxt <= st.last then
    for batch in store:batches(stream, nxt, st.last, 1000) do
      for _, ev in ipairs(batch) do emit(Control.event_table(stream, ev)) end
      nxt = batch[#batch].rev + 1
    end
  end
  store:close()
  return nxt
end

-- Through the node: returns the next revision, or nil, err, name (and the
-- next revision when some lines came before the failure).
local function from_node(dir, stream, from, follow)
  local nxt = from
  local answer, err, name = Control.request(dir .. "/odo.sock",
    { cmd = "tail", stream = stream, from = from, follow = follow },
    function(line)
      if line.event then
        line.event.rev = compat.tointeger(line.event.rev)
        line.event.ts = compat.tointeger(line.event.ts)
        emit(line.event)
        nxt = line.event.rev + 1
        return false
      end
      if line.snapshot then
        line.snapshot.rev = compat.tointeger(line.snapshot.rev)
        emit(line.snapshot)
        nxt = line.snapshot.rev + 1
        return false
      end
      return true -- the end, or an error
    end, not follow and 60000)
  if answer and answer.closing then
    return nil, answer.error, "ECLOSED", nxt -- the node stopped
  end
  if answer and not answer.ok then return nil, answer.error, "EFAIL" end
  if not answer then return nil, err, name, nxt end
  return nxt
end

-- Failures that mean "no node answers there (now)": read the store.
local NO_NODE = { ENOENT = true, ECONNREFUSED = true, EPIPE = true, ECLOSED = true }

return function(args)
  local uv = require "luv"
  local nxt = args.from
  while true do
    local n, err, name, partial = from_node(args.dir, args.stream, nxt, args.follow)
    if n and not args.follow then return 0 end
    nxt = partial or n or nxt
    if not n and not NO_NODE[name] then return cli.fail(err) end
    if name == "ECLOSED" and args.follow then
      io.stderr:write("odo: the node stopped; following the store\n")
    end
    -- no node: the store itself
    local m, serr, sname = from_store(args.dir, args.stream, nxt)
    if m then nxt = m
    elseif sname ~= "EBUSY" then return cli.fail(serr) end
    if not args.follow then return 0 end
    uv.sleep(500)
  end
end
