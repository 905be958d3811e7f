--- `odo run`: a node in the foreground. Logs every peer transition to
-- stderr, one line each; serves the control socket DIR/odo.sock;
-- SIGINT/SIGTERM say BYE to every peer, close the store and exit 0.
--
-- @module odo.cli.run
local odo = require "odo"
local cli = require "odo.cli"
local Control = require "odo.control"
local compat = require "odo.compat"
local Catchup = require "odo.catchup"

local function log(fmt, ...)
  -- text, or JSON lines with --log-format json
  require("odo.cli.log").printf(fmt, ...)
end

local function short(id) return id and id:sub(1, 16) or "?" end

-- A peer's address: host:port; the host alone for an incoming peer whose
-- listen port comes with its introduction (the log line's detail says
-- which port its connection comes from).
local function address(p)
  if p.port then return ("%s:%d"):format(tostring(p.host), p.port) end
  return tostring(p.host or "?")
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

-- --mdns: the multicast DNS source (odo.discovery.mdns) after the
-- config's sources; --mdns-swarm NAME (default "odo") is the swarm name
-- announced and looked for. What it finds and loses is logged through the
-- node's "discovery" event.
local function with_mdns(args, discovery)
  if not args.mdns then return discovery end
  local list = {}
  for i, src in ipairs(discovery or {}) do list[i] = src end
  list[#list + 1] = require("odo.discovery").mdns { swarm = args.mdns_swarm or "odo" }
  return list
end

-- The config's policy, with `odo run`'s own default: the process is the
-- node's, so its worker threads keep the process's priority.
local function run_policy(policy)
  local p = { worker_nice = 0 }
  for k, v in pairs(policy or {}) do p[k] = v end
  return p
end

--- The options of `odo.node` for the parsed command line and config.
local function node_options(args, conf, on_error)
  local peers = {}
  for _, a in ipairs(args.peer or {}) do peers[#peers + 1] = a end
  for _, a in ipairs(conf.peers or {}) do peers[#peers + 1] = a end
  return {
    dir = args.dir,
    tls = { ca = args.ca, cert = args.cert, key = args.key },
    metrics = args.metrics,
    listen = args.listen,
    peers = peers,
    discovery = with_mdns(args, conf.discovery),
    policy = run_policy(conf.policy),
    sync = conf.sync,
    on_error = on_error,
    tune_allocator = true, -- the process is ours (see odo.node)
  }
end

-- `existing` (the config's discovery sources, or nil) and one DNS source
-- per --dns NAME (with --dns-server and --dns-port): a new array, or nil,
-- why when those options cannot be used.
local function with_dns_sources(args, existing)
  local list = {}
  for _, src in ipairs(existing or {}) do list[#list + 1] = src end
  if #args.dns == 0 then
    if args.dns_server or args.dns_port then return nil, "--dns-server and --dns-port need --dns NAME" end
    return existing
  end
  for _, name in ipairs(args.dns) do
    local ok, src = pcall(odo.discovery.dns, { name = name, server = args.dns_server, port = args.dns_port })
    if not ok then return nil, ("--dns %s: %s"):format(name, tostring(src):gsub("^[^\n]-:%d+: ", "")) end
    list[#list + 1] = src
  end
  return list
end

local function run(args)
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
  require("odo.cli.log").format = args.log_format or "text"
  local opts = node_options(args, conf, function(msg) log("error: %s", tostring(msg)) end)
  local dns_err
  opts.discovery, dns_err = with_dns_sources(args, opts.discovery)
  if dns_err then return cli.fail(dns_err) end
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
  node:on("notice", function(_, message) log("%s", message) end)
  -- a peer's repeated transitions (a refusing peer retried) are said once a minute, with a count
  local repeats = require("odo.cli.repeats").new(function(line) log("%s", line) end, uv.now, 60000)
  node:on("peer", function(p, old, new, reason)
    local line = ("peer %s %s %s -> %s (%s%s)"):format(short(p.id), address(p), old, new,
      reason or "", p.detail and (": " .. p.detail) or "")
    repeats:say(table.concat({ short(p.id), address(p), old, new, reason or "" }, " "), line)
  end)
  Catchup.watch(node, function(r) log("%s", Catchup.describe(r)) end)
  local control, cerr = Control.serve(node, args.dir .. "/odo.sock")
  if not control then
    node:close()
    return cli.fail(cerr)
  end
  log("node %s listening on %s:%d", node.id, node.listen.host, node.listen.port)
  -- what discovery sources find or fail at ("discovery" events; they start on the next loop turn)
  node:on("discovery", function(source, msg) log("%s: %s", source, msg) end)
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
  -- for operators: catch-up progress on a terminal, the metrics' address,
  -- whole peer ids in JSON log lines
  require("odo.cli.progress").attach(node)
  require("odo.cli.log").attach(node)
  if node.metrics_address then log("metrics on http://%s/metrics", node.metrics_address) end
  uv.run()
  log("stopped")
  return 0
end

-- The command (a callable table, so specs can reach its parts).
return setmetatable({ load_config = load_config, node_options = node_options }, {
  __call = function(_, args) return run(args) end,
})
