-- bench/pack.lua - what packing buys a catch-up from a source whose
-- stream was written one event at a time (a live device).
--
-- Setup: a source node folder holding N events of 100 bytes in its own
-- stream, appended ONE event a call without sync, the loop turning every
-- 100 appends (so its heads are signed as a live source's are: at every
-- multiple of 1000 and at the last revision of each pass), packing off:
-- one record per event. A copy of the folder is then packed
-- (store:pack, 5000 events a call, until nothing is left: `pack_rate:`
-- events/s and CPU us/event of that, the loop's work), and the packed
-- span compacted by LevelDB (store:compact_packed, as odo.packer asks
-- after a large pass; the close waits for it: `compact_s:`).
--
-- Catch-up: for each of the two folders in turn, ROUNDS rounds, the
-- source runs in its own process (bench/sync_peer.lua source, packing
-- off so the unpacked one stays so), and a fresh replica in another
-- (bench/sync_peer.lua replica, default policy) times its catch-up of
-- the stream; its last hash must equal the source's. The source's CPU
-- seconds (all threads) over the run are read when it quits. Best rate
-- of each kept; the source's CPU of that round.
--
-- Prints `unpacked:` and `packed:` (events/s, source CPU us/event),
-- then `rate_ratio:` (packed / unpacked events/s) and last
-- `source_cpu_ratio:` (packed / unpacked source CPU per event).
--
-- Environment: ODO_BENCH_EVENTS (N, default 200000), ODO_BENCH_ROUNDS
-- (default 3), ODO_BENCH_NO_COMPACT=1 (the packed span is not compacted:
-- LevelDB still holds the deleted records when the source serves it),
-- ODO_BENCH_VERBOSE=1 (each run on stderr), ODO_BENCH_KEEP=1,
-- ODO_CPATH (where odo/core.so is, default build/?.so).
package.path = (arg[0]:match("^(.*)/bench/[^/]*$") or ".") .. "/?.lua;" .. package.path
local common = require "bench.common" -- and with it the paths to odo's modules
local odo = require "odo"
local Store = require "odo.store"
local uv = require "luv"

local N = math.tointeger(tonumber(os.getenv("ODO_BENCH_EVENTS"))) or 200000
local ROUNDS = math.tointeger(tonumber(os.getenv("ODO_BENCH_ROUNDS"))) or 3
local VERBOSE = os.getenv("ODO_BENCH_VERBOSE") == "1"
local KEEP = os.getenv("ODO_BENCH_KEEP") == "1"
local NO_COMPACT = os.getenv("ODO_BENCH_NO_COMPACT") == "1"
local DATA_BYTES = 100
local RUN_TIMEOUT_MS = 600000
assert(N >= 1000 and ROUNDS >= 1, "ODO_BENCH_EVENTS must be 1000 or more, ODO_BENCH_ROUNDS positive")

local shell, q, spawn, run_until = common.shell, common.q, common.spawn, common.run_until

local function log(fmt, ...)
  if VERBOSE then io.stderr:write(fmt:format(...), "\n") end
end

local function expect(p, pattern, what) return common.expect(p, pattern, what, RUN_TIMEOUT_MS) end

-- Appends N events one a call to a new node's stream (packing off), waits
-- for its last head; returns the node id.
local function fill(d, tls)
  local node = assert(odo.node { dir = d, tls = tls, sync = false, on_error = common.fail,
    tune_allocator = true, policy = { pack_slice = 0 } })
  local data = ("x"):rep(DATA_BYTES)
  local t0 = uv.hrtime()
  for i = 1, N do
    assert(node:append(nil, { type = "bench", data = data }))
    if i % 100 == 0 then uv.run("nowait") end
  end
  local id, store = node.id, node.store
  run_until(function() return store:head_find(id, N) ~= nil end, RUN_TIMEOUT_MS, "signing the source's heads")
  log("filled %d events one a call in %.2f s", N, (uv.hrtime() - t0) / 1e9)
  node:close()
  return id
end

-- Packs the store in folder d to the end; returns events/s and CPU us/event.
local function pack(d, id)
  local s = assert(Store.open(d .. "/store"))
  local t0, c0 = uv.hrtime(), os.clock()
  local total = 0
  repeat
    local n, more = s:pack(id, 5000)
    assert(n, more)
    total = total + n
  until not more
  local secs, cpu = (uv.hrtime() - t0) / 1e9, os.clock() - c0
  assert(s:verify(id))
  assert(total == N - N % 1000, ("packed %d events of %d"):format(total, N))
  t0 = uv.hrtime()
  if not NO_COMPACT then assert(s:compact_packed(id, 1, N)) end
  s:close()
  return total / secs, cpu / total * 1e6, (uv.hrtime() - t0) / 1e9
end

-- One catch-up from the source folder d; returns seconds and the source's
-- CPU seconds.
local function run(d, id, pki)
  local env = common.peer_env()
  env[#env + 1] = "ODO_BENCH_PACK_SLICE=0"
  local source = spawn("lua5.4", { common.root .. "/bench/sync_peer.lua", "source", d, pki.source.ca,
    pki.source.cert, pki.source.key }, env, true)
  local port, sid, last, hash = expect(source, "^port (%d+) (%x+) (%d+) (%S+)$", "the source's start")
  assert(sid == id and tonumber(last) == N, "the source holds the wrong stream: " .. source.lines[1])
  local rep = common.tmpdir() .. "/replica"
  local replica = spawn("lua5.4", { common.root .. "/bench/sync_peer.lua", "replica", rep, pki.replica.ca,
    pki.replica.cert, pki.replica.key, port, id, tostring(N), "default", "0" }, common.peer_env())
  local secs, rlast, rhash = expect(replica, "^caught_up ([%d.]+) (%d+) (%S+) ", "the replica's catch-up")
  assert(tonumber(rlast) == N and rhash == hash, "the replica's chain differs from the source's")
  common.reap(replica, "the replica", RUN_TIMEOUT_MS)
  source.send("quit")
  local smain, sother = expect(source, "^cpu (%S+) (%S+)$", "the source's end")
  common.reap(source, "the source", RUN_TIMEOUT_MS)
  shell("rm -rf " .. q(rep))
  return tonumber(secs), tonumber(smain) + tonumber(sother)
end

common.main("bench/pack.lua", function()
  local dir = common.tmpdir()
  local pki = common.make_pki(dir, { "source", "replica" })
  local unpacked, packed = dir .. "/unpacked", dir .. "/packed"
  local id = fill(unpacked, pki.source)
  shell(("cp -a %s %s"):format(q(unpacked), q(packed)))
  local pack_rate, pack_cpu, compact_s = pack(packed, id)
  print(("pack_rate: %.0f events/s, %.3f us CPU/event (%d events)"):format(pack_rate, pack_cpu, N - N % 1000))
  print(("compact_s: %.2f"):format(compact_s))
  local best = {}
  for round = 1, ROUNDS do
    for _, v in ipairs({ { "unpacked", unpacked }, { "packed", packed } }) do
      local secs, cpu = run(v[2], id, pki)
      log("round %d %s: %.0f events/s, source CPU %.2f s", round, v[1], N / secs, cpu)
      if not best[v[1]] or secs < best[v[1]].secs then best[v[1]] = { secs = secs, cpu = cpu } end
    end
  end
  for _, name in ipairs({ "unpacked", "packed" }) do
    local r = best[name]
    print(("%s: %.0f events/s, source %.3f us CPU/event"):format(name, N / r.secs, r.cpu / N * 1e6))
  end
  print(("rate_ratio: %.2f"):format(best.unpacked.secs / best.packed.secs))
  print(("source_cpu_ratio: %.2f"):format(best.packed.cpu / best.unpacked.cpu))
end, KEEP)
