-- bench/scale.lua - does the swarm scale? (make bench-scale)
--
-- (a) N real `odo run` processes on 127.0.0.1, each given only node 1 as
--     its --peer (a star seed), each appending 100 events to its own
--     stream: scale_converge_s (last append to every node holding every
--     stream; polled with `odo status`, so a bound within one poll
--     round), peers per node (min/median/max), total RSS, CPU seconds and
--     log lines. N = 10, 30, 100 (and 200 with ODO_LONG=1); ODO_SCALE_N
--     ("10,30") picks others.
-- (b) ODO_SCALE_SIM nodes (default 1000) in this process on the in-memory
--     adapter: real TLS sessions, sync engines, swarms and LevelDB stores
--     (on /dev/shm, tmpfs: appends not synced, LevelDB's write buffers
--     filled only as far as data comes), simulated links and clock.
--     ODO_SCALE_SIM_WRITERS nodes (default 100, spread evenly, the seed
--     among them; all of them at 100 nodes) each append
--     ODO_SCALE_SIM_EVENTS (default 1) events to their stream: simulated and
--     wall time to converge, sync messages (EVENTS batches) and bytes
--     (TLS, all links; and frame payload bytes by type) per event per
--     node (per copy delivered), duplicates (an event received
--     twice at a node), peers per node, the mesh's diameter; then a random
--     10% of the nodes are killed and each surviving writer appends once more:
--     the same again. Also at 100 nodes, as the baseline the 1,000's
--     bytes per event per node are compared with (fan-out stays flat).
--     Each phase prints dials per node by origin and outcome, and catalogue
--     entries per node per stream by cause (bench/README.md says which).
--     ODO_SCALE_DIAL_PEERS sets the nodes' dial_peers.
-- Nothing here is a spec: it prints figures, ratios against the baseline
-- run in the same invocation.
local root = arg[0]:match("^(.*)/bench/[^/]*$") or "."
package.path = root .. "/?.lua;" .. package.path
local common = require "bench.common"
local core = require "odo.core"
local uv = require "luv"

