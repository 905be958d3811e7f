--- The control socket: how `odo status`, `append`, `tail` and `verify` talk
-- to a running node, through `DIR/odo.sock` (a unix socket, mode 0600).
-- The protocol is in docs/CLI.md ("The control protocol").
--
-- Messages are JSON objects, one per line, each optionally followed by a
-- raw payload (`odo.control.frame`). A request names a command: `{"cmd":
-- "status"}`; the answer ends with `{"ok": true, "result": ...}` or `{"ok":
-- false, "error": "NAME: message"}`. Appends and tails stream: the client
-- sends the input in pieces and hears of each durable batch (`progress`);
-- a tail comes as chunks of ready-made `odo tail` lines, paced by the
-- client's reading. Commands are plain functions in `Control.commands`; a
-- node process may add its own. A command that raises answers `{"ok":
-- false, "error": "EINTERNAL: ..."}` (and the error goes to the node's
-- error handler). When the server closes (the node stops), every client
-- still connected gets `{"ok": false, "error": "ECLOSED: the node is
-- stopping", "closing": true}`, then the end of the stream.
--
-- @module odo.control

-- (plain Lua 5.1: odo-journal runs on 5.1 to 5.4 and LuaJIT; see odo.compat)
local cjson = require "cjson"
local compat = require "odo.compat"
local Frame = require "odo.control.frame"
local Lines = require "odo.control.lines"
local Appender = require "odo.control.appender"
local Client = require "odo.control.client"

local Control = {}
Control.json = cjson

--- Marks a table as a JSON array (so an empty one encodes as [], which
-- lua-cjson 2.1 cannot tell from an empty object).
Control.array_mt = Frame.array_mt
function Control.array(t) return setmetatable(t or {}, Frame.array_mt) end

--- JSON text of v, with arrays marked by `Control.array` kept arrays.
Control.encode = Frame.encode

local function hex(s)
  return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end))
end

--- A node's state as `odo status --json` prints it.
function Control.status_table(id, listen, peers, streams, upstreams)
  local ps, ss = {}, {}
  for i, p in ipairs(peers or {}) do
    ps[i] = {
      id = p.id or cjson.null,
      host = p.host or cjson.null,
      port = p.port or cjson.null,
      state = p.state,
      reason = p.reason or cjson.null,
      detail = p.detail or cjson.null,
      attempts = p.attempts or 0,
      rtt = p.rtt or cjson.null,
      incoming = p.incoming or false,
      last_seen = p.last_seen,
    }
  end
  for i, st in ipairs(streams or {}) do
    ss[i] = {
      id = st.id,
      source = st.source,
      first = st.first,
      last = st.last,
      snapshot = st.snapshot,
      own = st.own,
      head = hex(st.hash),
      upstream = (upstreams and upstreams[st.id]) or (st.own and "self") or cjson.null,
      lag = st.lag or cjson.null,
      caught_up = st.caught_up,
    }
  end
  return {
    id = id,
    listen = listen or cjson.null,
    running = listen ~= nil,
    peers = Control.array(ps),
    streams = Control.array(ss),
  }
end

-- ---- streams by id or prefix -----------------------------------------------------

