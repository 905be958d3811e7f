-- bench/metrics.lua - what serving metrics costs.
--
-- Scrape: one node (Ed25519 certificate, no peers, no sync) holding
-- STREAMS named streams (default 10,000) of 5 events each, every head
-- signed, serving GET /metrics on a free loopback port; then 2,000 of the
-- streams get one more event (so the per-stream series are chosen by
-- activity, not taken in order). A client on the same loop times whole
-- scrapes (connect, request, the complete answer): the first (its head
-- cache cold) and SCRAPES more; p50, p90 and max in ms (the goal: under
-- 100 ms). The baseline in the same invocation: one `node:status()`, what
-- `odo status --json` asks of the node (`scrape_vs_status: ratio`).
--
-- Replication: bench/sync.lua's catch-up (bench/sync_peer.lua source and
-- replica, N events of 100 bytes over mutual TLS on loopback), in rounds
-- alternating without metrics and with both nodes serving metrics and
-- this process scraping each every second; the best rate of each is kept.
-- `sync_ratio:` = with / without (1.00: no cost); `sync_cpu_ratio:` the
-- replica main thread's CPU seconds with / without (least of the rounds
-- each), which other work on the machine disturbs less.
--
-- Prints context lines, then `scrape_p50_ms: X`, `scrape_vs_status: Y`,
-- `sync_cpu_ratio: C` and last `sync_ratio: Z`.
--
-- Environment: ODO_BENCH_STREAMS (default 10000), ODO_BENCH_SCRAPES
-- (default 30), ODO_BENCH_EVENTS (N, default 2,000,000: a catch-up of a
-- few seconds), ODO_BENCH_ROUNDS (default 3), ODO_BENCH_VERBOSE=1,
-- ODO_BENCH_KEEP=1, ODO_CPATH.
package.path = (arg[0]:match("^(.*)/bench/[^/]*$") or ".") .. "/?.lua;" .. package.path
local common = require "bench.common" -- and with it the paths to odo's modules
local odo = require "odo"
local uv = require "luv"

local STREAMS = math.tointeger(tonumber(os.getenv("ODO_BENCH_STREAMS"))) or 10000
local SCRAPES = math.tointeger(tonumber(os.getenv("ODO_BENCH_SCRAPES"))) or 30
local N = math.tointeger(tonumber(os.getenv("ODO_BENCH_EVENTS"))) or 2000000
local ROUNDS = math.tointeger(tonumber(os.getenv("ODO_BENCH_ROUNDS"))) or 3
local VERBOSE = os.getenv("ODO_BENCH_VERBOSE") == "1"
local KEEP = os.getenv("ODO_BENCH_KEEP") == "1"
local TIMEOUT_MS = 600000
assert(STREAMS >= 1 and SCRAPES >= 1 and N >= 1 and ROUNDS >= 1, "the ODO_BENCH_* counts must be positive")

local run_until, q, spawn = common.run_until, common.q, common.spawn

local function log(fmt, ...)
  if VERBOSE then io.stderr:write(fmt:format(...), "\n") end
end

