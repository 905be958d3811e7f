-- bench/profile_sync.lua [OUT] - where a replica's catch-up spends its CPU:
-- bench/sync.lua's catch-up (a source node holding N events of 100 bytes,
-- a new replica node over mutual TLS on loopback, default policy, no
-- sync), with the replica process run under `perf record -g` (Debian
-- linux-perf). Writes the profile to OUT (default build/perf-sync.data),
-- then prints the replica's "caught_up" line, its samples per thread (the
-- first is the main thread, the others LevelDB's), its self time per
-- library, and the top TOP symbols by self time (`perf report
-- --no-children --sort dso,symbol`). Libraries without symbols (LevelDB,
-- OpenSSL's assembly) show as addresses.
--
-- Environment: ODO_BENCH_EVENTS (N, default 1000000), ODO_BENCH_TOP
-- (default 25), ODO_CPATH.
package.path = (arg[0]:match("^(.*)/bench/[^/]*$") or ".") .. "/?.lua;" .. package.path
local common = require "bench.common" -- and with it the paths to odo's modules

local N = math.tointeger(tonumber(os.getenv("ODO_BENCH_EVENTS"))) or 1000000
local TOP = math.tointeger(tonumber(os.getenv("ODO_BENCH_TOP"))) or 25
local OUT = arg[1] or (common.root .. "/build/perf-sync.data")
local MS = 600000

local q = common.q
local catch_up, report

local function main()
  local dir = common.tmpdir()
  local pki = common.make_pki(dir, { "source", "replica" })
  local id = common.fill_node(dir .. "/source", pki.source, N, 100, 1000, 1, MS)
  local peer = common.root .. "/bench/sync_peer.lua"
  local source = common.spawn("lua5.4", { peer, "source", dir .. "/source", pki.source.ca, pki.source.cert,
    pki.source.key }, common.peer_env(), true)
  local port = common.expect(source, "^port (%d+) ", "the source's start", 60000)
  local replica = common.spawn("perf", { "record", "-g", "-q", "-o", OUT, "--", "lua5.4", peer, "replica",
    dir .. "/replica", pki.replica.ca, pki.replica.cert, pki.replica.key, port, id, tostring(N), "default", "0" },
    common.peer_env())
  catch_up = common.expect(replica, "^(caught_up .*)$", "the replica's catch-up", MS)
  common.reap(replica, "perf record", MS)
  source.send("quit")
  common.reap(source, "the source", 60000)
  local function perf_report(sort, n)
    return common.shell(("perf report -i %s --stdio --no-children --sort %s -g none 2>/dev/null"
      .. " | grep '%%' | sed 's/[ -]*$//' | head -n %d"):format(q(OUT), sort, n))
  end
  report = "samples per thread:\n"
    .. common.shell(("perf script -i %s -F tid 2>/dev/null | sort | uniq -c | sort -nr"):format(q(OUT)))
    .. "self time per library:\n" .. perf_report("dso", 12) .. "top symbols:\n" .. perf_report("dso,symbol", TOP)
end

common.main("bench/profile_sync.lua", main)
print(catch_up)
io.write(report)
