--- The control socket: how `odo status`, `append`, `tail` and `verify` talk
-- to a running node, through `DIR/odo.sock` (a unix socket, mode 0600).
--
-- Requests and answers are JSON objects, one per line. A request names a
-- command: `{"cmd": "status"}`; the answer is `{"ok": true, "result": ...}`
-- or `{"ok": false, "error": "NAME: message"}`. Commands that stream (tail
-- -f) answer with many lines. Commands are plain functions in
-- `Control.commands`; a node process may add its own. A command that
-- raises answers `{"ok": false, "error": "EINTERNAL: ..."}` (and the error
-- goes to the node's error handler). When the server closes (the node
-- stops), every client still connected gets `{"ok": false, "error":
-- "ECLOSED: the node is stopping", "closing": true}`, then the end of the
-- stream.
--
-- @module odo.control

-- (plain Lua 5.1: odo-journal runs on 5.1 to 5.4 and LuaJIT; see odo.compat)
local cjson = require "cjson"
local compat = require "odo.compat"

local Control = {}
Control.json = cjson

--- Marks a table as a JSON array (so an empty one encodes as [], which
-- lua-cjson 2.1 cannot tell from an empty object).
Control.array_mt = {}
function Control.array(t) return setmetatable(t or {}, Control.array_mt) end

local EMPTY = "\0odo-empty-array\0"

local function mark_empty(v)
  if type(v) ~= "table" then return v end
  if getmetatable(v) == Control.array_mt and next(v) == nil then return EMPTY end
  local out = {}
  for k, x in pairs(v) do out[k] = mark_empty(x) end
  return out
end

--- JSON text of v, with arrays marked by `Control.array` kept arrays.
function Control.encode(v)
  local text = cjson.encode(mark_empty(v))
  text = text:gsub('"\\u0000odo%-empty%-array\\u0000"', "[]")
  -- lua-cjson escapes "/" as "\/"; both are JSON, the plain one reads better
  return (text:gsub("\\/", "/"))
end

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

-- ---- events as JSON lines -------------------------------------------------------

-- The base64 alphabet by 6-bit value, 0..63.
local B64 = {}
for v = 0, 63 do
  B64[v] = ("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"):sub(v + 1, v + 1)
end

local floor = math.floor

--- Base64 (RFC 4648, with padding).
function Control.base64(s)
  local out = {}
  for i = 1, #s, 3 do
    -- 3 bytes a, b, c are 4 values of 6 bits: a's top 6; a's low 2 and
    -- b's top 4; b's low 4 and c's top 2; c's low 6
    local a, b, c = s:byte(i, i + 2)
    local q1, q2 = B64[floor(a / 4)], B64[a % 4 * 16 + floor((b or 0) / 16)]
    local q3 = b and B64[b % 16 * 4 + floor((c or 0) / 64)] or "="
    local q4 = c and B64[c % 64] or "="
    out[#out + 1] = q1 .. q2 .. q3 .. q4
  end
  return table.concat(out)
end

-- Puts bytes in t as `data` when they are valid UTF-8, else `data_base64`.
local function put_data(t, data)
  if compat.utf8_valid(data) then t.data = data else t.data_base64 = Control.base64(data) end
  return t
end

--- An event as `odo tail` prints it: {stream, rev, ts, type, data} with
-- `data` a string when the bytes are valid UTF-8, else `data_base64`.
function Control.event_table(stream, ev)
  return put_data({ stream = stream, rev = ev.rev, ts = ev.ts, type = ev.type }, ev.data)
end

--- A snapshot as `odo tail` prints it, when the asked revision is behind
-- the stream's compaction point: {kind = "snapshot", stream, rev, format,
-- origin, data or data_base64}; the events after it follow.
function Control.snapshot_table(stream, snap)
  return put_data({ kind = "snapshot", stream = stream, rev = snap.rev, format = snap.format, origin = snap.origin },
    snap.data or "")
end

