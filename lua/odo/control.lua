--- The control socket: how `odo status`, `append`, `tail` and `verify` talk
-- to a running node, through `DIR/odo.sock` (a unix socket, mode 0600).
--
-- Requests and answers are JSON objects, one per line. A request names a
-- command: `{"cmd": "status"}`; the answer is `{"ok": true, "result": ...}`
-- or `{"ok": false, "error": "NAME: message"}`. Commands that stream (tail
-- -f) answer with many lines. Commands are plain functions in
-- `Control.commands`; a node process may add its own.
--
-- @module odo.control
local cjson = require "cjson"

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
  return (text:gsub('"\\u0000odo%-empty%-array\\u0000"', "[]"))
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

Control.commands = {}

function Control.commands.status(node)
  local st = node:status()
  return Control.status_table(st.id, st.listen, st.peers, st.streams, st.upstreams)
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

--- Serves the control socket of `node` at `path` (with the node's
-- adapter, which must offer listen_unix). Returns a server with close().
function Control.serve(node, path)
  local adapter = node.adapter
  assert(adapter.listen_unix, "the adapter cannot listen on a unix socket")
  return adapter.listen_unix(path, function(sock)
    local function reply(obj) sock:write(Control.encode(obj) .. "\n") end
    sock:read_start(reader(function(req)
      node:_protect(function()
        if not req then return sock:close() end
        local fn = Control.commands[req.cmd]
        if not fn then return reply { ok = false, error = "EINVAL: unknown command " .. tostring(req.cmd) } end
        if node.closed then return reply { ok = false, error = "ECLOSED: the node is stopping" } end
        local result, err = fn(node, req, reply, sock)
        if result ~= nil then reply { ok = true, result = result }
        elseif err then reply { ok = false, error = err } end
      end)
    end, function() reply { ok = false, error = "EINVAL: a request is one JSON object per line" } end))
  end)
end

--- Sends one request to the node at `path` and runs luv's loop until the
-- first answer (or, with `on_line`, until it returns true for a line).
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
  timer:start(timeout_ms or 10000, 0, function()
    failure = { "ETIMEDOUT: the node did not answer", "ETIMEDOUT" }
    finish()
  end)
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
