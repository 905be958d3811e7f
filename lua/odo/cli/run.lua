--- `odo run`: a node in the foreground. Logs every peer transition to
-- stderr, one line each; serves the control socket DIR/odo.sock;
-- SIGINT/SIGTERM say BYE to every peer, close the store and exit 0.
--
-- @module odo.cli.run
local odo = require "odo"
local cli = require "odo.cli"
local Control = require "odo.control"
local compat = require "odo.compat"

local function log(fmt, ...)
  io.stderr:write(os.date("!%Y-%m-%dT%H:%M:%SZ "), fmt:format(...), "\n")
  io.stderr:flush()
end

local function short(id) return id and id:sub(1, 16) or "?" end

-- Discovery back-ends that are not part of this build yet.
local function unbuilt(args)
  if #args.dns > 0 or args.dns_server then return "--dns" end
  if args.mdns then return "--mdns" end
end

-- What a --config file may set, with the type each must have.
local CONFIG_KEYS = { policy = "table", discovery = "table", peers = "table", sync = "boolean" }

--- A --config file: Lua returning a table with any of `policy` (a table
-- of `odo.policy` entries), `discovery` (an array of discovery sources),
-- `peers` (more seed addresses "host:port", added to --peer) and `sync`
-- (boolean, default true: appends return once durable), run with the
-- standard library available. Any other key is an error.
local function load_config(path)
  local env = setmetatable({}, { __index = _G })
  local chunk, err = compat.loadfile(path, env)
  if not chunk then return nil, err end
  local ok, conf = pcall(chunk)
  if not ok then return nil, conf end
  if type(conf) ~= "table" then return nil, path .. " must return a table" end
  for k, v in pairs(conf) do
    local want = CONFIG_KEYS[k]
    if not want then
      return nil, ("%s: unknown option '%s' (it takes policy, discovery, peers, sync)"):format(path, tostring(k))
    end
    if type(v) ~= want then return nil, ("%s: '%s' must be a %s"):format(path, k, want) end
  end
  return conf
end

--- The options of `odo.node` for the parsed command line and config.
local function node_options(args, conf, on_error)
  local peers = {}
  for _, a in ipairs(args.peer or {}) do peers[#peers + 1] = a end
  for _, a in ipairs(conf.peers or {}) do peers[#peers + 1] = a end
  return {
    dir = args.dir,
    tls = { ca = args.ca, cert = args.cert, key = args.key },
    listen = args.listen,
    peers = peers,
    discovery = conf.discovery,
    policy = conf.policy,
    sync = conf.sync,
    on_error = on_error,
  }
end

local function run(args)
  local flag = unbuilt(args)
  if flag then return cli.fail(flag .. ": that discovery back-end is not built yet") end
  local conf = {}
  if args.config then
    local c, err = load_config(args.config)
    if not c then return cli.fail("config: " .. tostring(err)) end
    conf = c
  end
  local uv = require "luv"
  local node, err, name
  -- a command-line tool (odo status, tail...) may hold the store for a
  -- moment while this node starts: wait for it rather than fail
  local opts = node_options(args, conf, function(msg) log("error: %s", tostring(msg)) end)
  for _ = 1, 50 do
    -- options the node refuses (a config's bad policy) raise: say so
    local ok
    ok, node, err, name = pcall(odo.node, opts)
    if not ok then
      local msg = tostring(node):gsub("^[^\n]-:%d+: ", "")
      return cli.fail((args.config and "config: " or "") .. msg)
    end
    if node or name ~= "EBUSY" then break end
    uv.sleep(100)
  end
  if not node then return cli.fail(err) end
  node:on("peer", function(p, old, new, reason)
    log("peer %s %s:%s %s -> %s (%s%s)", short(p.id), tostring(p.host), tostring(p.port), old, new,
      reason or "", p.detail and (": " .. p.detail) or "")
  end)
  local control, cerr = Control.serve(node, args.dir .. "/odo.sock")
  if not control then
    node:close()
    return cli.fail(cerr)
  end
  log("node %s listening on %s:%d", node.id, node.listen.host, node.listen.port)
  local signals = {}
  local dht_ok, dht_err = require("odo.cli.run_dht").start(args, node, log)
  if not dht_ok then
    control.close()
    node:close()
    return cli.fail(dht_err)
  end
  local function stop(signame)
    log("%s: saying goodbye to every peer and closing the store", signame)
    for _, s in ipairs(signals) do if not s:is_closing() then s:close() end end
    control.close()
    node:close()
    require("odo.adapter.luv").shutdown()
  end
  for _, signame in ipairs({ "sigint", "sigterm" }) do
    local s = uv.new_signal()
    s:start(signame, function() stop(signame:upper()) end)
    signals[#signals + 1] = s
  end
  uv.run()
  log("stopped")
  return 0
end

-- The command (a callable table, so specs can reach its parts).
return setmetatable({ load_config = load_config, node_options = node_options }, {
  __call = function(_, args) return run(args) end,
})
