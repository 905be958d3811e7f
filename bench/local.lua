-- bench/local.lua BASELINE - the local journal on luv, in one process.
--
-- Measures live delivery throughput to a Lua subscriber (appends in
-- batches of 1000), append-to-handler latency for single appends, catch-up
-- throughput of 1,000,000 events, and the largest loop stall a 1 ms
-- repeating timer sees during that catch-up and during a kv snapshot build
-- over 1,000,000 events. For context, a plain C scan of the same records
-- (bench/store_baseline.c, `scan`) runs in the same invocation.
-- Ends with `catchup_per_s: X` and `max_stall_ms: Y`.
package.path = (arg[0]:match("^(.*)/bench/[^/]*$") or ".") .. "/?.lua;" .. package.path
local common = require "bench.common" -- and with it the paths to odo's modules
local odo = require "odo"
local uv = require "luv"

local baseline = assert(arg[1], "usage: lua5.4 bench/local.lua BASELINE_BINARY")
local N = tonumber(os.getenv("ODO_BENCH_EVENTS")) or 1000000

local fresh = common.tmpdir

local function secs(t0) return (uv.hrtime() - t0) / 1e9 end

-- A 1 ms repeating timer that records the largest gap between its fires,
-- beyond the 1 ms it asked for.
local function stall_probe()
  local timer, last, worst = uv.new_timer(), uv.hrtime(), 0
  timer:start(1, 1, function()
    local now = uv.hrtime()
    worst = math.max(worst, (now - last) / 1e6 - 1)
    last = now
  end)
  return function()
    timer:close()
    return worst
  end
end

local data = ("x"):rep(100)
local batch = {}
for i = 1, 1000 do batch[i] = { type = "bench", data = data } end

-- 1. live delivery: appends of 1000 events, one per loop turn
local dir = fresh()
local node = assert(odo.node { dir = dir, node_id = "bench", sync = false })
local delivered = 0
node:subscribe(nil, "live", function(b) delivered = delivered + #b end)
local appended = 0
local t0 = uv.hrtime()
local function pump()
  if appended < N then
    node:append(nil, batch)
    appended = appended + #batch
    node.adapter.defer(pump)
  end
end
pump()
while delivered < N do uv.run("once") end
local live_rate = N / secs(t0)

-- 2. append-to-handler latency of single appends (1 per ms), without and
-- with a sync per append
local function latency(sync, on, group)
  on = on or node
  local samples, sent = {}, {}
  local sub = on:subscribe(nil, "live", function(b)
    local now = uv.hrtime()
    for _, ev in ipairs(b) do
      local i = tonumber(ev.data)
      if i and sent[i] then samples[#samples + 1] = (now - sent[i]) / 1e6 end
    end
  end)
  local i = 0
  local timer = uv.new_timer()
  timer:start(1, 1, function()
    i = i + 1
    if i > 2000 then return timer:stop() end
    sent[i] = uv.hrtime()
    if group then -- group commit: the fsync runs on the core's worker
      on:append({ type = "ping", data = tostring(i) }, nil, function() end)
    else
      on:append(nil, { type = "ping", data = tostring(i) }, { sync = sync })
    end
  end)
  local probe = stall_probe()
  while #samples < 2000 do uv.run("once") end
  local stall = probe()
  timer:close()
  sub:close()
  table.sort(samples)
  return common.percentile(samples, 0.5), common.percentile(samples, 0.99), stall
end
local p50, p99 = latency(false)
local dp50, dp99, dstall = latency(true)
node:close()
-- 2b. the same durable appends with a callback (group commit) on a durable
-- node: each write is fsynced on the core's worker thread, not the loop
local gnode = assert(odo.node { dir = fresh(), node_id = "bench-group" })
local gp50, gp99, gstall = latency(true, gnode, true)
gnode:close()
-- 2c. the same with an adapter that has no watch (as nginx's): the node
-- polls the commit queue every policy.commit_poll_ms
local no_watch = setmetatable({ watch = false }, { __index = require "odo.adapter.luv" })
local pnode = assert(odo.node { dir = fresh(), node_id = "bench-polled", adapter = no_watch })
local pp50, pp99 = latency(true, pnode, true)
pnode:close()

-- 3. catch-up of 1,000,000 events from a reopened store (LevelDB settled)
node = assert(odo.node { dir = dir, node_id = "bench", sync = false })
local total = node.store:stream(node.id).last
local got = 0
local stop_probe = stall_probe()
t0 = uv.hrtime()
node:subscribe(nil, 1, function(b) got = got + #b end)
while got < total do uv.run("once") end
local catchup_rate = got / secs(t0)
local catchup_stall = stop_probe()
node:close()

-- 4. a kv snapshot build over 1,000,000 put events (10,000 keys)
local kdir = fresh()
node = assert(odo.node { dir = kdir, node_id = "bench", sync = false })
local kv = {}
for i = 1, 1000 do kv[i] = odo.kv.put("key" .. (i % 10000), data) end
for r = 1, N // 1000 do
  for i = 1, 1000 do kv[i] = odo.kv.put("key" .. ((r * 1000 + i) % 10000), data) end
  node:append(nil, kv)
end
node:close()
node = assert(odo.node { dir = kdir, node_id = "bench" })
stop_probe = stall_probe()
local built
t0 = uv.hrtime()
node:snapshot(nil, function(rev, err) built = assert(rev, err) end, "kv")
while not built do uv.run("once") end
local build_secs = secs(t0)
local build_stall = stop_probe()
node:close()
require("odo.adapter.luv").shutdown()
uv.run() -- let closing handles finish before the process exits

-- the C baseline: write then scan the same records
local bdir = fresh()
common.baseline_rate(baseline, bdir .. "/db", N, "chain")
local scan_rate = common.baseline_rate(baseline, bdir .. "/db", N, "scan")

common.remove_tmpdirs()

print(("events: %d of 100 bytes"):format(N))
print(("live_delivery_per_s: %.0f  (appends of 1000, no sync)"):format(live_rate))
print(("append_to_handler_ms: p50 %.3f p99 %.3f  (no sync)"):format(p50, p99))
print(("append_to_handler_durable_ms: p50 %.3f p99 %.3f  (one sync per append)"):format(dp50, dp99))
print(("append_to_handler_group_ms: p50 %.3f p99 %.3f  (durable, with a callback: synced on the worker)")
  :format(gp50, gp99))
print(("append_to_handler_polled_ms: p50 %.3f p99 %.3f  (the same, no watch: polled every %d ms)")
  :format(pp50, pp99, require("odo.policy").commit_poll_ms))
print(("stall_ms: durable appends %.1f blocking, %.1f with a callback"):format(dstall, gstall))
print(("snapshot_build_s: %.2f  (kv, %d events)"):format(build_secs, N))
print(("stall_ms: catch-up %.1f, snapshot build %.1f"):format(catchup_stall, build_stall))
print(("baseline_scan_per_s: %.0f  (plain C LevelDB scan with checksums)"):format(scan_rate))
print(("catchup_ratio: %.2f  (catch-up / baseline scan)"):format(catchup_rate / scan_rate))
print(("catchup_per_s: %.0f"):format(catchup_rate))
print(("max_stall_ms: %.1f"):format(math.max(catchup_stall, build_stall)))
