-- bench/peers.lua - odo against what its users would pick instead, in one
-- invocation on one machine: Redis Streams, NATS JetStream and Hypercore,
-- doing the same work (see bench/README.md for the method and figures).
--
-- Work, for each system in turn: N events of 100 bytes held by a source;
-- a fresh replica catches up over loopback, timed from the moment it is
-- told to (odo: just before its node opens; Redis: REPLICAOF; NATS: the
-- mirror stream made on the leaf server; Hypercore: just before its core
-- opens) until it holds N (each driver polls, or is told); then LIVE
-- events at one per millisecond from the source, each carrying the
-- machine's monotonic clock just before its append, received by the
-- replica: latency p50/p99, once the replica process used no CPU for
-- 0.5 s (at most 30 s: odo's LevelDB compacts what it caught up) and
-- after WARM warm-up events that are not counted. The replica's CPU
-- seconds (user + system, every thread, from /proc) over the catch-up,
-- per million events; its peak RssAnon (sampled every 20 ms, catch-up
-- and live) and VmHWM at the end.
--
-- Systems (each driver speaks bench/sync_peer.lua's line protocol:
-- source "port ...", live N, live_stop, quit; replica "caught_up S",
-- "ready", expect N, quit):
--   odo          bench/sync_peer.lua source and replica, mutual TLS 1.3,
--                chain hashes and signatures verified; replica sync=false
--                and policy replica_sync = false: nothing fsynced
--   odo_durable  the same with policy replica_sync = true: every batch
--                the replica stores is fsynced before it counts
--   redis        redis-server primary (repl-diskless-sync-delay 0, no
--                persistence) holding stream "bench"; a replica server
--                (appendonly yes, appendfsync everysec) told REPLICAOF;
--                bench/peers/redis_streams.py (python3-redis) drives both
--   nats         nats-server hub (JetStream domain "hub", stream BENCH,
--                file storage) and a leaf server (its own domain "leaf",
--                linked to the hub as a leaf node) where stream MIRROR
--                mirrors BENCH through $JS.hub.API; bench/peers/nats.mjs
--   hypercore    a core filled by one Node.js process and served over TCP
--                (Hypercore's own Noise stream); a new core in another
--                process downloads it in order; bench/peers/hypercore.mjs
--                (a catch-up past ODO_BENCH_LIMIT is reported as PARTIAL,
--                and the live latency taken on a 10,000-event core)
-- Producer side: durable appends, one event per acknowledgement (p50/p99
-- of PRODUCE_LAT after PRODUCE_WARM) and events/s with PRODUCE_BATCH
-- events per acknowledgement wait (PRODUCE events): odo's node:append
-- in-process with sync = true (one fsync per call), XADD against a
-- server with appendonly yes and appendfsync always, JetStream publish
-- awaiting its acknowledgement (file storage).
--
-- Servers listen on 127.0.0.1, on ports chosen at run time, in temporary
-- folders; they are stopped by process id when their system is done, and
-- by common.main on a failure.
--
-- Rounds: ROUNDS times every system in turn (a catch-up that did not
-- finish within the limit is not tried again); a row is the median of
-- each figure over its rounds, the peak of the memory figures, with the
-- range of events/s beside it. The producer side runs once.
--
-- Environment: ODO_BENCH_ROUNDS (ROUNDS, default 3), ODO_BENCH_EVENTS (N,
-- default 1000000), ODO_BENCH_LIVE (default 1000), ODO_BENCH_WARM
-- (default 300), ODO_BENCH_PRODUCE
-- (default 100000), ODO_BENCH_SYSTEMS (comma-separated, default all),
-- ODO_BENCH_LIMIT (seconds a catch-up may take, default 120; a slower one
-- is reported as partial), ODO_BENCH_NPM (the npm prefix holding
-- hypercore and nats, default build/bench-npm), ODO_BENCH_VERBOSE=1,
-- ODO_BENCH_KEEP=1, ODO_CPATH.
package.path = (arg[0]:match("^(.*)/bench/[^/]*$") or ".") .. "/?.lua;" .. package.path
local common = require "bench.common" -- and with it the paths to odo's modules
local odo = require "odo"
local uv = require "luv"

local function env_int(name, default)
  local v = math.tointeger(tonumber(os.getenv(name)))
  if v == nil then return default end
  assert(v >= 1, name .. " must be a positive integer")
  return v
end

local N = env_int("ODO_BENCH_EVENTS", 1000000)
local LIVE = env_int("ODO_BENCH_LIVE", 1000)
local WARM = env_int("ODO_BENCH_WARM", 300)
local PRODUCE = env_int("ODO_BENCH_PRODUCE", 100000)
local ROUNDS = env_int("ODO_BENCH_ROUNDS", 3)
local PRODUCE_BATCH, PRODUCE_WARM, PRODUCE_LAT = 100, 200, 2000
local LIMIT_S = env_int("ODO_BENCH_LIMIT", 120)
local VERBOSE = os.getenv("ODO_BENCH_VERBOSE") == "1"
local KEEP = os.getenv("ODO_BENCH_KEEP") == "1"
local DATA_BYTES, BATCH = 100, 1000
local ROOT = common.root
local NPM = os.getenv("ODO_BENCH_NPM") or (ROOT .. "/build/bench-npm")
local PY, NODE = "/usr/bin/python3", "node"
local ALL = { "odo", "odo_durable", "redis", "nats", "hypercore" }
local SYSTEMS = {}
for s in (os.getenv("ODO_BENCH_SYSTEMS") or table.concat(ALL, ",")):gmatch("[^,]+") do SYSTEMS[#SYSTEMS + 1] = s end
local STEP_MS = 60000 + LIMIT_S * 1000 -- what any one step may take

local q, shell = common.q, common.shell

local function log(fmt, ...)
  if VERBOSE then io.stderr:write(fmt:format(...), "\n") end
end

local function expect(p, pattern, what, ms) return common.expect(p, pattern, what, ms or STEP_MS) end

-- A free TCP port on 127.0.0.1 (never one of the systems' defaults).
local DEFAULT_PORTS = { [6379] = true, [4222] = true, [7422] = true, [8222] = true, [9090] = true }
local function free_port()
  while true do
    local t = uv.new_tcp()
    assert(t:bind("127.0.0.1", 0))
    local port = t:getsockname().port
    t:close()
    if not DEFAULT_PORTS[port] then return port end
  end
end

local function write_file(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

local function cpu(pid)
  local main, other = common.thread_cpu(pid)
  return (main or 0) + (other or 0)
end

-- the environment of the Node.js drivers
local function node_env()
  local e = common.peer_env()
  e[#e + 1] = "ODO_BENCH_NPM=" .. NPM
  return e
end

local function node_args(script, ...) return { ROOT .. "/bench/peers/" .. script, ... } end

-- Runs a Node.js driver to its end; returns its output.
local function node_shell(script, fmt, ...)
  return shell(("ODO_BENCH_NPM=%s %s %s " .. fmt):format(q(NPM), NODE, q(ROOT .. "/bench/peers/" .. script), ...))
end

-- Calls fn() protected, then stops the servers (processes) whatever
-- happened; returns what fn returned, or raises its error.
local function with_servers(servers, fn)
  local ok, r = pcall(fn)
  for _, p in ipairs(servers) do common.stop(p, 10000) end
  if not ok then error(r, 0) end
  return r
end

-- ---- one catch-up and live run ------------------------------------------------------

-- Runs a source and a replica process speaking sync_peer's protocol.
-- spec: n (events the source holds, default N), source = {file, args,
-- env}, replica = {file, function(source's port line) -> args, env},
-- replica_pid (function(replica process) -> pid whose CPU and memory
-- count: the replica process, or a server). Returns the figures.
local function run_pair(spec)
  local src = common.spawn(spec.source[1], spec.source[2], spec.source[3], true)
  local port_line = expect(src, "^(port .*)$", "the source's start", 120000)
  log("source: %s", port_line)
  local replica
  local function rpid() return replica and spec.replica_pid(replica) end
  local cpu0 = spec.server_pid and cpu(spec.server_pid) or 0
  local stop_rss = common.rss_sampler(rpid)
  local ok, r = pcall(function()
    replica = common.spawn(spec.replica[1], spec.replica[2](port_line), spec.replica[3], true)
    local how, secs, count
    common.run_until(function()
      for _, l in ipairs(replica.lines) do
        how, secs, count = l:match("^(caught_up) ([%d.]+)")
        if not how then how, secs, count = l:match("^(partial) ([%d.]+) (%d+)$") end
        if how then return true end
      end
      if replica.exited and replica.eof then error("the replica ended: " .. table.concat(replica.lines, " | "), 0) end
    end, LIMIT_S * 1000 + 60000, "the replica's catch-up")
    local res = { secs = tonumber(secs), count = spec.n or N, cpu = cpu(rpid()) - cpu0 }
    if how == "partial" then
      res.partial, res.count = true, tonumber(count)
      res.hwm = common.proc_kb(rpid(), "VmHWM")
      return res
    end
    expect(replica, "^ready$", "the replica's live subscription", 60000)
    res.settled_s = common.settle(rpid(), "all")
    res.warm = common.live_phase(src, replica, WARM, STEP_MS)
    res.live = common.live_phase(src, replica, LIVE, STEP_MS)
    res.hwm = common.proc_kb(rpid(), "VmHWM")
    return res
  end)
  local rss = stop_rss()
  if replica and not replica.exited then replica.send("quit") end
  src.send("quit")
  if not ok then error(r, 0) end
  r.rss = rss
  common.reap(replica, "the replica", 60000)
  common.run_until(function() return src.exited ~= nil and src.eof end, 60000, "the source's end")
  common.stop(src, 5000)
  r.rate = r.count / r.secs
  r.cpu_per_m = r.cpu / r.count * 1e6
  return r
end

-- ---- the systems ---------------------------------------------------------------------------

local dir -- the temporary folder all the others are in
local serial = 0
-- A new folder's path in dir (each round's servers start empty).
local function fresh(name)
  serial = serial + 1
  return ("%s/%s-%d"):format(dir, name, serial)
end
local pki
local odo_source -- {dir =, id =} filled once, for odo and odo_durable; each run copies it

local function odo_run(durable)
  if not odo_source then
    pki = pki or common.make_pki(dir, { "source", "replica" })
    local d = dir .. "/odo-source"
    local id, appended = common.fill_node(d, pki.source, N, DATA_BYTES, BATCH, 1, STEP_MS)
    log("odo: filled at %.0f events/s", appended)
    odo_source = { dir = d, id = id }
  end
  local rep = dir .. (durable and "/odo-replica-durable" or "/odo-replica")
  local copy = odo_source.dir .. "-copy" -- the live events of a run go to its own copy
  shell(("rm -rf %s && cp -a %s %s"):format(q(copy), q(odo_source.dir), q(copy)))
  local peer = ROOT .. "/bench/sync_peer.lua"
  local r = run_pair {
    source = { "lua5.4", { peer, "source", copy, pki.source.ca, pki.source.cert, pki.source.key },
      common.peer_env() },
    replica = { "lua5.4", function(line)
      local port = assert(line:match("^port (%d+)"), line)
      return { peer, "replica", rep, pki.replica.ca, pki.replica.cert, pki.replica.key, port, odo_source.id,
        tostring(N), "default", "1", durable and "1" or "0" }
    end, common.peer_env() },
    replica_pid = function(p) return p.pid end,
  }
  shell(("rm -rf %s %s"):format(q(rep), q(copy)))
  r.durability = durable and "LevelDB, every batch fsynced (replica_sync)" or "LevelDB, no fsync (sync = false)"
  return r
end

local function redis_server(d, port, extra)
  shell("mkdir -p " .. q(d))
  local args = { "--port", tostring(port), "--bind", "127.0.0.1", "--dir", d, "--save", "", "--daemonize", "no",
    "--logfile", d .. "/redis.log", "--protected-mode", "yes" }
  for _, a in ipairs(extra) do args[#args + 1] = a end
  local p = common.spawn("redis-server", args)
  shell(("%s %s wait %d"):format(PY, q(ROOT .. "/bench/peers/redis_streams.py"), port))
  return p
end

local function redis_run()
  local driver = ROOT .. "/bench/peers/redis_streams.py"
  local p1, p2 = free_port(), free_port()
  local d1, d2 = fresh("redis-primary"), fresh("redis-replica")
  local primary = redis_server(d1, p1, { "--appendonly", "no", "--repl-diskless-sync-delay", "0" })
  local replica = redis_server(d2, p2, { "--appendonly", "yes", "--appendfsync", "everysec" })
  local r = with_servers({ primary, replica }, function()
    log("redis: %s", shell(("%s %s fill %d %d %d"):format(PY, q(driver), p1, N, DATA_BYTES)):gsub("\n", ""))
    return run_pair {
      source = { PY, { driver, "source", tostring(p1) } },
      replica = { PY, function() return { driver, "replica", tostring(p1), tostring(p2), tostring(N) } end },
      replica_pid = function() return replica.pid end, server_pid = replica.pid,
    }
  end)
  shell(("rm -rf %s %s"):format(q(d1), q(d2)))
  r.durability = "AOF, appendfsync everysec (rewritten after the sync)"
  return r
end

local function nats_server(d, conf)
  shell("mkdir -p " .. q(d))
  write_file(d .. "/server.conf", conf)
  local p = common.spawn("nats-server", { "-c", d .. "/server.conf", "-l", d .. "/server.log" })
  return p
end

local function nats_run()
  local hp, lp, leafp = free_port(), free_port(), free_port()
  local hub_url, leaf_url = "nats://127.0.0.1:" .. hp, "nats://127.0.0.1:" .. leafp
  local hd, ld = fresh("nats-hub"), fresh("nats-leaf")
  local hub = nats_server(hd, ([[
server_name: hub
listen: 127.0.0.1:%d
jetstream { store_dir: "%s", domain: hub }
leafnodes { listen: 127.0.0.1:%d }
]]):format(hp, hd .. "/js", lp))
  local leaf = nats_server(ld, ([[
server_name: leaf
listen: 127.0.0.1:%d
jetstream { store_dir: "%s", domain: leaf }
leafnodes { remotes: [ { url: "nats-leaf://127.0.0.1:%d" } ] }
]]):format(leafp, ld .. "/js", lp))
  local r = with_servers({ leaf, hub }, function()
    for _, url in ipairs { hub_url, leaf_url } do node_shell("nats.mjs", "wait %s", url) end
    log("nats: %s", node_shell("nats.mjs", "fill %s %d %d", hub_url, N, DATA_BYTES):gsub("\n", ""))
    return run_pair {
      source = { NODE, node_args("nats.mjs", "source", hub_url), node_env() },
      replica = { NODE, function() return node_args("nats.mjs", "replica", leaf_url, "hub", tostring(N)) end,
        node_env() },
      replica_pid = function() return leaf.pid end, server_pid = leaf.pid,
    }
  end)
  shell(("rm -rf %s %s"):format(q(hd), q(ld)))
  r.durability = "file store, written to the OS, no fsync per message (2.9 has no sync_interval)"
  return r
end

local HYPERCORE_LIVE_N = 10000 -- the core of the live run when the whole one did not finish

local function hypercore_pair(n, name)
  local src, rep = fresh("hypercore-source-" .. name), fresh("hypercore-replica-" .. name)
  log("hypercore: %s", node_shell("hypercore.mjs", "fill %s %d %d", q(src), n, DATA_BYTES):gsub("\n", ""))
  local r = run_pair {
    n = n,
    source = { NODE, node_args("hypercore.mjs", "source", src), node_env() },
    replica = { NODE, function(line)
      local port, key = assert(line:match("^port (%d+) (%x+)"))
      return node_args("hypercore.mjs", "replica", rep, port, key, tostring(n), tostring(LIMIT_S))
    end, node_env() },
    replica_pid = function(p) return p.pid end,
  }
  shell(("rm -rf %s %s"):format(q(src), q(rep)))
  return r
end

local function hypercore_run()
  local r = hypercore_pair(N, "all")
  r.durability = "RocksDB (hypercore-storage), no fsync"
  if r.partial and N > HYPERCORE_LIVE_N then
    -- live latency all the same, on a core small enough to catch up first
    local small = hypercore_pair(HYPERCORE_LIVE_N, "live")
    if not small.partial then
      r.live = small.live
      r.durability = r.durability .. ("; live measured on a %d-event core"):format(HYPERCORE_LIVE_N)
    end
  end
  return r
end

local RUN = { odo = function() return odo_run(false) end, odo_durable = function() return odo_run(true) end,
  redis = redis_run, nats = nats_run, hypercore = hypercore_run }

-- ---- the producer side -------------------------------------------------------------------

local function odo_produce()
  local node = assert(odo.node { dir = dir .. "/odo-produce", node_id = "producer", sync = true,
    on_error = common.fail })
  local data = ("x"):rep(DATA_BYTES)
  local lat = {}
  for i = 1, PRODUCE_WARM + PRODUCE_LAT do
    local t = uv.hrtime()
    assert(node:append(nil, { type = "bench", data = data }))
    if i > PRODUCE_WARM then lat[#lat + 1] = (uv.hrtime() - t) / 1e6 end
  end
  table.sort(lat)
  local batch = {}
  for i = 1, PRODUCE_BATCH do batch[i] = { type = "bench", data = data } end
  local t0, left = uv.hrtime(), PRODUCE
  while left > 0 do
    local b = left < PRODUCE_BATCH and table.move(batch, 1, left, 1, {}) or batch
    assert(node:append(nil, b))
    left = left - #b
  end
  local rate = PRODUCE / ((uv.hrtime() - t0) / 1e9)
  node:close()
  return { rate = rate, p50 = common.percentile(lat, 0.5), p99 = common.percentile(lat, 0.99),
    durability = "node:append in-process, sync = true: one fsync per call" }
end

local function parse_produce(out)
  local rate, p50, p99 = out:match("produce (%S+) (%S+) (%S+)")
  assert(rate, "unexpected producer output: " .. out)
  return { rate = tonumber(rate), p50 = tonumber(p50), p99 = tonumber(p99) }
end

local function redis_produce()
  local port = free_port()
  local server = redis_server(dir .. "/redis-produce", port, { "--appendonly", "yes", "--appendfsync", "always" })
  local r = parse_produce(with_servers({ server }, function()
    return shell(("%s %s produce %d %d %d %d %d"):format(PY, q(ROOT .. "/bench/peers/redis_streams.py"), port, PRODUCE,
      PRODUCE_BATCH, PRODUCE_WARM, PRODUCE_LAT))
  end))
  r.durability = "XADD over loopback, AOF appendfsync always"
  return r
end

local function nats_produce()
  local port = free_port()
  local server = nats_server(dir .. "/nats-produce", ([[
server_name: produce
listen: 127.0.0.1:%d
jetstream { store_dir: "%s" }
]]):format(port, dir .. "/nats-produce/js"))
  local url = "nats://127.0.0.1:" .. port
  local r = parse_produce(with_servers({ server }, function()
    node_shell("nats.mjs", "wait %s", url)
    return node_shell("nats.mjs", "produce %s %d %d %d %d", url, PRODUCE, PRODUCE_BATCH, PRODUCE_WARM, PRODUCE_LAT)
  end))
  r.durability = "JetStream publish awaiting its ack over loopback, file store, no fsync per message"
  return r
end

local PRODUCE_RUN = { odo = odo_produce, redis = redis_produce, nats = nats_produce }

-- ---- the benchmark -----------------------------------------------------------------------------

local runs, results, produced = {}, {}, {}
local load_at_start

-- The median of get(r) over the runs (nil when none has it).
local function median(list, get)
  local xs = {}
  for _, r in ipairs(list) do xs[#xs + 1] = get(r) end
  table.sort(xs)
  local n = #xs
  if n == 0 then return nil end
  return n % 2 == 1 and xs[(n + 1) // 2] or (xs[n // 2] + xs[n // 2 + 1]) / 2
end

-- One row from a system's rounds: the median of each figure, the peak
-- of the memory figures, the range of events/s.
local function combine(list)
  local r = { durability = list[1].durability, count = list[1].count, partial = list[1].partial, rounds = #list }
  r.secs = median(list, function(x) return x.secs end)
  r.rate = r.count / r.secs
  r.cpu_per_m = median(list, function(x) return x.cpu_per_m end)
  r.rss, r.hwm, r.min_rate, r.max_rate = -1, nil, math.huge, 0
  for _, x in ipairs(list) do
    r.rss = math.max(r.rss, x.rss or -1)
    if x.hwm then r.hwm = math.max(r.hwm or 0, x.hwm) end
    r.min_rate, r.max_rate = math.min(r.min_rate, x.rate), math.max(r.max_rate, x.rate)
  end
  if list[1].live then
    r.live = { p50 = median(list, function(x) return x.live and x.live.p50 end),
      p99 = median(list, function(x) return x.live and x.live.p99 end) }
  end
  return r
end

local function main()
  dir = common.tmpdir()
  local f = io.open("/proc/loadavg")
  load_at_start = f and f:read("l") or "?"
  if f then f:close() end
  for _, name in ipairs(SYSTEMS) do assert(RUN[name], "unknown system in ODO_BENCH_SYSTEMS: " .. name) end
  -- rounds go round the systems, so that a busy moment of the machine
  -- does not fall on one system's runs only
  for round = 1, ROUNDS do
    for _, name in ipairs(SYSTEMS) do
      runs[name] = runs[name] or {}
      local prev = runs[name][1]
      if not (prev and prev.partial) then -- a catch-up that did not finish is not tried again
        local t0 = uv.hrtime()
        runs[name][round] = RUN[name]()
        log("%s: round %d done in %.1f s: %.0f events/s", name, round, (uv.hrtime() - t0) / 1e9,
          runs[name][round].rate)
      end
      local base = name:match("^odo") and "odo" or name
      if PRODUCE_RUN[base] and not produced[base] then
        produced[base] = PRODUCE_RUN[base]()
        log("%s producer: %.0f events/s", base, produced[base].rate)
      end
    end
  end
  for _, name in ipairs(SYSTEMS) do results[name] = combine(runs[name]) end
end

common.main("bench/peers.lua", main, KEEP)

local function ratio(a, b) return b and b > 0 and ("%.2f"):format(a / b) or "-" end
local function mb(kb) return kb and kb >= 0 and ("%.0f"):format(kb / 1024) or "?" end
local function live(r, k) return r.live and ("%.3f"):format(r.live[k]) or "-" end

print(("peers: %d events of %d bytes caught up by a fresh replica over loopback, then %d live events at one"
  .. " per ms (%d warm-up events before them not counted); medians of %d rounds; %d cores, load average at start %s")
  :format(N, DATA_BYTES, LIVE, WARM, ROUNDS, #uv.cpu_info(), load_at_start))
print(("%-12s %10s %10s %9s %9s %8s %9s %9s  %s"):format("system", "catchup_s", "events/s", "cpu_s/M",
  "rss_anon", "vm_hwm", "live_p50", "live_p99", "replica durability"))
for _, name in ipairs(SYSTEMS) do
  local r = results[name]
  print(("%-12s %10.3f %10.0f %9.2f %9s %8s %9s %9s  %s%s"):format(name, r.secs, r.rate, r.cpu_per_m,
    mb(r.rss) .. "MB", mb(r.hwm) .. "MB", live(r, "p50"), live(r, "p99"), r.durability,
    r.partial and ("  PARTIAL: %d of %d events in %.0f s"):format(r.count, N, r.secs)
      or ("  (%d rounds: %.0f-%.0f events/s)"):format(r.rounds, r.min_rate, r.max_rate)))
end
-- odo / each: events/s above 1 means odo is faster; CPU, memory and p99 below 1 mean odo uses less
for _, odo_name in ipairs { "odo", "odo_durable" } do
  local o = results[odo_name]
  if o then
    for _, name in ipairs(SYSTEMS) do
      local r = results[name]
      if not name:match("^odo") then
        print(("ratio %s/%s: events/s %s  cpu/event %s  rss_anon %s  live_p99 %s"):format(odo_name, name,
          ratio(o.rate, r.rate), ratio(o.cpu_per_m, r.cpu_per_m), ratio(o.rss, r.rss),
          ratio(o.live and o.live.p99, r.live and r.live.p99)))
      end
    end
  end
end
print(("producer: durable appends of %d bytes: events/s with %d events per acknowledgement (%d events);"
  .. " ack latency of one event at a time (%d, after %d warm-up)"):format(DATA_BYTES, PRODUCE_BATCH, PRODUCE,
  PRODUCE_LAT, PRODUCE_WARM))
for _, name in ipairs { "odo", "redis", "nats" } do
  local r = produced[name]
  if r then
    print(("produce %-6s %10.0f events/s  ack p50 %.3f ms  p99 %.3f ms  (%s)"):format(name, r.rate, r.p50, r.p99,
      r.durability))
  end
end
for _, name in ipairs { "redis", "nats" } do
  if produced.odo and produced[name] then
    print(("ratio produce odo/%s: events/s %s  ack_p99 %s"):format(name, ratio(produced.odo.rate, produced[name].rate),
      ratio(produced.odo.p99, produced[name].p99)))
  end
end