-- GET /metrics from addr on this loop; cb(seconds, answer) once the server
-- closed the connection.
local function scrape(addr, cb)
  local host, port = addr:match("^(.+):(%d+)$")
  local t0 = uv.hrtime()
  local tcp = uv.new_tcp()
  local chunks = {}
  tcp:connect(host, tonumber(port), function(err)
    if err then
      tcp:close()
      return cb(nil, err)
    end
    tcp:read_start(function(rerr, data)
      if rerr or not data then
        tcp:close()
        return cb((uv.hrtime() - t0) / 1e9, table.concat(chunks))
      end
      chunks[#chunks + 1] = data
    end)
    tcp:write("GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n")
  end)
end

local function scrape_wait(addr)
  local secs, answer
  scrape(addr, function(s, a)
    secs, answer = s, a
  end)
  run_until(function() return answer ~= nil end, TIMEOUT_MS, "a scrape")
  assert(secs and answer:match("^HTTP/1%.1 200 "), "the scrape failed: " .. tostring(answer):sub(1, 200))
  return secs, answer
end

local function ms(s) return s * 1000 end

-- ---- the scrape ---------------------------------------------------------------------

local scrape_result

local function bench_scrape(dir, pki)
  local node = assert(odo.node { dir = dir .. "/many", tls = pki.source, sync = false, metrics = "127.0.0.1:0",
    on_error = common.fail })
  local t0 = uv.hrtime()
  local ev = { { type = "bench", data = "a" }, { type = "bench", data = "b" }, { type = "bench", data = "c" },
    { type = "bench", data = "d" }, { type = "bench", data = "e" } }
  local ids = {}
  for i = 1, STREAMS do
    ids[i] = node:stream_id("s" .. i)
    assert(node:append(ids[i], ev))
  end
  local last = ids[STREAMS]
  run_until(function() return node.store:head_find(last, 5) ~= nil end, TIMEOUT_MS, "signing every head")
  for i = 1, STREAMS, math.max(1, STREAMS // 2000) do
    assert(node:append(ids[i], { type = "bench", data = "f" }))
  end
  run_until(function() return node.store:head_find(ids[1], 6) ~= nil end, TIMEOUT_MS, "signing the new heads")
  log("filled %d streams in %.1f s", STREAMS, (uv.hrtime() - t0) / 1e9)
  local cold, answer = scrape_wait(node.metrics_address)
  local series = select(2, answer:gsub("\nodo_stream_last_revision{", ""))
  local times = {}
  for i = 1, SCRAPES do times[i] = scrape_wait(node.metrics_address) end
  table.sort(times)
  -- the baseline: what odo status --json asks of the node
  local st = {}
  for i = 1, SCRAPES do
    local s0 = uv.hrtime()
    node:status()
    st[i] = (uv.hrtime() - s0) / 1e9
  end
  table.sort(st)
  scrape_result = { cold = cold, p50 = common.percentile(times, 0.5), p90 = common.percentile(times, 0.9),
    max = times[#times], bytes = #answer, series = series, status_p50 = common.percentile(st, 0.5) }
  node:close()
end

-- ---- replication with and without scrapes ------------------------------------------

local src = {}

-- Fills a source node folder with N events (as bench/sync.lua does).
local function fill(dir, pki)
  src.dir = dir .. "/source"
  local node = assert(odo.node { dir = src.dir, tls = pki.source, sync = false, on_error = common.fail })
  local batch = {}
  for i = 1, 1000 do batch[i] = { type = "bench", data = ("x"):rep(100) } end
  local left = N
  while left > 0 do
    if left < #batch then batch = table.move(batch, 1, left, 1, {}) end
    assert(node:append(nil, batch))
    left = left - #batch
  end
  src.id = node.id
  local store = node.store
  run_until(function() return store:head_find(src.id, N) ~= nil end, TIMEOUT_MS, "signing the source's heads")
  node:close()
end

local serial = 0
local function catch_up(dir, pki, with_metrics)
  serial = serial + 1
  local ports = { 0, 0 }
  local env_src, env_rep = common.peer_env(), common.peer_env()
  if with_metrics then
    local socks = {}
    for i = 1, 2 do
      socks[i] = uv.new_tcp()
      assert(socks[i]:bind("127.0.0.1", 0))
      ports[i] = socks[i]:getsockname().port
    end
    for i = 1, 2 do socks[i]:close() end
    env_src[#env_src + 1] = "ODO_BENCH_METRICS=127.0.0.1:" .. ports[1]
    env_rep[#env_rep + 1] = "ODO_BENCH_METRICS=127.0.0.1:" .. ports[2]
  end
  local peer = common.root .. "/bench/sync_peer.lua"
  local source = spawn("lua5.4", { peer, "source", src.dir, pki.source.ca, pki.source.cert, pki.source.key },
    env_src, true)
  local port = common.expect(source, "^port (%d+) ", "the source's start", 60000)
  local rep = ("%s/replica-%d"):format(dir, serial)
  local replica = spawn("lua5.4", { peer, "replica", rep, pki.replica.ca, pki.replica.cert, pki.replica.key, port,
    src.id, tostring(N), "default", "0" }, env_rep)
  local scrapes, timer = 0, nil
  if with_metrics then
    timer = uv.new_timer()
    timer:start(0, 1000, function()
      for i = 1, 2 do
        scrape("127.0.0.1:" .. ports[i], function(s) if s then scrapes = scrapes + 1 end end)
      end
    end)
  end
  local secs, cpu = common.expect(replica, "^caught_up ([%d.]+) %S+ %S+ %S+ %S+ (%S+) ", "the replica's catch-up",
    TIMEOUT_MS)
  if timer then timer:close() end
  common.reap(replica, "the replica", 60000)
  source.send("quit")
  common.reap(source, "the source", 60000)
  common.shell("rm -rf " .. q(rep))
  log("%s: %.0f events/s in %s s (replica's main thread: %s CPU s), %d scrapes", with_metrics and "with metrics"
    or "without", N / secs, secs, cpu, scrapes)
  return tonumber(secs), scrapes, tonumber(cpu)
end

local sync_result = {}

local function main()
  local dir = common.tmpdir()
  local pki = common.make_pki(dir, { "source", "replica" })
  bench_scrape(dir, pki)
  fill(dir, pki)
  local best, best_cpu = {}, {}
  local scrapes = 0
  for round = 1, ROUNDS do
    local order = round % 2 == 1 and { false, true } or { true, false }
    for _, m in ipairs(order) do
      local secs, n, cpu = catch_up(dir, pki, m)
      local k = m and "with" or "without"
      if not best[k] or secs < best[k] then best[k] = secs end
      if not best_cpu[k] or cpu < best_cpu[k] then best_cpu[k] = cpu end
      scrapes = scrapes + n
    end
  end
  sync_result = { with = N / best.with, without = N / best.without, scrapes = scrapes,
    cpu_with = best_cpu.with, cpu_without = best_cpu.without }
end

common.main("bench/metrics.lua", main, KEEP)

local s, r = scrape_result, sync_result
print(("scrape: %d streams (%d with series of their own), %d bytes; cold %.1f ms; p50 %.1f ms, p90 %.1f ms,"
  .. " max %.1f ms over %d scrapes (goal: under 100 ms)"):format(STREAMS, s.series, s.bytes, ms(s.cold), ms(s.p50),
  ms(s.p90), ms(s.max), SCRAPES))
print(("status: node:status() p50 %.1f ms (what odo status --json asks)"):format(ms(s.status_p50)))
print(("sync: %d events caught up, best of %d rounds: %.0f events/s without metrics, %.0f events/s with both"
  .. " nodes scraped every second (%d scrapes in all)"):format(N, ROUNDS, r.without, r.with, r.scrapes))
print(("sync_cpu: the replica's main thread, least of the rounds: %.2f CPU s without metrics, %.2f with"
  .. " (a measure a busy machine disturbs less than the rate)"):format(r.cpu_without, r.cpu_with))
print(("scrape_p50_ms: %.1f"):format(ms(s.p50)))
print(("scrape_vs_status: %.2f"):format(s.p50 / s.status_p50))
print(("sync_cpu_ratio: %.2f"):format(r.cpu_with / r.cpu_without))
print(("sync_ratio: %.2f"):format(r.with / r.without))
