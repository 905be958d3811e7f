-- bench/sync_peer.lua - one node of bench/sync.lua, in its own process.
--
--   lua5.4 bench/sync_peer.lua source DIR CA CERT KEY
-- Runs the node in DIR (already filled) listening on 127.0.0.1 (a free
-- port), without sync. Prints at once
--   port <port> <node id> <last revision> <hex hash of the last event>
-- then reads commands on stdin, one a line:
--   live N   appends N events, one per millisecond on a fixed schedule
--            (type "live", data: uv.hrtime() just before the append, as a
--            decimal string); prints "live_sent N" when done
--   live_stop  ends a "live N" early: its "live_sent <count sent>" follows
--   quit     prints "cpu <main> <other>" (CPU seconds, user + system, of
--            the main thread and of the others: LevelDB's compaction),
--            closes the node and exits; so does the end of stdin, silently
--
--   lua5.4 bench/sync_peer.lua replica DIR CA CERT KEY PORT SOURCE_ID N VERIFY LIVE [DURABLE]
-- From just before it opens a node in DIR (a new folder) with the peer
-- 127.0.0.1:PORT, without sync, times the catch-up of stream SOURCE_ID
-- until the node is told it caught up at revision N ("caught_up" event)
-- and its store holds N (polled every 10 ms as well, in case the event
-- never comes). VERIFY: "default" (the policy's default), "on" or "off"
-- (policy verify_signatures); DURABLE "1": policy replica_sync (every
-- batch it stores is fsynced), "0" or absent: not. Prints first
--   started <uv.hrtime() in ns just before the node opens>
-- then
--   also_caught_up <uv.hrtime() in ns>   (with ODO_BENCH_ALSO="STREAM N",
--             once STREAM, another of the source's streams, is caught up
--             at N; any time after "started")
--   caught_up <seconds> <last revision> <hex hash of the last event> <how>
--             <cipher> <cpu main> <cpu other>
-- (one line) where how is "event" or "poll" (what noticed it first),
-- cipher the connection's TLS suite, and the CPU seconds as for "quit"
-- above. With LIVE 0 it then exits. With LIVE 1 it subscribes to
-- SOURCE_ID from "live", prints "ready" and reads commands on stdin:
--   expect N  prints "expecting N" and measures the next N events: once
--             they arrived, prints
--             live <count> <p50 ms> <p99 ms> <max ms> <mean ms>
--             of uv.hrtime() at the handler minus the hrtime in each
--             event's data (both processes share the machine's
--             monotonic clock)
--   record    from now on keeps each live event's send time and latency
--   window T0 T1  of the events recorded whose send time (uv.hrtime) is
--             within T0..T1 ns, prints
--             window <count> <p50 ms> <p99 ms> <max ms> <mean ms>
--             (all zero when none); stops recording
--   quit      (or the end of stdin) closes the node and exits
--
--   lua5.4 bench/sync_peer.lua fleet DIR CA CERT KEY PORT STREAMS EVENTS
-- A new node in DIR with the peer 127.0.0.1:PORT (no sync, default
-- policy) replicates every stream the peer offers; times from just before
-- the node opens until the catalogues received named STREAMS streams
-- ("catalogue"), until the first and the last of STREAMS streams were
-- caught up at EVENTS, then prints
--   fleet <catalogue s> <first s> <last s> <streams held at EVENTS>
--         <cpu main> <cpu other>
-- and exits.
--
-- ODO_BENCH_TRACE=1 (source, fleet): each call into the sync engine is
-- timed (wall and process CPU); "quit" (the fleet: its end) prints them
-- per method on stderr.
-- ODO_BENCH_FLEET_PROGRESS=1 (fleet): every 250 ms a "progress" line on
-- stderr (streams named, subscribed to and caught up, events received, CPU,
-- the received batches on their way to the disk).
-- ODO_BENCH_LIVE_TRACE=DIR (source, replica): the times of each live
-- event's steps (bench/live_trace.lua) go to DIR/source.trace and
-- DIR/replica-<pid>.trace when the process quits.
-- ODO_BENCH_LUAPROF=1 (fleet, source): its Lua code is sampled
-- (bench/luaprof.lua); the top lines and functions go to stderr at the end.
--
-- Any error reported by the node fails the run: a message on stderr and
-- exit status 1. Gives up after 10 minutes.
package.path = (arg[0]:match("^(.*)/bench/[^/]*$") or ".") .. "/?.lua;" .. package.path
local common = require "bench.common" -- and with it the paths to odo's modules
local odo = require "odo"
local uv = require "luv"

local MODE = arg[1]
local USAGE = "usage: lua5.4 bench/sync_peer.lua source DIR CA CERT KEY\n"
  .. "       lua5.4 bench/sync_peer.lua replica DIR CA CERT KEY PORT SOURCE_ID N VERIFY LIVE [DURABLE]\n"
  .. "       lua5.4 bench/sync_peer.lua fleet DIR CA CERT KEY PORT STREAMS EVENTS"
assert((MODE == "source" and #arg == 5) or (MODE == "replica" and (#arg == 10 or #arg == 11))
  or (MODE == "fleet" and #arg == 8), USAGE)
local DIR, TLS = arg[2], { ca = arg[3], cert = arg[4], key = arg[5] }

local fail, protect = common.fail, common.protect
-- ODO_BENCH_VERIFY_THREADS=N: the node's policy verify_threads (the
-- commit queue's verifier threads; default: one per core beside the loop's)
local VERIFY_THREADS = math.tointeger(tonumber(os.getenv("ODO_BENCH_VERIFY_THREADS")))
if VERIFY_THREADS then
  local new_node = odo.node
  odo.node = function(opts)
    opts.policy = opts.policy or {}
    opts.policy.verify_threads = VERIFY_THREADS
    return new_node(opts)
  end
end
-- ODO_BENCH_METRICS=HOST:PORT: the node also serves GET /metrics there
-- (bench/metrics.lua scrapes it while the catch-up runs)
local METRICS = os.getenv("ODO_BENCH_METRICS")
if METRICS then
  local new_node = odo.node
  odo.node = function(opts)
    opts.metrics = METRICS
    return new_node(opts)
  end
end

-- ODO_BENCH_SOCKBUF=BYTES (source, replica): policy.peer_socket_buffer
local SOCKBUF = tonumber(os.getenv("ODO_BENCH_SOCKBUF"))
-- ODO_BENCH_BULK_RATE=BYTES (source): policy.sync_bulk_bytes_per_s
local BULK_RATE = tonumber(os.getenv("ODO_BENCH_BULK_RATE"))
-- ODO_BENCH_PACK_SLICE=N (source): policy.pack_slice (0: the source
-- serves its records as they are, packing none; bench/pack.lua)
local PACK_SLICE = tonumber(os.getenv("ODO_BENCH_PACK_SLICE"))

local function say(...)
  io.stdout:write(table.concat({ ... }, " "), "\n")
  io.stdout:flush()
end

local function hex(s)
  return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end))
end

local function last_hash(node, id)
  local st = node.store:stream(id)
  if not st or st.last == 0 then return 0, "-" end
  local evs = assert(node:read(id, st.last, st.last))
  return st.last, hex(evs[1].hash)
end

-- CPU seconds (user + system) of this process so far: "<main> <other>",
-- its main thread and its other threads (LevelDB's compaction).
local function thread_cpu()
  local main, other = common.thread_cpu(uv.os_getpid())
  return ("%.2f %.2f"):format(main or 0, other or 0)
end

local node
local handles = {} -- luv handles this script opened
local function handle(h)
  handles[#handles + 1] = h
  return h
end

local deadline = handle(uv.new_timer())
deadline:start(600000, 0, function() fail("no end within 10 minutes") end)

-- Calls fn(line) for each line on stdin (protected); the end of stdin
-- stops the loop.
local function commands(fn)
  local stdin = handle(uv.new_pipe(false))
  stdin:open(0)
  local feed = common.line_splitter(fn)
  stdin:read_start(function(err, data)
    protect(function()
      if err or not data then return uv.stop() end
      feed(data)
    end)
  end)
end

-- ---- the source -------------------------------------------------------------------

local stop_live -- ends the running "live N" early, when one runs
local trace_dump -- with ODO_BENCH_TRACE=1: prints the engine calls' times
local source_prof = os.getenv("ODO_BENCH_LUAPROF") == "1" and MODE == "source" and require "bench.luaprof"()
local LIVE_TRACE = os.getenv("ODO_BENCH_LIVE_TRACE")
local live_trace = LIVE_TRACE and require "bench.live_trace"
local trace_done -- with ODO_BENCH_LIVE_TRACE: writes this process's trace

-- With ODO_BENCH_TRACE=1: each call of the node into its sync engine is
-- timed, wall and CPU (process) ms; trace_dump prints them on stderr.
local function trace_engine()
  if os.getenv("ODO_BENCH_TRACE") ~= "1" then return end
  local real = node.sync.engine
  local hist = {}
  node.sync.engine = setmetatable({}, { __index = function(_, k)
    return function(_, ...)
      local t, c = uv.hrtime(), os.clock()
      local r = table.pack(real[k](real, ...))
      local ms = (uv.hrtime() - t) / 1e6
      local cms = (os.clock() - c) * 1e3
      local h = hist[k] or { n = 0, sum = 0, max = 0, over5 = 0, cmax = 0, csum = 0 }
      hist[k] = h
      h.n, h.sum, h.max = h.n + 1, h.sum + ms, math.max(h.max, ms)
      h.cmax, h.csum = math.max(h.cmax, cms), h.csum + cms
      if ms > 5 then h.over5 = h.over5 + 1 end
      return table.unpack(r, 1, r.n)
    end
  end })
  trace_dump = function()
    for k, h in pairs(hist) do
      io.stderr:write(("trace %s: %d calls, wall %.1f ms (max %.1f, %d over 5 ms), CPU %.1f ms (max %.1f)\n")
        :format(k, h.n, h.sum, h.max, h.over5, h.csum, h.cmax))
    end
  end
end

local function append_live(n)
  local sent, t0 = 0, uv.hrtime()
  local timer = handle(uv.new_timer())
  stop_live = function() n = sent end
  timer:start(1, 1, function()
    protect(function()
      local due = math.min(n, (uv.hrtime() - t0) // 1000000 + 1)
      while sent < due do
        sent = sent + 1
        assert(node:append(nil, { type = "live", data = tostring(uv.hrtime()) }))
      end
      if sent == n then
        timer:stop()
        stop_live = nil
        say("live_sent", n)
      end
    end)
  end)
end

local function run_source()
  node = assert(odo.node { dir = DIR, tls = TLS, listen = "127.0.0.1:0", sync = false, on_error = fail,
    tune_allocator = true, policy = { peer_socket_buffer = SOCKBUF, sync_bulk_bytes_per_s = BULK_RATE,
      pack_slice = PACK_SLICE } })
  trace_engine()
  if live_trace then
    local dump = live_trace.source(node, require "odo.transport")
    trace_done = function() dump(LIVE_TRACE .. "/source.trace") end
  end
  local last, hash = last_hash(node, node.id)
  say("port", node.listen.port, node.id, last, hash)
  commands(function(line)
    local n = line:match("^live (%d+)$")
    if n then
      append_live(tonumber(n))
    elseif line == "live_stop" then
      if stop_live then stop_live() end
    elseif line == "quit" then
      if trace_dump then trace_dump() end
      if trace_done then trace_done() end
      if source_prof then source_prof() end
      say("cpu", thread_cpu())
      uv.stop()
    else
      error("unknown command: " .. line)
    end
  end)
end

-- ---- the replica -----------------------------------------------------------------

local function run_replica()
  local port, source, n, verify, live = tonumber(arg[6]), arg[7], tonumber(arg[8]), arg[9], arg[10] == "1"
  assert(port and n and (verify == "default" or verify == "on" or verify == "off")
    and (arg[10] == "0" or arg[10] == "1"), USAGE)
  local durable = arg[11] == "1"
  assert(arg[11] == nil or arg[11] == "0" or durable, USAGE)
  local policy = nil
  if verify ~= "default" then policy = { verify_signatures = verify == "on" } end
  if durable then
    policy = policy or {}
    policy.replica_sync = true
  end
  if SOCKBUF then
    policy = policy or {}
    policy.peer_socket_buffer = SOCKBUF
  end
  local t0, done = uv.hrtime(), false
  local poll = handle(uv.new_timer())
  local function finish(how)
    if done then return end
    local st = node.store:stream(source)
    if not st or st.last < n then
      if how == "event" then
        error(("told it caught up, but the store holds %s of %d events"):format(st and st.last or 0, n))
      end
      return
    end
    done = true
    local secs = (uv.hrtime() - t0) / 1e9
    poll:stop()
    local last, hash = last_hash(node, source)
    local cipher = "?"
    pcall(function() cipher = node.swarm:active(source).conn:info().cipher end)
    say("caught_up", ("%.6f"):format(secs), last, hash, how, cipher, thread_cpu())
    if not live then return uv.stop() end
    local lat, want = {}, 0
    local recorded -- with "record": {send time, latency} of each live event
    local tr = live_trace and live_trace.replica(node, require "odo.transport", source)
    if tr then trace_done = function() tr.dump(("%s/replica-%d.trace"):format(LIVE_TRACE, uv.os_getpid())) end end
    node:subscribe(source, "live", function(batch)
      local now = uv.hrtime()
      for _, ev in ipairs(batch) do
        if tr then tr.delivered(ev, now) end
        local sent = tonumber(ev.data)
        lat[#lat + 1] = (now - sent) / 1e6
        if recorded then recorded[#recorded + 1] = { sent, lat[#lat] } end
      end
      if want > 0 and #lat >= want then
        table.sort(lat)
        local sum = 0
        for _, x in ipairs(lat) do sum = sum + x end
        say("live", #lat, ("%.3f %.3f %.3f %.3f"):format(common.percentile(lat, 0.5), common.percentile(lat, 0.99),
          lat[#lat], sum / #lat))
        lat, want = {}, 0
      end
    end)
    commands(function(line)
      local count = line:match("^expect (%d+)$")
      if count then
        lat, want = {}, tonumber(count)
        say("expecting", count)
      elseif line == "record" then
        recorded = {}
      elseif line:match("^window ") then
        local from, to = line:match("^window (%d+) (%d+)$")
        from, to = assert(tonumber(from), "window T0 T1"), assert(tonumber(to), "window T0 T1")
        local w, sum = {}, 0
        for _, r in ipairs(recorded or {}) do
          if r[1] >= from and r[1] <= to then
            w[#w + 1] = r[2]
            sum = sum + r[2]
          end
        end
        recorded = nil
        table.sort(w)
        say("window", #w, ("%.3f %.3f %.3f %.3f"):format(common.percentile(w, 0.5) or 0,
          common.percentile(w, 0.99) or 0, w[#w] or 0, #w > 0 and sum / #w or 0))
      elseif line == "quit" then
        if trace_done then trace_done() end
        uv.stop()
      else
        error("unknown command: " .. line)
      end
    end)
    say("ready")
  end
  say("started", ("%d"):format(t0))
  node = assert(odo.node {
    dir = DIR, tls = TLS, peers = { "127.0.0.1:" .. port }, sync = false, policy = policy, on_error = fail,
    tune_allocator = true,
  })
  node:on("caught_up", function(stream, rev)
    if stream == source and rev >= n then finish("event") end
  end)
  -- ODO_BENCH_ALSO="STREAM N": says when another stream is caught up at N too
  local also, also_n = (os.getenv("ODO_BENCH_ALSO") or ""):match("^(%S+) (%d+)$")
  if also then
    local said = false
    node:on("caught_up", function(stream, rev)
      if stream == also and rev >= tonumber(also_n) and not said then
        said = true
        say("also_caught_up", ("%d"):format(uv.hrtime()))
      end
    end)
  end
  poll:start(10, 10, function() protect(finish, "poll") end)
end

-- ---- a fleet replica --------------------------------------------------------------

local function run_fleet()
  local port, streams, events = tonumber(arg[6]), tonumber(arg[7]), tonumber(arg[8])
  assert(port and streams and events, USAGE)
  local t0 = uv.hrtime()
  local offered, n_offered, t_cat = {}, 0, nil
  local caught, n_caught, t_first = {}, 0, nil
  local function secs() return (uv.hrtime() - t0) / 1e9 end
  local prof = os.getenv("ODO_BENCH_LUAPROF") == "1" and require "bench.luaprof"()
  local function finish()
    if prof then prof() end
    if trace_dump then trace_dump() end
    local held = 0
    for _, st in ipairs(node.store:streams()) do
      if not st.own and st.last == events then held = held + 1 end
    end
    say("fleet", ("%.6f %.6f %.6f"):format(t_cat, t_first, secs()), held, thread_cpu())
    uv.stop()
  end
  node = assert(odo.node { dir = DIR, tls = TLS, peers = { "127.0.0.1:" .. port }, sync = false, on_error = fail })
  trace_engine()
  local n_events, n_subs = 0, 0
  if os.getenv("ODO_BENCH_FLEET_PROGRESS") == "1" then
    -- every 250 ms on stderr: streams named, subscribed to, caught up; events received; CPU
    local tick = handle(uv.new_timer())
    tick:start(250, 250, function()
      local bytes, writes = node.sync.engine:backlog()
      io.stderr:write(("progress %.2f s: offered %d subscribed %d caught_up %d events %d cpu %s backlog %d KiB %d"
        .. " writes\n"):format(secs(), n_offered, n_subs, n_caught, n_events, thread_cpu(), bytes // 1024, writes))
    end)
  end
  node:on("replicated", function(_, _, _, count) n_events = n_events + (count or 0) end)
  node:on("upstream", function() n_subs = n_subs + 1 end)
  node:on("catalogue", function(_, entries)
    for _, e in ipairs(entries) do
      if not offered[e.id] and e.id:find("/", 1, true) then
        offered[e.id] = true
        n_offered = n_offered + 1
      end
    end
    if not t_cat and n_offered >= streams then t_cat = secs() end
  end)
  node:on("caught_up", function(stream, rev)
    if rev >= events and not caught[stream] and stream:find("/", 1, true) then
      caught[stream] = true
      n_caught = n_caught + 1
      t_first = t_first or secs()
      if n_caught >= streams then finish() end
    end
  end)
end

-- ---- the loop ------------------------------------------------------------------------

local run = { source = run_source, replica = run_replica, fleet = run_fleet }
local ok, err = xpcall(run[MODE], debug.traceback)
if not ok then fail(err) end
if not common.failure() then uv.run() end
if node then
  local ok_close, err_close = pcall(node.close, node)
  if not ok_close then fail(err_close) end
end
for _, h in ipairs(handles) do
  if not h:is_closing() then h:close() end
end
-- let the BYEs go out; whatever is still open after 2 s is closed then
local guard = uv.new_timer()
guard:start(2000, 0, function() uv.walk(function(h) if not h:is_closing() then h:close() end end) end)
guard:unref()
uv.run()
if not guard:is_closing() then guard:close() end
common.close_loop()
if common.failure() then
  io.stderr:write("sync_peer ", MODE, ": ", common.failure(), "\n")
  os.exit(1)
end
