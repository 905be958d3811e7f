-- bench/transport.lua PUMP - bulk frames over TLS between two processes on
-- loopback, against a raw OpenSSL TLS pump in C (bench/tls_pump.c) doing
-- the same work in the same invocation.
--
-- Ours: this process dials a receiver in its own process
-- (bench/transport_peer.lua), both on odo.transport with the luv adapter
-- and TLS contexts from test certificates (an Ed25519 CA, two nodes signed
-- by it). After HELLO the sender sends N frames of type 0x20, each F bytes
-- on the wire (5-byte header and F - 5 bytes of payload), as fast as
-- backpressure allows: while conn:send() returns true, then again on
-- on_drain. The receiver counts them in on_message and replies with one
-- small frame; the clock runs from the first send to that reply. The pump
-- moves the same frames with the same suite and record sizes.
--
-- Prints MB/s (10^6 bytes of frames a second) and frames/s of both at
-- 4 KiB frames (for context) and at F (64 KiB), the suites both ends
-- negotiated, the receivers' peak RssAnon (sampled from /proc every
-- 20 ms), and last `ratio: X`, ours / pump at F. Best of alternating runs.
--
-- Environment: ODO_BENCH_FRAMES (N, default about 2 GB / F),
-- ODO_BENCH_FRAME_BYTES (F, default 65536), ODO_BENCH_ROUNDS (default 3),
-- ODO_BENCH_VERBOSE=1 (each run's MB/s on stderr), ODO_CPATH (where
-- odo/core.so is, default build/?.so).
package.path = (arg[0]:match("^(.*)/bench/[^/]*$") or ".") .. "/?.lua;" .. package.path
local common = require "bench.common" -- and with it the paths to odo's modules
local core = require "odo.core"
local uv = require "luv"
local adapter = require "odo.adapter.luv"
local Transport = require "odo.transport"

