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
local root = arg[0]:match("^(.*)/bench/[^/]*$") or "."
package.path = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. package.path
local cpath = os.getenv("ODO_CPATH")
if cpath == nil or cpath == "" then cpath = root .. "/build/?.so" end
package.cpath = cpath .. ";" .. package.cpath
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

local function shell(cmd)
  local p = io.popen("(" .. cmd .. ") 2>&1")
  local out = p:read("a")
  if not p:close() then error(("%s failed:\n%s"):format(cmd, out)) end
  return out
end

local function q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

-- ---- processes and the loop ---------------------------------------------------

local failure -- the first error raised in a callback
local function fail(err)
  failure = failure or err
  uv.stop()
end
local function protect(fn, ...)
  local ok, err = xpcall(fn, debug.traceback, ...)
  if not ok then fail(err) end
end

-- Runs the loop until cond() holds; raises on a callback's error or after
-- ms milliseconds.
local function run_until(cond, ms, what)
  local timer, late = uv.new_timer(), false
  timer:start(ms, 0, function() late = true end)
  while not cond() and not failure and not late do uv.run("once") end
  timer:close()
  if failure then error(failure, 0) end
  if late then error(("%s did not finish within %d s"):format(what, ms // 1000), 0) end
end

local children = {} -- live processes: [handle] = true

-- Starts a process; its stdout lines go to `lines`, its stderr to ours.
-- Returns {pid, lines, exited = {code, signal} once it has exited}.
local function spawn(file, args, env)
  local p = { lines = {} }
  local out = uv.new_pipe(false)
  local partial = ""
  local handle, pid = uv.spawn(file, { args = args, env = env, stdio = { nil, out, 2 } }, function(code, signal)
    p.exited = { code = code, signal = signal }
  end)
  if not handle then
    out:close()
    error(("cannot start %s: %s"):format(file, tostring(pid)), 0)
  end
  p.handle, p.pid = handle, math.tointeger(pid)
  children[handle] = true
  out:read_start(function(err, data)
    if err or not data then
      if not out:is_closing() then out:close() end
      p.eof = true
      return
    end
    partial = partial .. data
    for line in partial:gmatch("([^\n]*)\n") do p.lines[#p.lines + 1] = line end
    partial = partial:match("[^\n]*$")
  end)
  return p
end

-- Waits for the process to exit and for its stdout to end.
local function reap(p, what)
  run_until(function() return p.exited and p.eof end, RUN_TIMEOUT_MS, what)
  children[p.handle] = nil
  if not p.handle:is_closing() then p.handle:close() end
  if p.exited.code ~= 0 or p.exited.signal ~= 0 then
    error(("%s failed (exit %d, signal %d): %s"):format(what, p.exited.code, p.exited.signal,
      table.concat(p.lines, " | ")), 0)
  end
end

-- The largest RssAnon of process `pid` (kB), sampled every 20 ms until
-- the returned function is called.
local function rss_sampler(get_pid)
  local peak = -1
  local function sample()
    local pid = get_pid()
    local f = pid and io.open("/proc/" .. pid .. "/status")
    if not f then return end
    local kb = tonumber(f:read("a"):match("RssAnon:%s*(%d+)"))
    f:close()
    if kb and kb > peak then peak = kb end
  end
  local timer = uv.new_timer()
  timer:start(20, 20, sample)
  return function()
    sample()
    timer:close()
    return peak
  end
end

-- ---- certificates -----------------------------------------------------------------

local dir = shell("mktemp -d /tmp/odo-bench.XXXXXX"):match("[^\n]+")
local pki = {}

local function make_pki()
  shell(("cd %s && openssl req -x509 -newkey ed25519 -nodes -keyout ca.key -out ca.pem"
    .. " -subj /CN=bench-ca -days 2"):format(q(dir)))
  for _, name in ipairs { "sender", "receiver" } do
    shell(("cd %s && openssl req -newkey ed25519 -nodes -keyout %s.key -subj /CN=%s"
      .. " | openssl x509 -req -CA ca.pem -CAkey ca.key -CAcreateserial -out %s.pem -days 2")
      :format(q(dir), name, name, name))
    pki[name] = { ca = dir .. "/ca.pem", cert = dir .. "/" .. name .. ".pem", key = dir .. "/" .. name .. ".key" }
  end
end

-- ---- one run of each ---------------------------------------------------------------

local function run_pump(n, f)
  local p = spawn(PUMP, { pki.receiver.ca, pki.receiver.cert, pki.receiver.key,
    pki.sender.cert, pki.sender.key, tostring(n), tostring(f) })
  local stop_rss = rss_sampler(function()
    local l = p.lines[1]
    return l and l:match("^server_pid (%d+)$")
  end)
  local ok, err = pcall(reap, p, "tls_pump")
  local rss = stop_rss()
  if not ok then error(err, 0) end
  local frames, bytes, secs, cipher = (p.lines[3] or ""):match("^(%d+) (%d+) ([%d.]+) (%S+)$")
  local sframes, _, scipher = (p.lines[2] or ""):match("^server (%d+) (%d+) (%S+)")
  assert(frames and tonumber(sframes) == n, "unexpected pump output: " .. table.concat(p.lines, " | "))
  return { secs = tonumber(secs), frames = tonumber(frames), bytes = tonumber(bytes), rss = rss,
    cipher = cipher, peer_cipher = scipher, pid = (p.lines[1] or ""):match("%d+") }
end

local function peer_env()
  local env = {}
  for k, v in pairs(uv.os_environ()) do
    if k ~= "LUA_PATH" and k ~= "LUA_CPATH" and k ~= "LUA_PATH_5_4" and k ~= "LUA_CPATH_5_4" then
      env[#env + 1] = k .. "=" .. v
    end
  end
  env[#env + 1] = ("LUA_PATH=%s/lua/?.lua;%s/lua/?/init.lua;;"):format(root, root)
  env[#env + 1] = ("LUA_CPATH=%s;;"):format(cpath)
  return env
end

local sender_tls
local function run_ours(n, f)
  local peer = spawn("lua5.4", { root .. "/bench/transport_peer.lua", pki.receiver.ca, pki.receiver.cert,
    pki.receiver.key, tostring(n), tostring(f) }, peer_env())
  local stop_rss = rss_sampler(function() return peer.pid end)
  local ok, res = pcall(function()
    run_until(function() return peer.lines[1] or peer.exited end, 30000, "the receiver's start")
    local port = assert(tonumber(peer.lines[1]), "the receiver did not start: " .. table.concat(peer.lines, " | "))
    local t = Transport.new { adapter = adapter, tls = sender_tls, port = 1, protect = protect }
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
    reap(peer, "the receiver")
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
  make_pki()
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

local ok, err = xpcall(main, debug.traceback)
-- clean up whatever is left, even after a failure
for handle in pairs(children) do
  if not handle:is_closing() then
    pcall(handle.kill, handle, "sigterm")
    handle:close()
  end
end
adapter.shutdown()
uv.walk(function(h) if not h:is_closing() then h:close() end end)
uv.run() -- let closing handles finish before the process exits
os.execute("rm -rf " .. q(dir))
if not ok then
  io.stderr:write("bench/transport.lua: ", tostring(err), "\n")
  os.exit(1)
end

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
