-- bench/sync.lua PIPE - catch-up and live replication between two node
-- processes over mutual TLS on loopback, against a plain C pipe doing the
-- least any replication must do (bench/sync_pipe.c) in the same
-- invocation.
--
-- Setup: an Ed25519 CA and two node certificates (openssl command line);
-- a source node folder holding N events of 100 bytes in its own stream,
-- appended in batches of 1000 without sync, its heads signed (the node
-- signs them on later loop turns); the pipe's own source store, filled by
-- the pipe with the same records.
--
-- Catch-up, ours: the source node runs in its own process
-- (bench/sync_peer.lua source), listening on a free port; a replica node
-- in another process (bench/sync_peer.lua replica) with a new folder and
-- the source as its peer, both without sync, times itself from just
-- before it opens its node until it is told it caught up at N with N
-- events in its store. Three configurations: the default policy (this is
-- `ratio:`), and `verify_signatures` off and on (`verify_ratio:` = on /
-- off; chain hashes are checked in both). Each replica's last chain hash
-- must equal the source's.
--
-- Catch-up, the pipe: one scan of its source store, sent over TLS 1.3
-- with the same certificates, written by a replica process in LevelDB
-- WriteBatches of 1000 with the chain hashes recomputed; the clock runs
-- from just before the replica opens its store and connects to its last
-- write.
--
-- Peak anonymous memory: RssAnon of both processes (which leaves out
-- LevelDB's mapped files), sampled from /proc every 20 ms. For context,
-- the CPU seconds of each process (the replica's as it caught up, split
-- into its main thread and the others: LevelDB's compaction).
--
-- Live: after one more catch-up (default policy) the source and the
-- replica stay connected; the replica subscribes to the stream from
-- "live" and the source appends events, one per millisecond, each
-- carrying uv.hrtime() taken just before its append; the replica's
-- handler takes uv.hrtime() minus that (one clock: both processes run on
-- this machine). First LIVE / 5 events at once, for context (the
-- replica's LevelDB may still be compacting what it caught up); then,
-- once the replica's other threads used no CPU for 0.5 s, LIVE events:
-- `live_p99_ms:`. p50, p99 and max in ms.
--
-- Live during a catch-up: a source, a replica caught up with it and
-- subscribed from "live" (LIVE_WARM warm-up live events, not counted);
-- then a second, new replica starts catching up the whole stream while
-- the source appends live events at one per millisecond: the first
-- replica's latency of the events sent while the second one caught up
-- (from just before its node opened until it was told it caught up):
-- `live_p99_ms_during_catchup:` (goal <= 2 ms).
--
-- Fleet: a source node holding FLEET_STREAMS named streams of
-- FLEET_EVENTS events each (heads signed); a new replica node (bench/
-- sync_peer.lua fleet) replicates them all, timed from just before its
-- node opens: until its catalogues named every stream (`fleet_catalogue_s:`,
-- goal < 1 s), until the first and the last stream was caught up; events/s
-- over the last and its ratio to the single-stream rate (`sync:` above):
-- `fleet_ratio:` (goal >= 0.5). Best of ROUNDS rounds (each a new replica
-- of the same source folder), as the single-stream rate is.
-- `fleet_ratio_bound:` is the most that ratio can be on this machine from
-- CPU alone: every core busy all the time with one Ed25519 check a stream
-- (timed by `openssl speed ed25519` in the same run) and the single-stream
-- catch-up's CPU an event (source and replica), nothing a stream besides.
--
-- Replica CPU: the CPU seconds per event of the replica of `ratio:` (loop
-- thread plus the others) and of the pipe's: `replica_cpu_us_per_event:`.
-- `sync_rate_bound:` is the single-stream rate with every core busy all
-- the time with the CPU its source and replica spent an event.
--
-- Rounds alternate the pipe and ours; the best rate of each is kept.
-- Prints context lines, then `verify_ratio: X`, `peak_rss_mb: SOURCE
-- REPLICA`, `live_p99_ms: Y` and last `ratio: X` (ours, default policy /
-- the pipe).
--
-- Environment: ODO_BENCH_EVENTS (N, default 1000000), ODO_BENCH_ROUNDS
-- (default 3), ODO_BENCH_LIVE (LIVE, default 10000), ODO_BENCH_VERBOSE=1
-- (each run on stderr), ODO_BENCH_KEEP=1 (keep the temporary folder and
-- print its path), ODO_CPATH (where odo/core.so is, default build/?.so),
-- ODO_BENCH_FLEET_STREAMS (default 10000), ODO_BENCH_FLEET_EVENTS
-- (default 100). For finding where time goes: ODO_BENCH_ONLY=live, during,
-- shared or fleet (that run alone; shared: live on a connection that
-- also carries an N-event catch-up, `live_p99_ms_shared_catchup:`, only
-- run so; fleet then with one catch-up of N events in one stream after
-- it, for `fleet_ratio:`), ODO_BENCH_ONLY=sync (the pipe and the default
-- catch-up alternately, ROUNDS rounds: each round's ratio, their median
-- and range), ODO_BENCH_LIVE_TRACE=DIR (bench/live_trace.lua),
-- ODO_BENCH_SOCKBUF=BYTES (policy.peer_socket_buffer of the source and
-- the replicas), ODO_BENCH_BULK_RATE=BYTES (policy.sync_bulk_bytes_per_s
-- of the source), ODO_BENCH_PERF_SOURCE=FILE (`perf record -g` of
-- the source while it serves the live run's catch-up),
-- ODO_BENCH_PERF_FLEET=FILE (of the fleet's replica),
-- ODO_BENCH_PERF_FLEET_SOURCE=FILE (of the fleet's source; both with
-- ODO_BENCH_PERF_CALLS=dwarf unwind with DWARF), ODO_BENCH_TRACE=1
-- and ODO_BENCH_LUAPROF=1 (bench/sync_peer.lua).
package.path = (arg[0]:match("^(.*)/bench/[^/]*$") or ".") .. "/?.lua;" .. package.path
local common = require "bench.common" -- and with it the paths to odo's modules
local odo = require "odo"
local uv = require "luv"

local PIPE = assert(arg[1], "usage: lua5.4 bench/sync.lua PIPE_BINARY")
local N = math.tointeger(tonumber(os.getenv("ODO_BENCH_EVENTS"))) or 1000000
local ROUNDS = math.tointeger(tonumber(os.getenv("ODO_BENCH_ROUNDS"))) or 3
local LIVE = math.tointeger(tonumber(os.getenv("ODO_BENCH_LIVE"))) or 10000
local LIVE_EARLY = math.max(1, LIVE // 5) -- right after the catch-up, for context
local LIVE_WARM = 300 -- before the live events during a catch-up, not counted
local FLEET_STREAMS = math.tointeger(tonumber(os.getenv("ODO_BENCH_FLEET_STREAMS"))) or 10000
local FLEET_EVENTS = math.tointeger(tonumber(os.getenv("ODO_BENCH_FLEET_EVENTS"))) or 100
local VERBOSE = os.getenv("ODO_BENCH_VERBOSE") == "1"
local KEEP = os.getenv("ODO_BENCH_KEEP") == "1"
-- ODO_BENCH_ONLY=live|during|shared|fleet: that run alone (and its lines), for iterating
local ONLY = os.getenv("ODO_BENCH_ONLY")
-- ODO_BENCH_PERF_SOURCE=FILE: `perf record -g` of the source while it serves the catch-up of the live run;
-- ODO_BENCH_PERF_FLEET=FILE: of the fleet's replica
local PERF_SOURCE, PERF_FLEET = os.getenv("ODO_BENCH_PERF_SOURCE"), os.getenv("ODO_BENCH_PERF_FLEET")
-- ODO_BENCH_PERF_FLEET_SOURCE=FILE: of the fleet's source, while it serves the fleet
local PERF_FLEET_SOURCE = os.getenv("ODO_BENCH_PERF_FLEET_SOURCE")
-- ODO_BENCH_PERF_CALLS=dwarf: the fleet's profiles unwind with DWARF (the
-- libraries have no frame pointers), default fp
local PERF_CALLS = os.getenv("ODO_BENCH_PERF_CALLS") or "fp"
-- ODO_BENCH_LIVE_TRACE=DIR: where each live event's time goes, and each
-- thread's run-queue wait (bench/live_trace.lua), printed at the end
local LIVE_TRACE = os.getenv("ODO_BENCH_LIVE_TRACE")
local live_trace = LIVE_TRACE and require "bench.live_trace"
assert(ONLY == nil or ONLY == "during" or ONLY == "fleet" or ONLY == "live" or ONLY == "shared" or ONLY == "sync",
  "ODO_BENCH_ONLY must be live, during, shared, fleet or sync")
local BATCH = 1000
local DATA_BYTES = 100
local RUN_TIMEOUT_MS = 600000
local CATCH_UP_TIMEOUT_MS = 60000 + N // 10 -- a minute, and 100 s a million events
assert(N >= 1 and ROUNDS >= 1 and LIVE >= 1,
  "ODO_BENCH_EVENTS, ODO_BENCH_ROUNDS and ODO_BENCH_LIVE must be positive")

local shell, q, spawn, rss_sampler, run_until = common.shell, common.q, common.spawn, common.rss_sampler,
  common.run_until

local function log(fmt, ...)
  if VERBOSE then io.stderr:write(fmt:format(...), "\n") end
end

-- common.expect and common.reap, waiting RUN_TIMEOUT_MS unless told otherwise
local function expect(p, pattern, what, ms) return common.expect(p, pattern, what, ms or RUN_TIMEOUT_MS) end
local function reap(p, what) return common.reap(p, what, RUN_TIMEOUT_MS) end

-- ---- folders and certificates ---------------------------------------------------

local dir -- the temporary folder all the others are in
local pki -- the test certificates: an Ed25519 CA, a source and two replicas
local serial = 0
local function fresh(name)
  serial = serial + 1
  return ("%s/%s-%d"):format(dir, name, serial)
end

-- ---- the sources -------------------------------------------------------------------

-- Appends N events to a new node's own stream, waits for its heads to be
-- signed, closes it. Returns the folder, the node id and events/s.
local function fill_node()
  local d = fresh("source")
  local node = assert(odo.node { dir = d, tls = pki.source, sync = false, on_error = common.fail,
    tune_allocator = true })
  local data = ("x"):rep(DATA_BYTES)
  local batch = {}
  for i = 1, BATCH do batch[i] = { type = "bench", data = data } end
  local t0 = uv.hrtime()
  local left = N
  while left > 0 do
    if left < BATCH then batch = table.move(batch, 1, left, 1, {}) end
    assert(node:append(nil, batch))
    left = left - #batch
  end
  local appended = N / ((uv.hrtime() - t0) / 1e9)
  local id, store = node.id, node.store
  run_until(function() return store:head_find(id, store:stream(id).last) ~= nil end, RUN_TIMEOUT_MS,
    "signing the source's heads")
  local signed = N / ((uv.hrtime() - t0) / 1e9)
  node:close()
  return d, id, appended, signed
end

local function fill_pipe(stream_id)
  local d = fresh("pipe-source")
  local out = shell(("%s fill %s %d %s"):format(q(PIPE), q(d), N, q(stream_id)))
  assert(out:match("^filled (%d+)") == tostring(N), "unexpected pipe output: " .. out)
  return d
end

-- ---- one run of each ---------------------------------------------------------------

local src = {} -- the sources: node folder, id, pipe folder

local function run_pipe()
  local rep = fresh("pipe-replica")
  local p = spawn(PIPE, { "run", pki.source.ca, pki.source.cert, pki.source.key, pki.replica.cert,
    pki.replica.key, src.pipe, rep, src.id, tostring(N) })
  local stop_src = rss_sampler(function()
    local l = p.lines[1]
    return l and l:match("^source_pid (%d+)$")
  end)
  local stop_rep = rss_sampler(function() return p.pid end)
  local ok, err = pcall(reap, p, "sync_pipe")
  local rss_src, rss_rep = stop_src(), stop_rep()
  if not ok then error(err, 0) end
  local sn, _, scipher, srss, scpu = (p.lines[2] or ""):match("^source (%d+) (%d+) (%S+) (%d+) (%S+) %S+$")
  local n, _, secs, cipher, rrss, rmain, rother = (p.lines[3] or "")
    :match("^(%d+) (%d+) ([%d.]+) (%S+) (%d+) (%S+) (%S+)$")
  assert(n and tonumber(n) == N and tonumber(sn) == N, "unexpected pipe output: " .. table.concat(p.lines, " | "))
  shell("rm -rf " .. q(rep))
  return { secs = tonumber(secs), cipher = cipher .. " / " .. scipher,
    rss_source = math.max(rss_src, tonumber(srss)), rss_replica = math.max(rss_rep, tonumber(rrss)),
    cpu = { source = tonumber(scpu), main = tonumber(rmain), other = tonumber(rother) } }
end

-- Waits until process pid's other threads (LevelDB's compaction after a
-- catch-up) used no CPU for 0.5 s, at most 30 s; returns the seconds
-- waited.
local function settle(pid) return common.settle(pid, "other") end

-- One measurement of n live events: the replica expects them, then the
-- source appends them, one per millisecond.
local function live_phase(source, replica, n) return common.live_phase(source, replica, n, RUN_TIMEOUT_MS) end

-- One catch-up of the whole stream by a new replica. With `live`, then
-- LIVE_EARLY live events at once, and LIVE more once the replica's
-- compaction is idle. verify: "default", "on" or "off".
local function run_ours(verify, live)
  local source = spawn("lua5.4", { common.root .. "/bench/sync_peer.lua", "source", src.node, pki.source.ca,
    pki.source.cert, pki.source.key }, common.peer_env(), true)
  local replica
  local stop_src = rss_sampler(function() return source.pid end)
  local stop_rep = rss_sampler(function() return replica and replica.pid end)
  local rep = fresh("replica")
  local ok, res = pcall(function()
    local port, id, last, hash = expect(source, "^port (%d+) (%x+) (%d+) (%S+)$", "the source's start", 60000)
    assert(id == src.id and tonumber(last) == N, "the source holds the wrong stream: " .. source.lines[1])
    replica = spawn("lua5.4", { common.root .. "/bench/sync_peer.lua", "replica", rep, pki.replica.ca, pki.replica.cert,
      pki.replica.key, port, id, tostring(N), verify, live and "1" or "0" }, common.peer_env(), live)
    local secs, rlast, rhash, how, cipher, rmain, rother = expect(replica,
      "^caught_up ([%d.]+) (%d+) (%S+) (%S+) (%S+) (%S+) (%S+)$", "the replica's catch-up", CATCH_UP_TIMEOUT_MS)
    if tonumber(rlast) ~= N or rhash ~= hash then
      error(("the replica holds %s events ending at hash %s; the source %d ending at %s"):format(rlast, rhash,
        N, hash), 0)
    end
    local r = { secs = tonumber(secs), how = how, cipher = cipher,
      cpu = { main = tonumber(rmain), other = tonumber(rother) } }
    if live then
      expect(replica, "^ready$", "the replica's live subscription", 60000)
      r.live_early = live_phase(source, replica, LIVE_EARLY)
      r.settled_s = settle(replica.pid)
      local ph = live_trace and live_trace.phase("live", { source = source.pid, replica = replica.pid })
      r.live = live_phase(source, replica, LIVE)
      if ph then ph.stop() end
      r.trace = ph
      replica.send("quit")
    end
    reap(replica, "the replica")
    source.send("quit")
    local smain, sother = expect(source, "^cpu (%S+) (%S+)$", "the source's end", 60000)
    if r.trace then r.trace.join(LIVE_TRACE, replica.pid) end
    r.cpu.source = tonumber(smain) + tonumber(sother)
    reap(source, "the source")
    return r
  end)
  local rss_src, rss_rep = stop_src(), stop_rep()
  if not ok then error(res, 0) end
  res.rss_source, res.rss_replica = rss_src, rss_rep
  shell("rm -rf " .. q(rep))
  return res
end

-- ---- the benchmark -----------------------------------------------------------------

local function rate(r) return N / r.secs end

local results, peak = {}, { source = -1, replica = -1 }
local fill_rates
local function keep(name, r)
  log("%s: %.0f events/s in %.3f s (RssAnon source %.1f MB, replica %.1f MB; CPU s source %.2f,"
    .. " replica %.2f + %.2f)%s", name, rate(r), r.secs, r.rss_source / 1024, r.rss_replica / 1024,
    r.cpu.source, r.cpu.main, r.cpu.other, r.how and r.how ~= "event" and "  noticed by " .. r.how or "")
  local prev = results[name]
  if not prev or r.secs < prev.secs then results[name] = r end
  results[name].rss_source = math.max(r.rss_source, prev and prev.rss_source or -1)
  results[name].rss_replica = math.max(r.rss_replica, prev and prev.rss_replica or -1)
  if name ~= "pipe" then
    peak.source = math.max(peak.source, r.rss_source)
    peak.replica = math.max(peak.replica, r.rss_replica)
  end
end

-- ---- live during a catch-up, and fleets -----------------------------------------------

local function peer_args(...)
  return { common.root .. "/bench/sync_peer.lua", ... }
end

-- Starts bench/sync_peer.lua source on folder d; returns the process, its
-- port, stream id and last revision.
local function start_source(d)
  local source = spawn("lua5.4", peer_args("source", d, pki.source.ca, pki.source.cert, pki.source.key),
    common.peer_env(), true)
  local port, id, last = expect(source, "^port (%d+) (%x+) (%d+) (%S+)$", "the source's start", 60000)
  return source, port, id, tonumber(last)
end

-- Stops it; returns its CPU seconds (all threads).
local function stop_source(source)
  source.send("quit")
  local smain, sother = expect(source, "^cpu (%S+) (%S+)$", "the source's end", 60000)
  reap(source, "the source")
  return tonumber(smain) + tonumber(sother)
end

-- The live latency at a caught-up replica while a second one catches up.
local function run_live_during_catchup()
  local source, port, id, last = start_source(src.node)
  local live_rep = spawn("lua5.4", peer_args("replica", fresh("replica"), pki.replica.ca, pki.replica.cert,
    pki.replica.key, port, id, tostring(last), "default", "1"), common.peer_env(), true)
  expect(live_rep, "^caught_up ", "the first replica's catch-up", CATCH_UP_TIMEOUT_MS)
  expect(live_rep, "^ready$", "the first replica's live subscription", 60000)
  settle(live_rep.pid)
  live_phase(source, live_rep, LIVE_WARM)
  live_rep.send("record")
  local bulk = spawn("lua5.4", peer_args("replica", fresh("replica"), pki.replica2.ca, pki.replica2.cert,
    pki.replica2.key, port, id, tostring(last), "default", "0"), common.peer_env())
  local t0 = tonumber(expect(bulk, "^started (%d+)$", "the second replica's start", 60000))
  for i, l in ipairs(source.lines) do -- the warm-up's own line
    if l:match("^live_sent ") then source.lines[i] = "(seen) " .. l end
  end
  local perf = PERF_SOURCE
    and spawn("perf", { "record", "-g", "-q", "-o", PERF_SOURCE, "-p", tostring(source.pid) })
  local ph = live_trace and live_trace.phase("during", { source = source.pid, live_replica = live_rep.pid,
    bulk_replica = bulk.pid })
  source.send("live 1000000")
  local secs = tonumber(expect(bulk, "^caught_up ([%d.]+) ", "the second replica's catch-up", CATCH_UP_TIMEOUT_MS))
  if ph then ph.stop() end
  source.send("live_stop")
  if perf then common.stop(perf, 10000) end -- perf writes its file on SIGTERM
  local sent = expect(source, "^live_sent (%d+)$", "the live events' end", 60000)
  reap(bulk, "the second replica")
  -- let the last events arrive, then take those sent during the catch-up
  local wait = uv.new_timer()
  local waited = false
  wait:start(1000, 0, function() waited = true end)
  run_until(function() return waited end, 5000, "waiting")
  wait:close()
  live_rep.send(("window %d %d"):format(t0, t0 + math.floor(secs * 1e9)))
  local count, p50, p99, max, mean = expect(live_rep, "^window (%d+) (%S+) (%S+) (%S+) (%S+)$", "the live window",
    60000)
  live_rep.send("quit")
  reap(live_rep, "the first replica")
  stop_source(source)
  if ph then ph.join(LIVE_TRACE, live_rep.pid) end
  return { events = last, secs = secs, sent = tonumber(sent), count = tonumber(count), p50 = tonumber(p50),
    p99 = tonumber(p99), max = tonumber(max), mean = tonumber(mean) }
end

-- Live on a connection that carries a catch-up too: a source holding its
-- own stream (one event) and a named stream of N events; a new replica
-- follows both from it over one connection, subscribed to the first from
-- "live": its latency of the events sent while it caught up the second
-- (from just before its node opened until it was told it caught up).
local function run_live_shared()
  local d = fresh("shared-source")
  local node = assert(odo.node { dir = d, tls = pki.source, sync = false, on_error = common.fail,
    tune_allocator = true })
  local bulk = node:stream_id("bulk")
  assert(node:append(nil, { { type = "live", data = "0" } }))
  local full = {}
  for i = 1, BATCH do full[i] = { type = "bench", data = ("x"):rep(DATA_BYTES) } end
  for at = 1, N, BATCH do assert(node:append(bulk, table.move(full, 1, math.min(BATCH, N - at + 1), 1, {}))) end
  local store = node.store
  run_until(function() return store:head_find(bulk, N) ~= nil and store:head_find(node.id, 1) ~= nil end,
    RUN_TIMEOUT_MS, "signing the shared source's heads")
  node:close()
  local source, port, id, last = start_source(d)
  local env = common.peer_env()
  env[#env + 1] = ("ODO_BENCH_ALSO=%s %d"):format(bulk, N)
  local rep = spawn("lua5.4", peer_args("replica", fresh("replica"), pki.replica.ca, pki.replica.cert,
    pki.replica.key, port, id, tostring(last), "default", "1"), env, true)
  local t0 = tonumber(expect(rep, "^started (%d+)$", "the replica's start", 60000))
  expect(rep, "^ready$", "the replica's live subscription", CATCH_UP_TIMEOUT_MS)
  local ph = live_trace and live_trace.phase("shared", { source = source.pid, replica = rep.pid })
  rep.send("record")
  source.send("live 1000000")
  local t1 = tonumber(expect(rep, "^also_caught_up (%d+)$", "the named stream's catch-up", CATCH_UP_TIMEOUT_MS))
  if ph then ph.stop() end
  source.send("live_stop")
  local sent = expect(source, "^live_sent (%d+)$", "the live events' end", 60000)
  local wait = uv.new_timer()
  local waited = false
  wait:start(1000, 0, function() waited = true end)
  run_until(function() return waited end, 5000, "waiting")
  wait:close()
  rep.send(("window %d %d"):format(t0, t1))
  local count, p50, p99, max, mean = expect(rep, "^window (%d+) (%S+) (%S+) (%S+) (%S+)$", "the live window", 60000)
  rep.send("quit")
  reap(rep, "the replica")
  stop_source(source)
  if ph then ph.join(LIVE_TRACE, rep.pid) end
  return { secs = (t1 - t0) / 1e9, sent = tonumber(sent), count = tonumber(count), p50 = tonumber(p50),
    p99 = tonumber(p99), max = tonumber(max), mean = tonumber(mean) }
end

-- The fleet's source folder: FLEET_STREAMS streams of FLEET_EVENTS
-- events, filled once for every round.
local fleet_source
local function fill_fleet()
  fleet_source = fresh("fleet-source")
  local t0 = uv.hrtime()
  common.fill_node(fleet_source, pki.source, FLEET_EVENTS, DATA_BYTES, BATCH, FLEET_STREAMS, RUN_TIMEOUT_MS)
  log("fleet source filled and signed in %.1f s", (uv.hrtime() - t0) / 1e9)
end

-- The fleet caught up by a new replica (one round).
local function run_fleet()
  local source, port = start_source(fleet_source)
  local rep = spawn("lua5.4", peer_args("fleet", fresh("fleet-replica"), pki.replica.ca, pki.replica.cert,
    pki.replica.key, port, tostring(FLEET_STREAMS), tostring(FLEET_EVENTS)), common.peer_env())
  local perf = PERF_FLEET and spawn("perf", { "record", "--call-graph", PERF_CALLS, "-q", "-o", PERF_FLEET, "-p",
    tostring(rep.pid) })
  local sperf = PERF_FLEET_SOURCE and spawn("perf", { "record", "--call-graph", PERF_CALLS, "-q", "-o",
    PERF_FLEET_SOURCE, "-p", tostring(source.pid) })
  local progress = os.getenv("ODO_BENCH_FLEET_PROGRESS") == "1" and uv.new_timer()
  if progress then -- the source's CPU beside the replica's progress lines
    local t_start = uv.hrtime()
    progress:start(250, 250, function()
      local smain, sother = common.thread_cpu(source.pid)
      io.stderr:write(("source %.2f s: cpu %.2f %.2f\n"):format((uv.hrtime() - t_start) / 1e9, smain or 0,
        sother or 0))
    end)
  end
  local cat, first, last, held, rmain, rother = expect(rep, "^fleet (%S+) (%S+) (%S+) (%d+) (%S+) (%S+)$",
    "the fleet's catch-up", CATCH_UP_TIMEOUT_MS + FLEET_STREAMS * 10)
  if progress then progress:close() end
  if perf then common.stop(perf, 10000) end
  if sperf then common.stop(sperf, 10000) end
  reap(rep, "the fleet replica")
  local source_cpu = stop_source(source)
  assert(tonumber(held) == FLEET_STREAMS, ("the fleet replica holds %s of %d streams whole"):format(held,
    FLEET_STREAMS))
  return { catalogue = tonumber(cat), first = tonumber(first), last = tonumber(last),
    cpu = tonumber(rmain) + tonumber(rother), cpu_main = tonumber(rmain), source_cpu = source_cpu }
end

-- The better of two fleet rounds (the last stream caught up sooner), as
-- the one-stream catch-ups keep their best round.
local function best_fleet(a, b)
  if b then log("fleet round: catalogue %.3f s, first %.3f s, last %.3f s", b.catalogue, b.first, b.last) end
  if not a or (b and b.last < a.last) then return b end
  return a
end

-- ---- what this machine allows at most ------------------------------------------------

-- Microseconds of one Ed25519 signature check here (`openssl speed`, the
-- library the core checks with), or nil when it cannot be measured.
local function ed25519_verify_us()
  local ok, out = pcall(common.shell, "openssl speed -seconds 1 ed25519")
  local per_s = ok and tonumber(out:match("Ed25519%)%s+%S+%s+%S+%s+%S+%s+(%S+)"))
  return per_s and per_s > 0 and 1e6 / per_s or nil
end

-- The most the fleet's rate can be, over the one-stream rate, from CPU
-- alone: every core busy all the time, with the one-stream catch-up's
-- CPU an event (source and replica, less every signature check it might
-- have made: one a 1000 events) plus one check a stream, and nothing a
-- stream besides. `one`: the one-stream result. Returns the ratio and
-- the figures it was made of, or nil.
local function fleet_ratio_bound(one)
  local sig_us, cores = ed25519_verify_us(), #uv.cpu_info()
  if not sig_us then return nil end
  local per_event = ((one.cpu.main + one.cpu.other + one.cpu.source) - N / 1000 * sig_us / 1e6) / N
  local fleet_events = FLEET_STREAMS * FLEET_EVENTS
  local cpu = fleet_events * per_event + FLEET_STREAMS * sig_us / 1e6
  return fleet_events * cores / cpu / rate(one), sig_us, cores, per_event * 1e6, fleet_events * cores / cpu
end

local function print_fleet_bound(one)
  local bound, sig_us, cores, per_event_us, fleet_rate = fleet_ratio_bound(one)
  if not bound then return print("fleet_ratio_bound: unknown (openssl speed ed25519 failed)") end
  print(("fleet_ratio_bound: %.2f (the most this machine allows: %.0f events/s, %d cores busy all the time with %d"
    .. " Ed25519 checks at %.0f us and %.2f us of CPU an event as in the one-stream catch-up, nothing a stream"
    .. " besides)"):format(bound, fleet_rate, cores, FLEET_STREAMS, sig_us, per_event_us))
end

local live_result, during, fleet, sync_rounds, shared
local function main()
  dir = common.tmpdir()
  pki = common.make_pki(dir, { "source", "replica", "replica2" })
  local appended, signed
  if ONLY == "fleet" then -- alternating with catch-ups of N events in one stream, for the ratio
    fill_fleet()
    src.node, src.id = fill_node()
    for _ = 1, ROUNDS do
      fleet = best_fleet(fleet, run_fleet())
      keep("default", run_ours("default"))
    end
    return
  end
  src.node, src.id, appended, signed = fill_node()
  if ONLY == "during" then
    during = run_live_during_catchup()
    return
  end
  if ONLY == "live" then
    live_result = run_ours("default", true)
    return
  end
  if ONLY == "shared" then
    shared = run_live_shared()
    return
  end
  src.pipe = fill_pipe(src.id)
  fill_rates = { appended = appended, signed = signed }
  if ONLY == "sync" then
    sync_rounds = {}
    for _ = 1, ROUNDS do
      local p, o = run_pipe(), run_ours("default")
      keep("pipe", p)
      keep("default", o)
      sync_rounds[#sync_rounds + 1] = { pipe = p, ours = o }
    end
    return
  end
  log("source filled: %.0f events/s appended, %.0f events/s with heads signed", appended, signed)
  for round = 1, ROUNDS do
    keep("pipe", run_pipe())
    keep("default", run_ours("default"))
    -- verification off and on alternately, first one then the other
    local order = round % 2 == 1 and { "off", "on" } or { "on", "off" }
    for _, v in ipairs(order) do keep("verify_" .. v, run_ours(v)) end
  end
  local r = run_ours("default", true)
  for _, k in ipairs { "live_early", "live" } do
    log("%s: p50 %.3f ms, p99 %.3f ms, max %.3f ms over %d events", k, r[k].p50, r[k].p99, r[k].max, r[k].count)
  end
  peak.source = math.max(peak.source, r.rss_source)
  peak.replica = math.max(peak.replica, r.rss_replica)
  live_result = r
  during = run_live_during_catchup()
  log("live during a catch-up: p99 %.3f ms over %d events", during.p99, during.count)
  fill_fleet()
  for _ = 1, ROUNDS do fleet = best_fleet(fleet, run_fleet()) end
end

common.main("bench/sync.lua", main, KEEP)
if live_trace then print(table.concat(live_trace.lines, "\n")) end

if ONLY == "during" then
  print(("live_during_catchup: p50 %.3f ms, p99 %.3f ms, max %.3f ms, mean %.3f ms (%d events; %d events caught up"
    .. " in %.3f s)"):format(during.p50, during.p99, during.max, during.mean, during.count, during.events, during.secs))
  print(("live_p99_ms_during_catchup: %.3f"):format(during.p99))
  return
elseif ONLY == "sync" then
  local ratios = {}
  local function us(r) return (r.cpu.main + r.cpu.other) / N * 1e6 end
  for i, r in ipairs(sync_rounds) do
    ratios[i] = r.pipe.secs / r.ours.secs
    print(("round %d: sync %.0f events/s (source %.2f, replica %.2f + %.2f us/event), pipe %.0f events/s"
      .. " (source %.2f, replica %.2f us/event), ratio %.2f"):format(i, N / r.ours.secs, r.ours.cpu.source / N * 1e6,
      r.ours.cpu.main / N * 1e6, r.ours.cpu.other / N * 1e6, N / r.pipe.secs, r.pipe.cpu.source / N * 1e6, us(r.pipe),
      ratios[i]))
  end
  table.sort(ratios)
  local m = #ratios
  local median = m % 2 == 1 and ratios[(m + 1) // 2] or (ratios[m // 2] + ratios[m // 2 + 1]) / 2
  print(("peak_rss_mb: %.1f %.1f"):format(peak.source / 1024, peak.replica / 1024))
  print(("ratio_median: %.2f (range %.2f-%.2f over %d rounds)"):format(median, ratios[1], ratios[m], m))
  return
elseif ONLY == "shared" then
  print(("live_shared_catchup: p50 %.3f ms, p99 %.3f ms, max %.3f ms, mean %.3f ms (%d events; sent on the connection"
    .. " that carried a %d-event catch-up in %.3f s)"):format(shared.p50, shared.p99, shared.max, shared.mean,
    shared.count, N, shared.secs))
  print(("live_p99_ms_shared_catchup: %.3f"):format(shared.p99))
  return
elseif ONLY == "live" then
  local lv, le = live_result.live, live_result.live_early
  print(("live_after_catchup: p50 %.3f ms, p99 %.3f ms, max %.3f ms, mean %.3f ms (%d events)"):format(le.p50,
    le.p99, le.max, le.mean, le.count))
  print(("live: p50 %.3f ms, p99 %.3f ms, max %.3f ms, mean %.3f ms (%d events, after %.1f s settling)"):format(lv.p50,
    lv.p99, lv.max, lv.mean, lv.count, live_result.settled_s))
  print(("live_p99_ms: %.3f"):format(lv.p99))
  return
elseif ONLY == "fleet" then
  print(("fleet: %d streams x %d events; catalogue exchange %.3f s; first stream caught up at %.3f s, last at"
    .. " %.3f s; %.0f events/s; replica CPU s %.2f (loop thread %.2f), source %.2f; best of %d rounds")
    :format(FLEET_STREAMS, FLEET_EVENTS, fleet.catalogue, fleet.first, fleet.last,
      FLEET_STREAMS * FLEET_EVENTS / fleet.last, fleet.cpu, fleet.cpu_main, fleet.source_cpu, ROUNDS))
  local one = results.default
  print(("sync: %.0f events/s (one stream of %d events, best of %d rounds; replica CPU s %.2f (loop thread %.2f),"
    .. " source %.2f)"):format(rate(one), N, ROUNDS, one.cpu.main + one.cpu.other, one.cpu.main, one.cpu.source))
  print(("fleet_ratio: %.2f"):format(FLEET_STREAMS * FLEET_EVENTS / fleet.last / rate(one)))
  print_fleet_bound(one)
  print(("fleet_catalogue_s: %.3f"):format(fleet.catalogue))
  return
end
local function mb(kb) return kb >= 0 and ("%.1f"):format(kb / 1024) or "unknown" end
local function line(name, r, what)
  print(("%s: %.0f events/s, %.1f MB/s of event data  (%s; peak RssAnon source %s MB, replica %s MB;"
    .. " CPU s source %.2f, replica %.2f + %.2f in other threads)"):format(name, rate(r),
    N * DATA_BYTES / r.secs / 1e6, what, mb(r.rss_source), mb(r.rss_replica), r.cpu.source, r.cpu.main,
    r.cpu.other))
end
local p, d, off, on = results.pipe, results.default, results.verify_off, results.verify_on
local lv, le = live_result.live, live_result.live_early
print(("events: %d of %d bytes, one stream, caught up by a new replica over mutual TLS 1.3 on loopback"
  .. " (Ed25519), no sync; best of %d alternating rounds"):format(N, DATA_BYTES, ROUNDS))
print(("source_fill: %.0f events/s appended, %.0f events/s until every head was signed")
  :format(fill_rates.appended, fill_rates.signed))
print(("cipher: ours %s; pipe %s (replica / source)"):format(d.cipher, p.cipher))
line("pipe", p, "plain C: LevelDB scan, TLS, chain hashes, WriteBatches of 1000")
line("sync", d, "odo nodes, default policy")
line("sync_verify_off", off, "verify_signatures = false")
line("sync_verify_on", on, "verify_signatures = true")
print(("live_after_catchup: p50 %.3f ms, p99 %.3f ms, max %.3f ms, mean %.3f ms  (%d events, one per ms,"
  .. " at once after a catch-up, the replica's LevelDB compacting)"):format(le.p50, le.p99, le.max, le.mean,
  le.count))
print(("live: p50 %.3f ms, p99 %.3f ms, max %.3f ms, mean %.3f ms  (%d events, one per ms, once the replica's"
  .. " compaction was idle: after %.1f s; peak RssAnon source %s MB, replica %s MB)"):format(lv.p50, lv.p99,
  lv.max, lv.mean, lv.count, live_result.settled_s, mb(live_result.rss_source), mb(live_result.rss_replica)))
print(("live_during_catchup: p50 %.3f ms, p99 %.3f ms, max %.3f ms, mean %.3f ms  (%d events, one per ms, sent to a"
  .. " caught-up replica while the same source streamed %d events to a new replica in %.3f s; %d sent in all;"
  .. " goal: p99 <= 2 ms)"):format(during.p50, during.p99, during.max, during.mean, during.count, during.events,
  during.secs, during.sent))
local fleet_events = FLEET_STREAMS * FLEET_EVENTS
print(("fleet: %.0f events/s, %d streams x %d events caught up by a new replica; catalogue exchange %.3f s"
  .. " (goal < 1 s); first stream caught up at %.3f s, last at %.3f s; best of %d rounds; ratio to one stream (sync)"
  .. " %.2f (goal >= 0.5);"
  .. " replica CPU s %.2f, source %.2f"):format(fleet_events / fleet.last, FLEET_STREAMS, FLEET_EVENTS, fleet.catalogue,
  fleet.first, fleet.last, ROUNDS, fleet_events / fleet.last / rate(d), fleet.cpu, fleet.source_cpu))
print(("live_p99_ms_during_catchup: %.3f"):format(during.p99))
print(("fleet_ratio: %.2f"):format(fleet_events / fleet.last / rate(d)))
print_fleet_bound(d)
print(("fleet_catalogue_s: %.3f"):format(fleet.catalogue))
-- the replica's CPU per event in the catch-up of `ratio:` (its loop thread
-- and the others: the commit queue's worker, LevelDB's compaction), so a
-- rate bought with a second core shows
local function us(cpu) return cpu / N * 1e6 end
print(("replica_cpu: %.2f us/event (loop thread %.2f, other threads %.2f); pipe %.2f us/event;"
  .. " cpu_ratio %.2f (pipe / ours)"):format(us(d.cpu.main + d.cpu.other), us(d.cpu.main),
  us(d.cpu.other), us(p.cpu.main + p.cpu.other), (p.cpu.main + p.cpu.other) / (d.cpu.main + d.cpu.other)))
print(("replica_cpu_us_per_event: %.2f"):format(us(d.cpu.main + d.cpu.other)))
-- the one-stream catch-up's rate with every core busy all the time with
-- its work (both processes'): what this machine allows at most
print(("sync_rate_bound: %.0f events/s (the most this machine allows: %d cores busy all the time with the %.2f us"
  .. " of CPU an event the source and the replica spent; sync ran at %.0f)"):format(N * #uv.cpu_info()
  / (d.cpu.main + d.cpu.other + d.cpu.source), #uv.cpu_info(), us(d.cpu.main + d.cpu.other + d.cpu.source), rate(d)))
print(("verify_ratio: %.2f"):format(rate(on) / rate(off)))
print(("peak_rss_mb: %s %s"):format(mb(peak.source), mb(peak.replica)))
print(("live_p99_ms: %.3f"):format(lv.p99))
print(("ratio: %.2f"):format(rate(d) / rate(p)))
