--- A node inside nginx (OpenResty / lua-nginx-module), and how every
-- worker reaches it.
--
-- LevelDB locks a store to one process, so the node runs in one worker
-- (`worker`, default 0), in one long-lived `ngx.timer.at` context driven
-- by `odo.adapter.ngx`. The other workers (and that one's requests) reach
-- it through a `lua_shared_dict`: `append` pushes a request on the dict's
-- list "q" and waits for its answer under "r:<id>"; the node's worker
-- takes the list every `poll_ms`, appends with group commit (durable
-- before it answers) and writes the answers; it publishes its status
-- under "status" every `status_ms`. So an append costs up to `poll_ms`
-- (plus the sync) more than in-process, and a status is at most
-- `status_ms` old.
--
-- On `nginx -s quit` (or the old generation of a reload) the worker sees
-- `ngx.worker.exiting()`, answers what is queued, closes the node (BYE to
-- its peers, store closed) and ends. The new worker of a reload retries
-- opening the store every 100 ms until the old one has closed it.
--
-- In nginx.conf:
--
--     lua_shared_dict odo 8m;
--     lua_socket_log_errors off;
--     init_worker_by_lua_block {
--       require("odo.openresty").init_worker { dir = "/var/lib/odo", tls = {...}, peers = {...} }
--     }
--     location /odo/ { content_by_lua_block { require("odo.openresty").serve() } }
--
-- @module odo.openresty
local cjson = require "cjson.safe"

local ngx = ngx -- luacheck: ignore (the nginx API, a global inside nginx)

local M = {}

local DEFAULT_DICT = "odo"

local function dict_of(name)
  local d = ngx.shared[name or DEFAULT_DICT]
  if not d then
    error(("no lua_shared_dict %s in nginx.conf"):format(name or DEFAULT_DICT), 3)
  end
  return d
end

local function log(level, ...)
  ngx.log(level, "odo: ", ...)
end

-- ---- the node's worker ---------------------------------------------------------------

-- The node's status as JSON for the other workers (with its adapter's
-- scheduler counts, `scheduler`, when given).
local function publish(node, dict, state, adapter)
  local st = { state = state, pid = ngx.worker.pid(), worker = ngx.worker.id(),
    scheduler = adapter and adapter.stats and adapter.stats() or nil }
  if node and not node.closed then
    local s = node:status()
    st.id = s.id
    st.peers = {} -- (an empty one encodes as {}: Debian's cjson 2.1.0)
    for _, p in ipairs(s.peers) do
      st.peers[#st.peers + 1] = { id = p.id, host = p.host, port = p.port, state = p.state, reason = p.reason }
    end
    st.streams = {} -- (an empty one encodes as {}: Debian's cjson 2.1.0)
    for _, x in ipairs(s.streams) do
      st.streams[#st.streams + 1] = { id = x.id, source = x.source, first = x.first, last = x.last,
        snapshot = x.snapshot, upstream = s.upstreams[x.id] }
    end
  end
  dict:set("status", cjson.encode(st))
end

-- Whether the published status is this worker's (a reload's new worker
-- publishes its own while the old one is still closing).
local function owns_status(dict)
  local st = cjson.decode(dict:get("status") or "null")
  return not st or st.pid == ngx.worker.pid()
end

local function answer(dict, id, res)
  dict:set("r:" .. id, cjson.encode(res), 60)
end

-- Takes every queued request and appends it (group commit); each answer
-- is written once its append is durable. `pending` counts those in
-- flight.
local function take_requests(node, dict, state)
  for _ = 1, 10000 do
    local raw = dict:lpop("q")
    if not raw then return end
    local req = cjson.decode(raw)
    if type(req) == "table" and req.id then
      local ok, err = pcall(function()
        local events = {}
        for i, ev in ipairs(req.events or {}) do
          events[i] = { type = ev.type, data = ngx.decode_base64(ev.data or "") or "" }
        end
        assert(#events > 0, "no events")
        local stream = req.stream and node:stream_id(req.stream) or nil
        node:append(events, { stream = stream }, function(last, aerr, name)
          state.pending = state.pending - 1
          if last then answer(dict, req.id, { last = last, stream = stream or node.id })
          else answer(dict, req.id, { error = aerr, name = name }) end
        end)
        state.pending = state.pending + 1 -- the callback runs later, in a group commit
      end)
      if not ok then
        answer(dict, req.id, { error = "EINVAL: " .. tostring(err):gsub("^.-:%d+: ", ""), name = "EINVAL" })
      end
    end
  end
end

-- Answers what is still queued with ECLOSED: the node is gone.
local function refuse_requests(dict)
  while true do
    local raw = dict:lpop("q")
    if not raw then return end
    local req = cjson.decode(raw)
    if type(req) == "table" and req.id then
      answer(dict, req.id, { error = "ECLOSED: the node is stopping (nothing was written)", name = "ECLOSED" })
    end
  end
end

-- The timer context the node lives in, from start to close.
local function run_node(premature, opts)
  if premature then return end
  local Adapter = require "odo.adapter.ngx"
  local odo = require "odo"
  local dict = dict_of(opts.dict)
  local adapter = Adapter.new(opts.adapter)
  local exiting = ngx.worker.exiting
  publish(nil, dict, "starting")
  -- a reload's old worker may still hold the store: retry until it closed it
  local node, err, name
  local waited = 0
  while not exiting() do
    node, err, name = odo.node {
      dir = opts.dir, tls = opts.tls, peers = opts.peers, policy = opts.policy, adapter = adapter,
      node_id = opts.node_id,
      on_error = function(e) log(ngx.ERR, tostring(e)) end,
    }
    if node or name ~= "EBUSY" then break end
    if waited % 50 == 0 then log(ngx.NOTICE, "the store is in use (an old worker?), retrying: ", err) end
    waited = waited + 1
    ngx.sleep(0.1)
  end
  if not node then
    log(ngx.ERR, "cannot open the node: ", tostring(err))
    publish(nil, dict, "failed")
    refuse_requests(dict)
    return
  end
  log(ngx.NOTICE, "node ", node.id, " running in worker ", ngx.worker.id())
  M.node = node -- for code in this worker's timer context
  local state = { pending = 0 }
  node:on("peer", function(p, old, new) log(ngx.INFO, "peer ", tostring(p.id), " ", old, " -> ", new) end)
  adapter.every(opts.poll_ms or 2, function() take_requests(node, dict, state) end)
  adapter.every(opts.status_ms or 200, function() publish(node, dict, "running", adapter) end)
  publish(node, dict, "running", adapter)
  adapter.run(exiting)

  -- stopping: answer what was queued before the others saw us go, then
  -- close. On a reload the new worker is waiting for the store: what is
  -- queued after this is its to answer, and the status is its own.
  log(ngx.NOTICE, "worker exiting: closing the node")
  if owns_status(dict) then publish(node, dict, "closing") end
  take_requests(node, dict, state)
  local deadline = adapter.now() + 5000
  adapter.run(function() return state.pending == 0 or adapter.now() > deadline end)
  node:close()
  M.node = nil
  local last = owns_status(dict)
  if last then refuse_requests(dict) end
  adapter.shutdown(3000)
  if last then publish(nil, dict, "closed") end
  log(ngx.NOTICE, "node closed")
end

--- Starts the node in one worker; call it from `init_worker_by_lua*` in
-- every worker (the others do nothing).
-- @tparam table opts
--   `dir`, `tls`, `peers`, `policy`, `node_id` (as `odo.node`; no
--   `listen`: the node dials out only), `dict` (the `lua_shared_dict`'s
--   name, default "odo"), `worker` (the worker id to run in, default 0),
--   `poll_ms` (default 2), `status_ms` (default 200), `adapter`
--   (options of `odo.adapter.ngx`)
function M.init_worker(opts)
  assert(type(opts) == "table" and type(opts.dir) == "string", "init_worker needs opts.dir")
  assert(opts.listen == nil, "a node in nginx cannot listen (it dials out only): drop opts.listen")
  dict_of(opts.dict)
  if ngx.worker.id() ~= (opts.worker or 0) then return end
  local ok, err = ngx.timer.at(0, run_node, opts)
  if not ok then log(ngx.ERR, "cannot start the node's timer: ", err) end
end

-- ---- every worker ---------------------------------------------------------------------

--- Appends events through the node's worker, from any worker's request
-- (it waits with `ngx.sleep`). Returns once the events are durable.
-- @tparam table events `{type=, data=}` or an array of them
-- @tparam[opt] table opts `stream` (a stream name: `<node id>/name`;
--   default the node's own stream), `dict`, `timeout_ms` (default 10000)
-- @treturn integer the stream's new last revision
-- @treturn[2] nil
-- @treturn[2] string "NAME: message" (ETIMEDOUT: not acknowledged, it
--   may or may not have been written; ECLOSED; ENOTRUNNING; ...)
-- @treturn[2] string NAME
function M.append(events, opts)
  opts = opts or {}
  assert(type(events) == "table", "events must be an event table or an array of them")
  if events.type ~= nil then events = { events } end
  local dict = dict_of(opts.dict)
  local list = {}
  for i, ev in ipairs(events) do
    assert(type(ev) == "table" and type(ev.type) == "string", ("event %d needs a type"):format(i))
    assert(ev.data == nil or type(ev.data) == "string", ("event %d: data must be a string"):format(i))
    list[i] = { type = ev.type, data = ngx.encode_base64(ev.data or "") }
  end
  local st = cjson.decode(dict:get("status") or "null")
  if not st or st.state == "closed" or st.state == "failed" then
    local s = st and st.state or "not started"
    return nil, "ENOTRUNNING: the node is " .. s, "ENOTRUNNING"
  end
  local id = ngx.worker.pid() .. "-" .. assert(dict:incr("seq", 1, 0))
  local ok, err = dict:rpush("q", cjson.encode({ id = id, stream = opts.stream, events = list }))
  if not ok then return nil, "ENOMEM: cannot queue the append: " .. tostring(err), "ENOMEM" end
  local deadline = ngx.now() + (opts.timeout_ms or 10000) / 1000
  local wait = 0.001
  repeat
    local raw = dict:get("r:" .. id)
    if raw then
      dict:delete("r:" .. id)
      local res = cjson.decode(raw)
      if res.last then return res.last, res.stream end
      return nil, res.error, res.name
    end
    ngx.sleep(wait)
    wait = math.min(wait * 2, 0.01)
    ngx.update_time()
  until ngx.now() > deadline
  return nil, "ETIMEDOUT: the node did not answer (not acknowledged: it may or may not be written)", "ETIMEDOUT"
end

--- The node's status as last published (at most `status_ms` old):
-- `{state, pid, worker, id, peers = {...}, streams = {...}}`, or nil,
-- "ENOTRUNNING: ...".
function M.status(opts)
  local raw = dict_of(opts and opts.dict):get("status")
  if not raw then return nil, "ENOTRUNNING: the node has not started", "ENOTRUNNING" end
  return cjson.decode(raw)
end

local function reply(status, body)
  ngx.status = status
  ngx.header["Content-Type"] = "application/json"
  ngx.say(cjson.encode(body))
  return ngx.exit(status)
end

--- A content handler: `GET .../status` answers the status as JSON;
-- `POST .../append[?type=T&stream=NAME]` appends one event per line of
-- the body (type T, default "http") and answers `{"last", "stream",
-- "worker"}` once durable (200), or `{"error"}` (400, 503, 504).
-- @tparam[opt] table opts `dict`
function M.serve(opts)
  opts = opts or {}
  local uri, method = ngx.var.uri, ngx.req.get_method()
  if uri:match("/status$") and method == "GET" then
    local st, err = M.status(opts)
    if not st then return reply(503, { error = err }) end
    return reply(200, st)
  end
  if not (uri:match("/append$") and method == "POST") then
    return reply(404, { error = "ENOENT: GET .../status or POST .../append" })
  end
  local args = ngx.req.get_uri_args()
  ngx.req.read_body()
  local body = ngx.req.get_body_data() or ""
  local events = {}
  for line in body:gmatch("[^\n]+") do events[#events + 1] = { type = args.type or "http", data = line } end
  if #events == 0 then return reply(400, { error = "EINVAL: no events (one per line of the body)" }) end
  local last, err, name = M.append(events, { stream = args.stream, dict = opts.dict })
  if not last then
    local code = name == "ETIMEDOUT" and 504 or (name == "EINVAL" or name == "ENOTSOURCE") and 400 or 503
    return reply(code, { error = err })
  end
  return reply(200, { last = last, stream = err, worker = ngx.worker.id(), count = #events })
end

return M