--- The full id of the stream that `arg` names in `store`: an exact id, or
-- a unique prefix of one (as git takes commits). An exact id always wins.
-- A prefix matches part by part: "SRC" the stream of a source whose id
-- starts with SRC (`<id>/name` streams only when no such stream is held),
-- "SRC/NAME" a named stream `<id>/<name>` whose id and name start with
-- them. A stream of the store's own node that has no event yet is taken
-- as named.
-- @tparam odo.store store
-- @tparam string arg
-- @treturn string the stream id
-- @treturn[2] nil
-- @treturn[2] string "ENOSTREAM: no stream 'x' here", or "EAMBIGUOUS: 'x'
--   is the start of N streams: a, b, ..."
-- @treturn[2] string NAME
function Control.resolve_stream(store, arg)
  assert(type(arg) == "string", "a stream id must be a string")
  local src, name = arg:match("^([^/]*)/(.*)$")
  local sources, named = {}, {}
  for _, st in ipairs(store:streams()) do
    local id = st.id
    if id == arg then return arg end
    local s, n = id:match("^([^/]*)/(.*)$")
    if not src then
      if arg ~= "" and id:sub(1, #arg) == arg then
        if s then named[#named + 1] = id else sources[#sources + 1] = id end
      end
    elseif s and s:sub(1, #src) == src and n:sub(1, #name) == name then
      named[#named + 1] = id
    end
  end
  local matches = #sources > 0 and sources or named
  if #matches == 1 then return matches[1] end
  if #matches > 1 then
    local shown = table.concat(matches, ", ", 1, math.min(#matches, 10))
    return nil, ("EAMBIGUOUS: '%s' is the start of %d streams: %s%s"):format(arg, #matches, shown,
      #matches > 10 and ", ..." or ""), "EAMBIGUOUS"
  end
  local own = store.node_id
  if arg == own or (arg:sub(1, #own + 1) == own .. "/" and #arg > #own + 1) then return arg end
  return nil, ("ENOSTREAM: no stream '%s' here"):format(arg), "ENOSTREAM"
end

--- A revision as a request gives it (nil: none), or nil, "EINVAL: ...".
local function revision(v)
  if v == nil then return nil end
  local from = compat.tointeger(tonumber(v))
  if not from or from < 1 then
    return nil, ("EINVAL: %s is not a revision (revisions start at 1)"):format(tostring(from or v))
  end
  return from
end

-- ---- commands ----------------------------------------------------------------------

Control.commands = {}

--- Discovery sources' status entries as `odo status --json` prints them
-- (an array; each entry's `found` an array).
function Control.discovery_table(list)
  local out = {}
  for i, d in ipairs(list or {}) do
    local e = {}
    for k, v in pairs(d) do e[k] = v end
    if type(e.found) == "table" then e.found = Control.array(e.found) end
    out[i] = e
  end
  return Control.array(out)
end

function Control.commands.status(node)
  local st = node:status()
  local t = Control.status_table(st.id, st.listen, st.peers, st.streams, st.upstreams)
  t.discovery = Control.discovery_table(st.discovery)
  t.now_ms = st.now_ms -- the clock of the discovery entries' times
  t.connections = st.connections
  return t
end

-- A slow reader holds the node back no further than this (bytes queued).
local HIGH_WATER, LOW_WATER = 8388608, 4194304

--- `{stream = NAME or nil, type = TYPE, split = "lines"|"whole"|"each",
-- data = {DATA...} or nil}`: with `data`, appends one event per datum;
-- without, the input follows as messages with payloads, then `{"end":
-- true}` (see `odo.control.appender` for `split`). Each durable batch is
-- told as `{"progress": {"events", "last"}}`; the result is `{stream,
-- last, events}`. A failure (an event over the limit) answers at once; the
-- rest of the input is then read and dropped.
function Control.commands.append(node, req, reply, conn)
  if req.stream ~= nil and (type(req.stream) ~= "string" or req.stream == "") then
    return nil, "EINVAL: a stream name must be a non-empty string"
  end
  if req.type ~= nil and type(req.type) ~= "string" then return nil, "EINVAL: an event type must be a string" end
  local split = req.split or "each"
  if split ~= "lines" and split ~= "whole" and split ~= "each" then
    return nil, "EINVAL: split must be lines, whole or each"
  end
  local stream = req.stream and node:stream_id(req.stream) or nil
  local inline = type(req.data) == "table"
  local ap = Appender.new(function(events) return node:append(stream, events) end, {
    split = split,
    type = req.type,
    on_commit = not inline and function(last, events)
      reply { progress = { events = events, last = last } }
      conn.hold() -- a turn for the node's readers before the next batch
    end,
  })
  local function result()
    local last, events_or_err = ap:finish()
    if not last then return nil, events_or_err end
    return { stream = stream or node.id, last = last, events = events_or_err }
  end
  if inline then
    for _, d in ipairs(req.data) do
      local ok, err = ap:feed(tostring(d))
      if not ok then return nil, err end
    end
    return result()
  end
  -- what came in one loop turn is written at its end (or sooner, in
  -- batches): a slow writer's events do not wait for a full batch
  local scheduled = false
  local function commit_soon()
    if scheduled then return end
    scheduled = true
    node.adapter.defer(function()
      scheduled = false
      if ap.err or node.closed or conn.on_message == nil then return end
      local ok, err = ap:commit()
      if not ok then reply { ok = false, error = err } end
    end)
  end
  conn.on_message = function(msg, payload)
    if msg["end"] then
      conn.on_message = nil
      if ap.err then return end -- already answered
      local res, err = result()
      if res then reply { ok = true, result = res } else reply { ok = false, error = err } end
    elseif payload and not ap.err then
      local ok, err = ap:feed(payload)
      if not ok then reply { ok = false, error = err } else commit_soon() end
    end
  end
  -- the node stops or the client goes: what came whole is kept
  conn.on_close = function()
    if conn.on_message and not ap.err and not node.closed then ap:commit() end
    conn.on_message = nil
  end
end

--- `{stream, from, follow}`: the stream (an id or a unique prefix, see
-- `resolve_stream`) as `odo tail` prints it: first `{"stream": ID, "last":
-- REV}` (0: no event yet), then
-- messages `{"lines": N, "next": REV}` whose payload is N lines, ready to
-- print; without follow, then `{"ok": true, "result": "end"}`; with
-- follow, live lines until the client goes away.
function Control.commands.tail(node, req, reply, conn)
  if type(req.stream) ~= "string" then return nil, "EINVAL: tail needs a stream id" end
  local id, err = Control.resolve_stream(node.store, req.stream)
  if not id then return nil, err end
  local from
  from, err = revision(req.from)
  if err then return nil, err end
  local st = node.store:stream(id)
  from = from or (st and st.first) or 1
  reply { stream = id, last = st and st.last or 0 }
  local sock = conn.sock
  local sub
  local function send(header, payload)
    sock:write(Frame.message(header, payload), function(werr)
      if werr then return sub:close() end
      if sub.paused and sock:queued() < LOW_WATER then sub:resume() end
    end)
    if sock:queued() >= HIGH_WATER then sub:pause() end
  end
  sub = node:subscribe(id, from, function(batch)
    if batch.snapshot then
      return send({ lines = 1, next = batch.snapshot.rev + 1 }, Lines.snapshot(id, batch.snapshot))
    end
    send({ lines = #batch, next = batch[#batch].rev + 1 }, Lines.events(id, batch))
  end, {
    slice = 10000,
    on_caught_up = function()
      if not req.follow then
        sub:close()
        reply { ok = true, result = "end" }
      end
    end,
  })
  conn.followers[sub] = true
  conn.on_close = function()
    conn.followers[sub] = nil
    sub:close()
  end
end

--- `{stream}`: recomputes chains and checks signatures (see odo verify);
-- `stream` is an id or a unique prefix (see `resolve_stream`).
function Control.commands.verify(node, req)
  local id = req.stream
  if id ~= nil then
    local err
    id, err = Control.resolve_stream(node.store, tostring(id))
    if not id then return nil, err end
  end
  return require("odo.verify").run(node.store, id)
end

-- ---- the server ------------------------------------------------------------------------

-- Runs one request of a client; a command that raises answers EINTERNAL.
local function handle(node, req, conn)
  local reply = conn.reply
  local fn = Control.commands[req.cmd]
  if not fn then return reply { ok = false, error = "EINVAL: unknown command " .. tostring(req.cmd) } end
  if node.closed then return reply { ok = false, error = "ECLOSED: the node is stopping" } end
  local ok, result, err = compat.xpcall(fn, debug.traceback, node, req, reply, conn)
  if not ok then
    node:report_error("control command " .. tostring(req.cmd) .. ": " .. tostring(result))
    conn.on_message = nil
    return reply { ok = false, error = "EINTERNAL: " .. tostring(result):match("^[^\n]*") }
  end
  if result ~= nil then reply { ok = true, result = result }
  elseif err then reply { ok = false, error = err } end
end

-- How long an append waits at most, per batch, for tails to catch up.
local HOLD_MS = 50

-- Whether a tail is behind: catching up, or its reader is (paused).
local function followers_behind(followers)
  for sub in pairs(followers) do
    if not sub.closed and (sub.paused or not sub:caught_up()) then return true end
  end
  return false
end

-- Ends a client's connection: the closing line, then the socket once the
-- line is written (or after a second, for a client that reads nothing).
local function say_goodbye(node, conn)
  local sock = conn.sock
  if conn.on_close then node:protect(conn.on_close) end
  local timer
  local function close()
    if timer then timer.stop() end
    sock:close()
  end
  timer = node.adapter.timer(1000, function() node:protect(close) end)
  sock:write(Frame.message { ok = false, error = "ECLOSED: the node is stopping", closing = true },
    function() node:protect(close) end)
end

--- Serves the control socket of `node` at `path` (with the node's
-- adapter, which must offer listen_unix). Returns a server with close(),
-- which also ends every client's connection (see the module's
-- description), or nil, "NAME: message", "NAME".
function Control.serve(node, path)
  local adapter = node.adapter
  assert(adapter.listen_unix, "the adapter cannot listen on a unix socket")
  local clients = {}
  local followers = {} -- the subscriptions of tails: [sub] = true
  local server, err, name = adapter.listen_unix(path, function(sock)
    if node.closed then return sock:close() end
    -- a connection: its socket, how to answer, and the streaming request
    -- that takes the messages that follow it (on_message), if any
    local conn = { sock = sock }
    clients[sock] = conn
    function conn.reply(obj, payload) sock:write(Frame.message(obj, payload)) end
    conn.followers = followers
    -- Stops reading (when the adapter can) for the loop's next turn, and
    -- while a tail of this socket is behind, at most HOLD_MS: a bulk
    -- append does not outrun a `tail -f`, and a stuck reader slows
    -- appends through the socket but does not stop them.
    function conn.hold()
      if not sock.read_stop or conn.held then return end
      conn.held = true
      sock:read_stop()
      local since = adapter.now()
      local function again()
        if clients[sock] and adapter.now() - since < HOLD_MS and followers_behind(followers) then
          return adapter.timer(2, function() node:protect(again) end)
        end
        conn.held = false
        if clients[sock] then sock:read_start(conn.reader) end
      end
      adapter.defer(function() node:protect(again) end)
    end
    conn.reader = Frame.reader(function(msg, payload)
      node:protect(function()
        if not msg then
          clients[sock] = nil
          if conn.on_close then conn.on_close() end
          return sock:close()
        end
        if not clients[sock] then return end -- closing
        if conn.on_message then return conn.on_message(msg, payload) end
        handle(node, msg, conn)
      end)
    end, function(why) conn.reply { ok = false, error = why } end)
    sock:read_start(conn.reader)
  end)
  if not server then return nil, err, name end
  return {
    path = server.path,
    close = function()
      server.close()
      local list = {}
      for _, conn in pairs(clients) do list[#list + 1] = conn end
      clients = {}
      for _, conn in ipairs(list) do say_goodbye(node, conn) end
    end,
  }
end

-- ---- the client ------------------------------------------------------------------------

--- Connects to a node's control socket (see `odo.control.client`).
Control.connect = Client.connect

--- Sends one request to the node at `path` and waits for the first
-- answer (or, with `on_line`, until `on_line(msg, payload)` returns true
-- for a message), each at most `timeout_ms` after the one before
-- (default 10 s; false: no limit).
-- Returns the answer, or nil, "NAME: message", "NAME"; NAME is ENOENT or
-- ECONNREFUSED when no node runs there (see `odo.control.client`).
function Control.request(path, req, on_line, timeout_ms)
  local c, err, name = Client.connect(path)
  if not c then return nil, err, name end
  c:send(req)
  if timeout_ms == nil then timeout_ms = 10000 end
  local msg, payload
  repeat
    msg, payload, name = c:receive(timeout_ms or nil)
    if not msg then
      c:close()
      return nil, payload, name
    end
  until not on_line or on_line(msg, payload)
  c:close()
  return msg
end

return Control