--- Appends one event of type `type_` (default "text") per datum, one
-- durable write per 10,000 (a batch's limit is 100,000), through
-- `append(events)` (a node's or a store's); stops at the first failure.
-- Returns the last revision, or nil, err, name.
function Control.append_data(append, data, type_)
  local last, err, name
  for at = 1, #data, 10000 do
    local events = {}
    for i = at, math.min(at + 9999, #data) do
      events[#events + 1] = { type = type_ or "text", data = tostring(data[i]) }
    end
    last, err, name = append(events)
    if not last then return nil, err, name end
  end
  return last
end

Control.commands = {}

function Control.commands.status(node)
  local st = node:status()
  return Control.status_table(st.id, st.listen, st.peers, st.streams, st.upstreams)
end

--- {stream = NAME or nil, type = TYPE, data = {DATA...}}: appends one event
-- per datum, durably; the result is the stream's last revision.
function Control.commands.append(node, req)
  if type(req.data) ~= "table" or #req.data == 0 then return nil, "EINVAL: nothing to append" end
  local stream = req.stream and node:stream_id(req.stream) or nil
  local last, err = Control.append_data(function(events) return node:append(stream, events) end, req.data, req.type)
  if not last then return nil, err end
  return { stream = stream or node.id, last = last }
end

--- {stream, from, follow}: the stream's events as lines {"event": ...};
-- without follow, then {"ok": true, "result": "end"}; with follow, live
-- events until the client goes away.
function Control.commands.tail(node, req, reply, sock)
  if type(req.stream) ~= "string" then return nil, "EINVAL: tail needs a stream id" end
  local from
  if req.from ~= nil then
    from = compat.tointeger(tonumber(req.from))
    if not from or from < 1 then
      return nil, ("EINVAL: %s is not a revision (revisions start at 1)"):format(tostring(from or req.from))
    end
  end
  local st = node.store:stream(req.stream)
  from = from or (st and st.first) or 1
  local queued = 0
  local sub
  sub = node:subscribe(req.stream, from, function(batch)
    if batch.snapshot then
      reply { snapshot = Control.snapshot_table(batch.stream, batch.snapshot) }
      return
    end
    for _, ev in ipairs(batch) do
      local line = Control.encode { event = Control.event_table(batch.stream, ev) } .. "\n"
      queued = queued + #line
      sock:write(line, function(err)
        queued = queued - #line
        if err then return sub:close() end
        if queued < 262144 and sub.paused then sub:resume() end
      end)
    end
    if queued >= 1048576 then sub:pause() end -- a slow reader holds the node back no further
  end, {
    on_caught_up = function()
      if not req.follow then
        sub:close()
        reply { ok = true, result = "end" }
      end
    end,
  })
  sock.on_close = function() sub:close() end
end

--- {stream}: recomputes chains and checks signatures (see odo verify).
function Control.commands.verify(node, req)
  return require("odo.verify").run(node.store, req.stream)
end

-- Reads newline-delimited JSON from a socket; calls on_line(obj) per line.
local function reader(on_line, on_bad)
  local buf = ""
  return function(err, data)
    if err or not data then return on_line(nil, err or "EOF") end
    buf = buf .. data
    while true do
      local line, rest = buf:match("^([^\n]*)\n(.*)$")
      if not line then break end
      buf = rest
      local ok, obj = pcall(cjson.decode, line)
      if ok and type(obj) == "table" then on_line(obj) else on_bad(line) end
    end
  end
end

-- Runs one request of a client; a command that raises answers EINTERNAL.
local function handle(node, req, reply, sock)
  local fn = Control.commands[req.cmd]
  if not fn then return reply { ok = false, error = "EINVAL: unknown command " .. tostring(req.cmd) } end
  if node.closed then return reply { ok = false, error = "ECLOSED: the node is stopping" } end
  local ok, result, err = compat.xpcall(fn, debug.traceback, node, req, reply, sock)
  if not ok then
    node:_error("control command " .. tostring(req.cmd) .. ": " .. tostring(result))
    return reply { ok = false, error = "EINTERNAL: " .. tostring(result):match("^[^\n]*") }
  end
  if result ~= nil then reply { ok = true, result = result }
  elseif err then reply { ok = false, error = err } end
end

-- Ends a client's connection: the closing line, then the socket once the
-- line is written (or after a second, for a client that reads nothing).
local function say_goodbye(node, sock)
  if sock.on_close then node:_protect(sock.on_close) end
  local timer
  local function close()
    if timer then timer.stop() end
    sock:close()
  end
  timer = node.adapter.timer(1000, function() node:_protect(close) end)
  sock:write(Control.encode { ok = false, error = "ECLOSED: the node is stopping", closing = true } .. "\n",
    function() node:_protect(close) end)
end

--- Serves the control socket of `node` at `path` (with the node's
-- adapter, which must offer listen_unix). Returns a server with close(),
-- which also ends every client's connection (see the module's
-- description), or nil, "NAME: message", "NAME".
function Control.serve(node, path)
  local adapter = node.adapter
  assert(adapter.listen_unix, "the adapter cannot listen on a unix socket")
  local clients = {}
  local server, err, name = adapter.listen_unix(path, function(sock)
    if node.closed then return sock:close() end
    clients[sock] = true
    local function reply(obj) sock:write(Control.encode(obj) .. "\n") end
    sock:read_start(reader(function(req)
      node:_protect(function()
        if not req then
          clients[sock] = nil
          if sock.on_close then sock.on_close() end
          return sock:close()
        end
        if not clients[sock] then return end -- closing
        handle(node, req, reply, sock)
      end)
    end, function() reply { ok = false, error = "EINVAL: a request is one JSON object per line" } end))
  end)
  if not server then return nil, err, name end
  return {
    path = server.path,
    close = function()
      server.close()
      local list = {}
      for sock in pairs(clients) do list[#list + 1] = sock end
      for _, sock in ipairs(list) do
        clients[sock] = nil
        say_goodbye(node, sock)
      end
    end,
  }
end

--- Sends one request to the node at `path` and runs luv's loop until the
-- first answer (or, with `on_line`, until it returns true for a line),
-- at most `timeout_ms` (default 10 s; false: no limit).
-- Returns the answer, or nil, "NAME: message", "NAME"; NAME is ENOENT or
-- ECONNREFUSED when no node runs there.
function Control.request(path, req, on_line, timeout_ms)
  local uv = require "luv"
  local pipe = uv.new_pipe(false)
  local answer, failure
  local done = false
  local timer = uv.new_timer()
  local function finish()
    done = true
    if not timer:is_closing() then timer:close() end
    if not pipe:is_closing() then pipe:close() end
  end
  if timeout_ms ~= false then
    timer:start(timeout_ms or 10000, 0, function()
      failure = { "ETIMEDOUT: the node did not answer", "ETIMEDOUT" }
      finish()
    end)
  end
  local ok, err = pcall(pipe.connect, pipe, path, function(cerr)
    if cerr then
      local name = tostring(cerr):match("^(%u+)") or "ECONNREFUSED"
      failure = { name .. ": no node is running (" .. path .. ")", name }
      return finish()
    end
    pipe:write(cjson.encode(req) .. "\n")
    pipe:read_start(reader(function(obj, rerr)
      if done then return end
      if not obj then
        failure = { "EPIPE: the node closed the control socket (" .. tostring(rerr) .. ")", "EPIPE" }
        return finish()
      end
      if on_line then
        if on_line(obj) then
          answer = obj
          finish()
        end
      else
        answer = obj
        finish()
      end
    end, function() end))
  end)
  if not ok then
    failure = { "ENOENT: " .. tostring(err), "ENOENT" }
    finish()
  end
  while not done do uv.run("once") end
  uv.run("nowait")
  if answer then return answer end
  return nil, failure[1], failure[2]
end

return Control