local function median(t)
  local s = {}
  for i, v in ipairs(t) do s[i] = v end
  table.sort(s)
  return s[1], s[math.max(1, (#s + 1) // 2)], s[#s]
end

local function certs(dir, n)
  local ca = { cert = dir .. "/ca.pem", key = dir .. "/ca.key" }
  assert(core.cert_make_ca { cert = ca.cert, key = ca.key })
  local out = {}
  for i = 1, n do
    local c = { ca = ca.cert, cert = ("%s/n%d.pem"):format(dir, i), key = ("%s/n%d.key"):format(dir, i) }
    assert(core.cert_make_node { ca_cert = ca.cert, ca_key = ca.key, cert = c.cert, key = c.key, name = "n" .. i })
    out[i] = c
  end
  return out
end

-- ---- (b) simulated ----------------------------------------------------------------------

-- Breadth-first from every node over active peers: the largest shortest
-- path (the diameter), and whether all are reached.
local function diameter(nodes)
  local by_id, adj = {}, {}
  for i, n in ipairs(nodes) do by_id[n.id] = i end
  for i, n in ipairs(nodes) do
    adj[i] = {}
    for _, p in ipairs(n:peers()) do
      if p.state == "active" and by_id[p.id] then adj[i][#adj[i] + 1] = by_id[p.id] end
    end
  end
  local diam, connected = 0, true
  for s = 1, #nodes do
    local dist, q, h = { [s] = 0 }, { s }, 1
    while q[h] do
      local u = q[h]
      h = h + 1
      for _, v in ipairs(adj[u]) do
        if not dist[v] then
          dist[v] = dist[u] + 1
          q[#q + 1] = v
          if dist[v] > diam then diam = dist[v] end
        end
      end
    end
    if #q < #nodes then connected = false end
  end
  return diam, connected
end

local function rss_mb()
  for line in io.lines("/proc/self/status") do
    local kb = line:match("^VmRSS:%s*(%d+)")
    if kb then return tonumber(kb) / 1024 end
  end
  return 0
end

-- Whether node i of n writes, when `writers` of them do (spread evenly;
-- node 1, the seed, always).
local function writes(i, n, writers)
  return (i - 1) % math.max(1, n // writers) == 0 and (i - 1) // math.max(1, n // writers) < writers
end

local function simulate(n, events, writers)
  writers = math.min(n, writers)
  local memory = require "odo.adapter.memory"
  local odo = require "odo"
  local dir = common.shell("mktemp -d /dev/shm/odo-scale.XXXXXX"):match("[^\n]+")
  local t_certs = uv.hrtime()
  local tls = certs(dir, n)
  t_certs = (uv.hrtime() - t_certs) / 1e9
  local net = memory.new(1000000)
  local bytes, dials = 0, 0
  local connect = net.connect
  net.connect = function(...) dials = dials + 1; return connect(...) end
  local reasons = {} -- why peers left the active or connecting state, counted
  local attempts, dialling = {}, {} -- "origin>outcome" -> dials; node -> address -> origin of the dial under way
  net.tap(function(_, _, data) bytes = bytes + #data; return data end)
  local policy = { heartbeat_interval_ms = 30000, heartbeat_timeout_ms = 60000, tick_ms = 1000,
    backoff_jitter = 0.5, dial_peers = tonumber(os.getenv("ODO_SCALE_DIAL_PEERS") or "") }
  local nodes, alive, have, complete = {}, {}, {}, 0
  local batches, dups = 0, 0
  local by_type = {} -- frame type -> payload bytes received (every frame a layer above the transport takes)
  local Swarm = require "odo.swarm"
  local want = events
  local function host(i) return ("10.%d.%d.%d"):format(i // 65536, (i // 256) % 256, i % 256) end
  for i = 1, n do
    local node = assert(odo.node {
      dir = ("%s/n%d"):format(dir, i), tls = tls[i], adapter = net,
      listen = host(i) .. ":4000", peers = i > 1 and { host(1) .. ":4000" } or nil,
      policy = policy, sync = false,
    })
    nodes[i], alive[i], have[i] = node, true, {}
    node:on("peer", function(_, old, new, reason)
      if new ~= "active" and (old == "active" or old == "connecting") then
        local k = tostring(reason):match("^[%w_ ]+") or "?"
        reasons[k] = (reasons[k] or 0) + 1
      end
    end)
    node.swarm._message = function(sw, conn, t, payload)
      by_type[t] = (by_type[t] or 0) + #payload
      return Swarm._message(sw, conn, t, payload)
    end
    -- why each dial was made: where its address came from (a PEX frame of
    -- a refusal or a sample, the seed, history), or a long-range or repair
    -- dial past the dialling limit, or a retry after a refusal or failure
    local origin, pex_flags = {}, nil
    node.swarm._pex = function(sw, p, payload)
      pex_flags = payload:byte(1)
      Swarm._pex(sw, p, payload)
      pex_flags = nil
    end
    node.swarm.discover = function(sw, h, port, source, limit)
      local key = h .. ":" .. tostring(port)
      local o = source and source.name or "?"
      if o == "pex" then o = pex_flags == 1 and "pex_full" or "pex_sample" end
      if limit then o = limit >= sw.policy.max_peers and "repair" or "long_range" end
      if limit or not origin[key] then origin[key] = o end
      return Swarm.discover(sw, h, port, source, limit)
    end
    node.dial_origin = origin
    node:on("peer", function(info, old, new, reason)
      local key = info.host and info.port and (info.host .. ":" .. info.port)
      local d = key and dialling[i] and dialling[i][key]
      if new == "connecting" and key and old ~= "active" then
        if d and d.active then attempts[d.o .. ">active"] = (attempts[d.o .. ">active"] or 0) + 1 end
        local o = old == "lifesupport" and ("retry_" .. (info.refused or "failed")) or origin[key] or "?"
        dialling[i] = dialling[i] or {}
        dialling[i][key] = { o = o }
      elseif d and old == "connecting" and new == "active" then
        d.active = true -- the outcome: whether it stays, or ends at once refused
      elseif d and (old == "connecting" or old == "active") then
        dialling[i][key] = nil
        local k = d.o .. ">" .. ((d.active and not (reason == "full" or reason == "duplicate")) and "active"
          or tostring(reason))
        attempts[k] = (attempts[k] or 0) + 1
      end
    end)
    node:on("replicated", function(stream, last, _, count, kind)
      if kind == "events" then batches = batches + 1 end
      local h = have[i]
      if (h[stream] or 0) >= last then dups = dups + count end
      if (h[stream] or 0) < want and last >= want then complete = complete + 1 end
      if last > (h[stream] or 0) then h[stream] = last end
    end)
  end
  -- (diagnosis) for stuck (node, stream) pairs: the upstream and what each peer says of the stream
  local function dump_stuck(ns)
    local name = {}
    for i, nd in ipairs(nodes) do name[nd.id] = i end
    local k = 0
    for _, nd in ipairs(ns) do
      local i = name[nd.id]
      for _, w in ipairs(ns) do
        if w.writer and w ~= nd then
          local sid = w.id
          if (have[i][sid] or 0) < want and k < 12 then
            k = k + 1
            local sy = nd.sync
            local up = sy.upstream[sid]
            local line = { ("stuck n%d stream of n%d: have %s upstream %s"):format(i, name[w.id],
              tostring(have[i][sid]), up and ("n" .. name[up]) or "none") }
            for pid, rec in pairs(sy.peers) do
              local e = rec.catalogue[sid]
              line[#line + 1] = ("  peer n%d alive=%s: %s"):format(name[pid], tostring(alive[name[pid]]), e and
                ("hops=%d fresh=%d last=%d follows_you=%s refused=%s told=%s"):format(e.hops, e.fresh, e.last,
                  tostring(e.follows_you), tostring(rec.refused[sid]), tostring(rec.told[sid])) or "no entry")
            end
            io.stderr:write(table.concat(line, "\n"), "\n")
          end
        end
      end
    end
  end
  -- dials by "origin>outcome", those under way counted as they stand
  local function dials_counted()
    local out = {}
    for k, v in pairs(attempts) do out[k] = v end
    for _, ds in pairs(dialling) do
      for _, d in pairs(ds) do
        local k = d.o .. ">" .. (d.active and "active" or "connecting")
        out[k] = (out[k] or 0) + 1
      end
    end
    return out
  end
  local function run(label, ns, expect_complete)
    local t0, w0 = net.now(), uv.hrtime()
    local b0, bytes0, d0 = batches, bytes, dials
    local reasons0 = {}
    for k, v in pairs(reasons) do reasons0[k] = v end
    local t_before = {}
    for t, b in pairs(by_type) do t_before[t] = b end
    local a_before, c_before = dials_counted(), {}
    for _, nd in ipairs(ns) do
      for k, v in pairs(nd.sync.sent) do c_before[k] = (c_before[k] or 0) + v end
    end
    local said = uv.hrtime()
    local ok = net.run_until(function()
      if uv.hrtime() - said > 60e9 then -- progress, on stderr, once a wall minute
        said = uv.hrtime()
        io.stderr:write(("  %s: %d of %d (node, stream) pairs complete, %.1f simulated s\n")
          :format(label, complete, expect_complete, (net.now() - t0) / 1000))
      end
      return complete >= expect_complete
    end, tonumber(os.getenv("ODO_SCALE_SIM_DEADLINE_MS") or "600000"), 10)
    if not ok and os.getenv("ODO_SCALE_DUMP") then dump_stuck(ns) end
    local sim_s, wall_s = (net.now() - t0) / 1000, (uv.hrtime() - w0) / 1e9
    net.run_until(function() return false end, 2000, 10)
    local peers = {}
    for _, node in ipairs(ns) do
      local k = 0
      for _, p in ipairs(node:peers()) do if p.state == "active" then k = k + 1 end end
      peers[#peers + 1] = k
    end
    local diam, connected = diameter(ns)
    local w = 0
    for _, node in ipairs(ns) do if node.writer then w = w + 1 end end
    local copies = w * (#ns - 1) * events -- events to deliver: each writer's to every other node
    local lo, med, hi = median(peers)
    print(("scale_sim %-12s nodes=%d converged=%s sim_s=%.1f wall_s=%.1f msgs_per_event_node=%.3f "
      .. "bytes_per_event_node=%.0f dup_events=%d peers=%d/%d/%d diameter=%d connected=%s writers=%d rss_mb=%.0f")
      :format(label, #ns, tostring(ok), sim_s, wall_s, (batches - b0) / copies,
        (bytes - bytes0) / copies, dups, lo, med, hi, diam, tostring(connected), w, rss_mb()))
    local names = { [0x10] = "catalogue", [0x11] = "subscribe", [0x12] = "unsubscribe", [0x13] = "snapshot",
      [0x14] = "events", [0x15] = "caught_up", [0x16] = "refused", [0x30] = "pex" }
    local parts, types = {}, {}
    for t in pairs(by_type) do types[#types + 1] = t end
    table.sort(types)
    for _, t in ipairs(types) do
      local b = by_type[t] - (t_before[t] or 0)
      if b > 0 then parts[#parts + 1] = ("%s=%.0f"):format(names[t] or ("0x%02x"):format(t), b / copies) end
    end
    print(("scale_sim %-12s payload_bytes_per_event_node %s"):format(label, table.concat(parts, " ")))
    local why = {}
    for k, v in pairs(reasons) do
      local d = v - (reasons0[k] or 0)
      if d > 0 then why[#why + 1] = ("%s=%.1f"):format(k:gsub(" ", "_"), d / #ns) end
    end
    table.sort(why)
    print(("scale_sim %-12s connections_per_node=%.1f ends_per_node %s"):format(label, (dials - d0) / #ns,
      table.concat(why, " ")))
    local per_origin = {}
    for k, v in pairs(dials_counted()) do
      local d = v - (a_before[k] or 0)
      if d > 0 then per_origin[#per_origin + 1] = ("%s=%.2f"):format(k, d / #ns) end
    end
    table.sort(per_origin)
    print(("scale_sim %-12s dials_per_node (origin>outcome) %s"):format(label, table.concat(per_origin, " ")))
    local sent, causes = {}, {}
    for _, nd in ipairs(ns) do
      for k, v in pairs(nd.sync.sent) do sent[k] = (sent[k] or 0) + v end
    end
    for k, v in pairs(sent) do
      local d = v - (c_before[k] or 0)
      if d > 0 then causes[#causes + 1] = ("%s=%.1f"):format(k, d / #ns / math.max(1, w)) end
    end
    table.sort(causes)
    print(("scale_sim %-12s catalogue_entries_per_node_per_stream %s"):format(label, table.concat(causes, " ")))
    io.stdout:flush()
    return (bytes - bytes0) / copies, (dials - d0) / #ns
  end
  local nw = 0
  for i = 1, n do
    if writes(i, n, writers) then
      local t = {}
      for k = 1, events do t[k] = { type = "t", data = ("n%d-e%d"):format(i, k) } end
      nodes[i]:append(nil, t)
      nodes[i].writer = true
      have[i][nodes[i].id] = events
      nw = nw + 1
    end
  end
  complete = nw
  io.stderr:write(("  %d nodes set up (certificates %.1f s), rss %.0f MB\n"):format(n, t_certs, rss_mb()))
  local per, conns = run("start", nodes, n * nw)
  -- a random 10% die; the rest append once more
  local dead = 0
  while dead < math.floor(n * tonumber(os.getenv("ODO_SCALE_KILL") or "0.1")) do
    local i = math.random(2, n)
    if alive[i] then
      alive[i] = false
      nodes[i]:close()
      dead = dead + 1
    end
  end
  local rest = {}
  for i = 1, n do if alive[i] then rest[#rest + 1] = i end end
  want = events + 1
  complete = 0
  for _, i in ipairs(rest) do
    if nodes[i].writer then
      nodes[i]:append(nil, { { type = "t", data = "after" } })
      have[i][nodes[i].id] = want
      complete = complete + 1
    end
  end
  local rest_writers = complete
  local survivors = {}
  for _, i in ipairs(rest) do survivors[#survivors + 1] = nodes[i] end
  events = 1
  run("after-kill", survivors, #rest * rest_writers)
  for _, i in ipairs(rest) do nodes[i]:close() end
  net.run_until(function() return false end, 100)
  os.execute("rm -rf " .. common.q(dir))
  return per, conns
end

-- ---- (a) real processes ------------------------------------------------------------------

local function status(dir)
  local out = io.popen(("%s/bin/odo status --dir %s --json 2>/dev/null"):format(root, common.q(dir))):read("a")
  local ok, t = pcall(require("cjson").decode, out)
  return ok and t or nil
end

local function proc_stats(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return 0, 0 end
  local s = f:read("a")
  f:close()
  local fields = {}
  for x in s:match("%) (.*)"):gmatch("%S+") do fields[#fields + 1] = x end
  local ticks = 100
  local cpu = (tonumber(fields[12]) + tonumber(fields[13])) / ticks
  local rss = tonumber(fields[22]) * 4096
  return cpu, rss
end

local function processes(n)
  local dir = common.tmpdir()
  local tls = certs(dir, n)
  local ports = {}
  do
    local socks = {}
    for i = 1, n do
      local s = uv.new_tcp()
      s:bind("127.0.0.1", 0)
      ports[i] = s:getsockname().port
      socks[i] = s
    end
    for _, s in ipairs(socks) do s:close() end
    uv.run("nowait")
  end
  local pids = {}
  for i = 1, n do
    local d = ("%s/n%d"):format(dir, i)
    local cmd = ("%s/bin/odo run --dir %s --listen 127.0.0.1:%d --ca %s --cert %s --key %s %s > %s.log 2>&1 & echo $!")
      :format(root, d, ports[i], tls[i].ca, tls[i].cert, tls[i].key,
        i > 1 and ("--peer 127.0.0.1:" .. ports[1]) or "", d)
    pids[i] = io.popen(cmd):read("l")
  end
  -- every node runs, then each appends 100 events
  for i = 1, n do
    local d = ("%s/n%d"):format(dir, i)
    local t0 = uv.hrtime()
    while not (status(d) or {}).running do
      if (uv.hrtime() - t0) / 1e9 > 60 then error("node " .. i .. " did not start") end
      uv.sleep(100)
    end
  end
  for i = 1, n do
    os.execute(("seq 100 | %s/bin/odo append --dir %s > /dev/null"):format(root, common.q(("%s/n%d"):format(dir, i))))
  end
  local t_last = uv.hrtime()
  local done, peers = {}, {}
  local left = n
  while left > 0 and (uv.hrtime() - t_last) / 1e9 < 300 do
    for i = 1, n do
      if not done[i] then
        local st = status(("%s/n%d"):format(dir, i))
        local full = 0
        for _, s in ipairs(st and st.streams or {}) do
          if s.last >= 100 then full = full + 1 end
        end
        if full >= n then
          done[i] = true
          left = left - 1
        end
      end
    end
    if left > 0 then uv.sleep(200) end
  end
  local converge = (uv.hrtime() - t_last) / 1e9
  for i = 1, n do
    local st = status(("%s/n%d"):format(dir, i)) or {}
    local k = 0
    for _, p in ipairs(st.peers or {}) do if p.state == "active" then k = k + 1 end end
    peers[i] = k
  end
  local cpu, rss, lines = 0, 0, 0
  for i = 1, n do
    local c, r = proc_stats(pids[i])
    cpu, rss = cpu + c, rss + r
    for _ in io.lines(("%s/n%d.log"):format(dir, i)) do lines = lines + 1 end
  end
  for i = 1, n do os.execute("kill " .. pids[i] .. " 2>/dev/null") end
  local lo, med, hi = median(peers)
  print(("scale_procs N=%d converged=%s scale_converge_s=%.1f peers=%d/%d/%d rss_mb=%.0f cpu_s=%.1f log_lines=%d")
    :format(n, tostring(left == 0), converge, lo, med, hi, rss / 1048576, cpu, lines))
  io.stdout:flush()
  uv.sleep(500)
end

local which = os.getenv("ODO_SCALE_PART") or "ab"
if which:find("a") then
  local ns = os.getenv("ODO_SCALE_N") or (os.getenv("ODO_LONG") == "1" and "10,30,100,200" or "10,30,100")
  for s in ns:gmatch("%d+") do processes(tonumber(s)) end
end
if which:find("b") then
  local big = tonumber(os.getenv("ODO_SCALE_SIM") or "1000")
  local ev = tonumber(os.getenv("ODO_SCALE_SIM_EVENTS") or "1")
  local writers = tonumber(os.getenv("ODO_SCALE_SIM_WRITERS") or "100")
  local base, base_conns
  if os.getenv("ODO_SCALE_SIM_BASE") ~= "0" then base, base_conns = simulate(100, ev, writers) end
  local per, conns = simulate(big, ev, writers)
  if base then
    print(("scale_sim bytes_per_event_node ratio %d/100 nodes = %.2f (flat fan-out: about 1)"):format(big, per / base))
    print(("scale_sim connections_per_node ratio %d/100 nodes = %.2f (flat: about 1)"):format(big, conns / base_conns))
  end
end
common.remove_tmpdirs()
