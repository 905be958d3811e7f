--- The `odo append` command (LDoc cannot take its usage on this line):
-- `odo append --dir DIR [--type TYPE] [--stream NAME] [--binary] [DATA...]`,
-- one event per DATA, or per line of stdin when there is none, or stdin
-- whole as one event with `--binary` (alias `--raw`); prints the stream's
-- last revision once the events are durable. Through the running node's
-- control socket (stdin streams to it in pieces, and it appends in
-- durable batches as they come), or into the store when no node runs:
-- the same splitting, limits and messages (`odo.control.appender`).
--
-- @module odo.cli.append
local cli = require "odo.cli"
local Dir = require "odo.cli.dir"
local Appender = require "odo.control.appender"
local compat = require "odo.compat"

local CHUNK = 65536

-- The next piece of stdin: what is there now (a slow writer's lines go on
-- at once), at most CHUNK bytes; nil at its end.
local function read_stdin()
  local data, err = require("luv").fs_read(0, CHUNK, -1)
  if not data then error("reading stdin: " .. tostring(err), 0) end
  if data == "" then return nil end
  return data
end

local function split_of(args)
  if #args.data > 0 then return "each" end
  return (args.binary or args.raw) and "whole" or "lines"
end

-- Into the store: returns the last revision, or nil, err.
local function into_store(args, store)
  local stream = args.stream and store:stream_id(args.stream) or nil
  local ap = Appender.new(function(events) return store:append(stream, events) end,
    { split = split_of(args), type = args.type })
  if #args.data > 0 then
    for _, d in ipairs(args.data) do
      local ok, err = ap:feed(d)
      if not ok then return nil, err end
    end
  else
    while true do
      local chunk = read_stdin()
      if not chunk then break end
      local ok, err = ap:feed(chunk)
      if not ok then return nil, err end
    end
  end
  return ap:finish()
end

-- Takes the node's messages that wait: progress is noted; an answer ends
-- the append (returns it).
local function take_answers(c, state)
  while c:waiting() do
    local msg = c:receive()
    if msg.progress then
      state.events, state.last = msg.progress.events, msg.progress.last
    else
      return msg
    end
  end
end

-- What the node got before the connection failed.
local function so_far(state)
  if not state.events then return "nothing was appended" end
  return ("%d events were appended (last revision %s); the rest was not"):format(compat.tointeger(state.events),
    tostring(compat.tointeger(state.last)))
end

-- Through the node: returns the last revision, or nil, err.
local function through_node(args, c)
  local req = { cmd = "append", stream = args.stream, type = args.type, split = split_of(args) }
  if #args.data > 0 then req.data = args.data end
  c:send(req)
  local state = {}
  local answer
  if not req.data then
    while not answer do
      local chunk = read_stdin()
      if not chunk then break end
      c:send({}, chunk)
      -- one piece in flight while the next is read; answers as they come
      while not c:flush(1) and not answer do
        if c.write_error or (c.ended and not c:waiting()) then break end
        answer = take_answers(c, state)
      end
      if c.write_error or c.ended then break end
    end
    if not answer then c:send { ["end"] = true } end
  end
  while not answer do
    local msg, err = c:receive(60000)
    if not msg then return nil, ("%s; %s"):format(err, so_far(state)) end
    if msg.progress then state.events, state.last = msg.progress.events, msg.progress.last else answer = msg end
  end
  if answer.closing then return nil, ("%s; %s"):format(answer.error, so_far(state)) end
  if not answer.ok then return nil, answer.error end
  return compat.tointeger(answer.result.last)
end

return function(args)
  -- a node that stops while we write: an error to report, not a SIGPIPE
  local sigpipe = require("luv").new_signal()
  sigpipe:start("sigpipe", function() end)
  sigpipe:unref()
  if (args.binary or args.raw) and #args.data > 0 then
    return cli.fail("--binary takes stdin as one event: give no DATA with it")
  end
  local last, err = Dir.run(args.dir,
    function(c) return through_node(args, c) end,
    function(store) return into_store(args, store) end)
  if not last then return cli.fail(err) end
  print(last)
  return 0
end
