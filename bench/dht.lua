-- bench/dht.lua - DHT discovery: for 3, 10 and 30 nodes started together
-- in one process, each with an odo.discovery.dht source bootstrapping from
-- one Debian dhtnode, the time from start to each node's first candidate
-- and to full convergence (all n-1 others found; all n-1 connected).
-- Baseline, same invocation: the same nodes given every address as static
-- seeds (no discovery), time to all connected. Everything runs inside a
-- network namespace the script makes (only loopback up) and removes.
--
--   make bench-dht        (root; ODO_DHT_BENCH_SIZES="3 10 30" by default)
--
-- Prints per size dht_first_p50_s, dht_first_max_s, dht_discovery_p50_s,
-- dht_discovery_max_s (all found), dht_connected_max_s,
-- seeds_connected_max_s and dht_vs_seeds (ratio); the goal: 30 nodes
-- connected within 10 s of start.
local root = arg[0]:match("^(.*)/bench/[^/]*$") or "."
package.path = root .. "/?.lua;" .. package.path
local common = require "bench.common"
local uv = require "luv"

local NET = 0x6f646f31
local BOOT_PORT = 4222

-- Outside a namespace: make one, run this script inside it, remove it.
if not os.getenv("ODO_DHT_BENCH_NS") then
  local ns = ("odo-bench-dht-%d"):format(uv.os_getpid())
  common.shell(("ip netns add %s && ip -n %s link set lo up"):format(ns, ns))
  local ok = os.execute(("ip netns exec %s env ODO_DHT_BENCH_NS=%s lua5.4 %s"):format(ns, ns, common.q(arg[0])))
  os.execute(("for p in $(ip netns pids %s); do kill -9 $p; done; ip netns del %s"):format(ns, ns))
  os.exit(ok and 0 or 1)
end

local odo = require "odo"
local Dht = require "odo.discovery.dht"

local POLICY = {
  tick_ms = 100,
  heartbeat_interval_ms = 1000,
  heartbeat_timeout_ms = 5000,
  backoff = { 100, 200, 400, 800, 1600 },
  backoff_cap_ms = 1600,
  dht_lookup_every_ms = 2000,
  dht_bootstrap_backoff = { 200, 400, 800 },
}

local function sorted(list)
  local t = {}
  for i, v in ipairs(list) do t[i] = v end
  table.sort(t)
  return t
end

local function active(node)
  local c = 0
  for _, p in ipairs(node:peers()) do
    if p.state == "active" then c = c + 1 end
  end
  return c
end

-- Opens n nodes (pki names n1..nN); with_dht: a DHT source each, else
-- every other node as a static seed. Returns per node {first, found,
-- connected} in seconds from start.
local function round(dir, pki, n, with_dht)
  local nodes, t = {}, {}
  local t0 = uv.hrtime()
  local function since() return (uv.hrtime() - t0) / 1e9 end
  local ports = {}
  for i = 1, n do
    local node = assert(odo.node { dir = ("%s/%s-%d-%d"):format(dir, with_dht and "dht" or "seeds", n, i),
      listen = "127.0.0.1:0", tls = pki["n" .. i], policy = POLICY, sync = false,
      on_error = function(e) common.fail(e) end })
    nodes[i], t[i] = node, {}
    ports[i] = node.listen.port
    node:on("peer", function(_, _, new, reason)
      if reason == "discovered" and not t[i].first then t[i].first = since() end
      if new == "active" and not t[i].connected and active(node) >= n - 1 then t[i].connected = since() end
    end)
  end
  local sources = {}
  for i = 1, n do
    if with_dht then
      sources[i] = assert(Dht.new { node = nodes[i], topic = "bench-" .. n, network = NET,
        bootstrap = { "127.0.0.1:" .. BOOT_PORT }, log = function() end })
      nodes[i]:add_source(sources[i])
    else
      for j = 1, n do
        if j ~= i then nodes[i]:discover("127.0.0.1", ports[j]) end
      end
    end
  end
  local poll = uv.new_timer()
  poll:start(10, 10, function()
    for i = 1, n do
      if sources[i] and not t[i].found and sources[i]:status().taken >= n - 1 then t[i].found = since() end
      if not t[i].connected and active(nodes[i]) >= n - 1 then t[i].connected = since() end
    end
  end)
  common.run_until(function()
    for i = 1, n do
      if not t[i].connected or (with_dht and not t[i].found) then return false end
    end
    return true
  end, 120000, ("%d nodes (%s)"):format(n, with_dht and "dht" or "seeds"))
  poll:close()
  for _, node in ipairs(nodes) do node:close() end
  common.run_until(function()
    for _, s in ipairs(sources) do
      if s.dht then return false end
    end
    return true
  end, 10000, "closing")
  return t
end

local function field(t, k)
  local out = {}
  for i, x in ipairs(t) do out[i] = x[k] end
  return sorted(out)
end

common.main("bench-dht", function()
  local dir = common.tmpdir()
  local sizes = {}
  for s in (os.getenv("ODO_DHT_BENCH_SIZES") or "3 10 30"):gmatch("%d+") do sizes[#sizes + 1] = tonumber(s) end
  local names = {}
  for i = 1, math.max(table.unpack(sizes)) do names[i] = "n" .. i end
  local pki = common.make_pki(dir, names)
  local boot = common.spawn("/usr/bin/dhtnode", { "-s", "-n", tostring(NET), "-p", tostring(BOOT_PORT) })
  uv.sleep(300)
  print(("%-6s %-16s %-16s %-20s %-20s %-20s %-22s %s"):format("nodes", "dht_first_p50_s", "dht_first_max_s",
    "dht_discovery_p50_s", "dht_discovery_max_s", "dht_connected_max_s", "seeds_connected_max_s", "dht_vs_seeds"))
  local goal
  for _, n in ipairs(sizes) do
    local d = round(dir, pki, n, true)
    local s = round(dir, pki, n, false)
    local first, found, conn = field(d, "first"), field(d, "found"), field(d, "connected")
    local seeds = field(s, "connected")
    print(("%-6d %-16.3f %-16.3f %-20.3f %-20.3f %-20.3f %-22.3f %.2f"):format(n, common.percentile(first, 0.5),
      first[#first], common.percentile(found, 0.5), found[#found], conn[#conn], seeds[#seeds],
      conn[#conn] / seeds[#seeds]))
    if n == 30 then goal = conn[#conn] end
  end
  if goal then
    print(("goal: 30 nodes connected within 10 s of start: %s (%.3f s)"):format(goal <= 10 and "met" or "missed",
      goal))
  end
  pcall(uv.process_kill, boot.pid, "sigterm")
end)
