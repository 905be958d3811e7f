--- The `odo tail` command (LDoc cannot take its usage on this line):
-- `odo tail --dir DIR STREAM [--from REV] [-f]` prints a stream's events as
-- JSON lines {"stream","rev","ts","type","data"}, keys in that order (or
-- "data_base64" when the bytes are not UTF-8; `odo.control.lines`). STREAM
-- is a stream id or a unique prefix of one (an exact id wins; an
-- ambiguous prefix lists the streams it starts). When REV is behind the
-- stream's compaction point, the first line is the snapshot that stands
-- for the events before it: {"kind":"snapshot","stream","rev","format",
-- "origin","data"}, then the events after it. With -f, keeps printing new
-- events: through the running node, or, with none running (or once it
-- stops), by looking into the store now and then (and switching to a node
-- that starts). Ctrl-C (SIGINT) stops it at once, quietly, exit status 130.
--
-- @module odo.cli.tail
local cli = require "odo.cli"
local Dir = require "odo.cli.dir"
local Control = require "odo.control"
local Lines = require "odo.control.lines"
local compat = require "odo.compat"

local POLL_MS = 500

local function out(text)
  io.stdout:write(text)
  io.stdout:flush()
end

-- Says once that the stream has no event yet, when following it.
local function note_empty(state, id)
  if state.follow and not state.noted then
    state.noted = true
    io.stderr:write(("odo: %s has no events yet; waiting for them (Ctrl-C stops)\n"):format(id))
  end
end

-- Prints what the store holds from state.next on; returns 0.
local function from_store(store, state)
  local uv = require "luv"
  if not state.id then
    local id, err = Control.resolve_stream(store, state.arg)
    if not id then return nil, err end
    state.id = id
  end
  local id = state.id
  local st = store:stream(id)
  if not st or st.last == 0 then note_empty(state, id) end
  local nxt = state.next or (st and st.first) or 1
  if st and nxt < st.first then
    local snap = store:snapshot_get(id, "source")
    if snap and snap.rev + 1 >= nxt then
      out(Lines.snapshot(id, snap))
      nxt = snap.rev + 1
    end
    if nxt < st.first then nxt = st.first end
  end
  if st and nxt <= st.last then
    for batch in store:batches(id, nxt, st.last, 5000) do
      out(Lines.events(id, batch))
      nxt = batch[#batch].rev + 1
      uv.run("nowait") -- a Ctrl-C is heard between batches
    end
  end
  state.next = nxt
  return 0
end

-- Through the node: 0 when done; nil, err, name when it failed or the
-- node stopped (ECLOSED, EPIPE: then the store takes over).
local function from_node(c, state)
  c:send { cmd = "tail", stream = state.id or state.arg, from = state.next, follow = state.follow }
  while true do
    local msg, payload, name = c:receive(not state.follow and 60000 or nil)
    if not msg then return nil, payload, name end
    if msg.lines then
      out(payload)
      state.next = compat.tointeger(msg.next)
    elseif msg.stream then
      state.id = msg.stream
      if msg.last == 0 then note_empty(state, msg.stream) end
    elseif msg.closing then
      return nil, msg.error, "ECLOSED"
    elseif msg.ok then
      return 0
    else
      return nil, msg.error, tostring(msg.error):match("^(%u+):")
    end
  end
end

-- Failures that mean "no node answers there (now)": read the store (a
-- store busy with no node answering: a node starting or stopping).
local NO_NODE = { EPIPE = true, ECLOSED = true, EBUSY = true }

return function(args)
  local uv = require "luv"
  -- Ctrl-C: stop now, quietly, as shells expect of an interrupted command
  local sigint = uv.new_signal()
  sigint:start("sigint", function()
    io.stdout:flush()
    os.exit(130)
  end)
  sigint:unref()
  local state = { arg = args.stream, next = args.from, follow = args.follow }
  local tries = 0
  while true do
    local status, err, name = Dir.run(args.dir,
      function(c) return from_node(c, state) end,
      function(store) return from_store(store, state) end)
    if status then
      if not args.follow then return status end
    elseif not NO_NODE[name] then
      return cli.fail(Dir.stream_hint(args.dir, err))
    elseif args.follow then
      if name == "ECLOSED" then io.stderr:write("odo: the node stopped; following the store\n") end
    else
      -- the node went away in the middle: the store has the rest
      tries = tries + 1
      if tries >= 3 then return cli.fail(err) end
    end
    if args.follow then Dir.sleep(POLL_MS) end
  end
end