local PUMP = assert(arg[1], "usage: lua5.4 bench/transport.lua PUMP_BINARY")
local F = math.tointeger(tonumber(os.getenv("ODO_BENCH_FRAME_BYTES"))) or 65536
local N = math.tointeger(tonumber(os.getenv("ODO_BENCH_FRAMES"))) or math.max(1, (2 << 30) // F)
local ROUNDS = math.tointeger(tonumber(os.getenv("ODO_BENCH_ROUNDS"))) or 3
local VERBOSE = os.getenv("ODO_BENCH_VERBOSE") == "1"
local SMALL = 4096
-- 4 KiB frames cost per frame, not per byte: a quarter of the bytes
local N_SMALL = math.max(1, N * F // 4 // SMALL)
local RUN_TIMEOUT_MS = 300000
assert(F > 5 and F - 4 <= 16 << 20, "ODO_BENCH_FRAME_BYTES must be between 6 and 16 MiB + 4")
assert(N >= 1 and ROUNDS >= 1, "ODO_BENCH_FRAMES and ODO_BENCH_ROUNDS must be positive")

local spawn, reap, rss_sampler, run_until = common.spawn, common.reap, common.rss_sampler, common.run_until
local pki -- the test certificates: an Ed25519 CA, a sender and a receiver

-- ---- one run of each ---------------------------------------------------------------

local function run_pump(n, f)
  local p = spawn(PUMP, { pki.receiver.ca, pki.receiver.cert, pki.receiver.key,
    pki.sender.cert, pki.sender.key, tostring(n), tostring(f) })
  local stop_rss = rss_sampler(function()
    local l = p.lines[1]
    return l and l:match("^server_pid (%d+)$")
  end)
  local ok, err = pcall(reap, p, "tls_pump", RUN_TIMEOUT_MS)
  local rss = stop_rss()
  if not ok then error(err, 0) end
  local frames, bytes, secs, cipher = (p.lines[3] or ""):match("^(%d+) (%d+) ([%d.]+) (%S+)$")
  local sframes, _, scipher = (p.lines[2] or ""):match("^server (%d+) (%d+) (%S+)")
  assert(frames and tonumber(sframes) == n, "unexpected pump output: " .. table.concat(p.lines, " | "))
  return { secs = tonumber(secs), frames = tonumber(frames), bytes = tonumber(bytes), rss = rss,
    cipher = cipher, peer_cipher = scipher, pid = (p.lines[1] or ""):match("%d+") }
end

local sender_tls
local function run_ours(n, f)
  local peer = spawn("lua5.4", { common.root .. "/bench/transport_peer.lua", pki.receiver.ca, pki.receiver.cert,
    pki.receiver.key, tostring(n), tostring(f) }, common.peer_env())
  local stop_rss = rss_sampler(function() return peer.pid end)
  local ok, res = pcall(function()
    run_until(function() return peer.lines[1] or peer.exited end, 30000, "the receiver's start")
    local port = assert(tonumber(peer.lines[1]), "the receiver did not start: " .. table.concat(peer.lines, " | "))
    local t = Transport.new { adapter = adapter, tls = sender_tls, port = 1, protect = common.protect,
      tune_allocator = true }
    local payload = ("x"):rep(f - 5)
    local sent, t0, t1, closed, cipher = 0, nil, nil, nil, nil
    local function pump(conn)
      while sent < n do
        local more, serr = conn:send(0x20, payload)
        if more == nil then error("send failed: " .. tostring(serr)) end
        sent = sent + 1
        if not more then return end
      end
    end
    t:dial("127.0.0.1", port, {
      on_error = function(e) error("cannot dial the receiver: " .. tostring(e)) end,
      on_hello = function(conn)
        cipher = conn:info().cipher
        t0 = uv.hrtime()
        pump(conn)
      end,
      on_drain = pump,
      on_message = function(conn, typ)
        assert(typ == 0x21 and sent == n, "an unexpected reply")
        t1 = uv.hrtime()
        conn:bye("normal", "done")
      end,
      on_close = function(_, info) closed = info end,
    })
    run_until(function() return closed end, RUN_TIMEOUT_MS, "our run")
    if not t1 then error("the connection closed before the reply: " .. tostring(closed.reason), 0) end
    t:close()
    reap(peer, "the receiver", RUN_TIMEOUT_MS)
    local frames, bytes, pcipher = (peer.lines[2] or ""):match("^done (%d+) (%d+) (%S+)")
    assert(tonumber(frames) == n and tonumber(bytes) == n * f,
      "unexpected receiver output: " .. table.concat(peer.lines, " | "))
    return { secs = (t1 - t0) / 1e9, frames = n, bytes = n * f, cipher = cipher, peer_cipher = pcipher,
      pid = peer.pid }
  end)
  local rss = stop_rss()
  if not ok then error(res, 0) end
  res.rss = rss
  return res
end

-- ---- the benchmark -----------------------------------------------------------------

local function mbps(r) return r.bytes / r.secs / 1e6 end

local function best(a, b)
  if not a or mbps(b) > mbps(a) then return b end
  return a
end

local results = {}
local function main()
  pki = common.make_pki(common.tmpdir(), { "sender", "receiver" })
  sender_tls = assert(core.tls_context(pki.sender))
  for _ = 1, ROUNDS do
    for _, size in ipairs { { "pump", F, N, run_pump }, { "ours", F, N, run_ours },
                             { "pump_4k", SMALL, N_SMALL, run_pump }, { "ours_4k", SMALL, N_SMALL, run_ours } } do
      local name, f, n, run = size[1], size[2], size[3], size[4]
      local r = run(n, f)
      if VERBOSE then
        io.stderr:write(("%s: %.0f MB/s in %.2f s (receiver pid %s)\n")
          :format(name, r.bytes / r.secs / 1e6, r.secs, r.pid))
      end
      local prev = results[name]
      results[name] = best(prev, r)
      results[name].rss = math.max(r.rss, prev and prev.rss or -1)
    end
  end
end

common.main("bench/transport.lua", main)

local function mb(kb) return kb >= 0 and ("%.1f MB"):format(kb / 1024) or "unknown" end
local function line(name, label, r)
  print(("%s: %.0f MB/s, %.0f frames/s  (%s; receiver peak RssAnon %s)")
    :format(name, mbps(r), r.frames / r.secs, label, mb(r.rss)))
end
local o, p, o4, p4 = results.ours, results.pump, results.ours_4k, results.pump_4k
print(("frames: %d of %d bytes (%.2f GB) per run; for context %d of %d bytes (%.2f GB); best of %d alternating rounds")
  :format(N, F, N * F / 1e9, N_SMALL, SMALL, N_SMALL * SMALL / 1e9, ROUNDS))
print(("cipher: ours %s (sender) / %s (receiver); pump %s (client) / %s (server)%s")
  :format(o.cipher, o.peer_cipher, p.cipher, p.peer_cipher,
    (o.cipher == p.cipher and o.peer_cipher == p.peer_cipher) and "" or "  MISMATCH"))
line("pump_4k", "raw OpenSSL, 4 KiB frames", p4)
line("ours_4k", "odo.transport on luv, 4 KiB frames", o4)
print(("ratio_4k: %.2f"):format(mbps(o4) / mbps(p4)))
line("pump", ("raw OpenSSL, %d-byte frames"):format(F), p)
line("ours", ("odo.transport on luv, %d-byte frames"):format(F), o)
print(("ratio: %.2f"):format(mbps(o) / mbps(p)))
