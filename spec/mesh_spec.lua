-- The mesh on the in-memory adapter (real TLS, sessions, sync engines and
-- stores; simulated sockets and time): refusals that back off, peer
-- exchange (PEX) and its bounds, the target degree, a star seed growing
-- into a mesh that outlives it, and loop-free relaying.
local H = require "helper"

local FAST = H.merge(H.FAST, { backoff = { 500, 1000, 2000, 4000 }, backoff_cap_ms = 4000 })

describe("mesh", function()
  local env = H.memory_world("m", 12)
  local pki, net, nodes
  setup(function() env.setup(); pki = env.pki end)
  teardown(H.cleanup)
  before_each(function() env.before_each(); net, nodes = env.net, env.nodes end)
  after_each(env.after_each_checked)

  local function addr(i) return "10.0.0." .. i .. ":4000" end

  -- node i on 10.0.0.i:4000; every "peer" event logged in n.events
  local function node(i, opts)
    opts = opts or {}
    local n = H.net_node(net, i, pki.n[i], { peers = opts.peers, policy = H.merge(FAST, opts.policy) })
    n.events = {}
    n:on("peer", function(p, old, new, reason)
      n.events[#n.events + 1] = { old = old, new = new, reason = reason, host = p.host, at = net.now() }
    end)
    nodes[#nodes + 1] = n
    return n
  end

  local function active(n)
    local k = 0
    for _, p in ipairs(n:peers()) do
      if p.state == "active" then k = k + 1 end
    end
    return k
  end

  it("backs a refusing peer off to the ceiling, and remembers the refusal", function()
    local a = node(1, { policy = { max_peers = 1 } })
    local b = node(2, { peers = { addr(1) } })
    assert.is_true(net.run_until(function() return active(a) == 1 and active(b) == 1 end, 5000))
    local c = node(3, { peers = { addr(1) } }) -- a pinned seed that refuses it as full
    c:append(nil, H.events(1, "c"))
    net.run_until(function() return false end, 30000)
    -- refused at once each time, c never started sync with a: the one
    -- catalogue of its stream went to b (whose address a handed it)
    assert.is_true((c.sync.sent.full or 0) <= 1, tostring(c.sync.sent.full))
    local retries = {}
    for _, e in ipairs(c.events) do
      if e.old == "lifesupport" and e.new == "connecting" then retries[#retries + 1] = e.at end
    end
    local refusals = 0
    for _, e in ipairs(c.events) do
      if e.new == "lifesupport" and e.reason == "full" then refusals = refusals + 1 end
    end
    assert.is_true(#retries >= 5, "retries: " .. #retries)
    assert.is_true(refusals >= #retries)
    local gaps = {}
    for i = 2, #retries do gaps[#gaps + 1] = retries[i] - retries[i - 1] end
    for i = 2, #gaps do assert.is_true(gaps[i] >= gaps[i - 1], table.concat(gaps, " ")) end
    assert.is_true(gaps[#gaps] >= 4000 and gaps[1] < 4000, table.concat(gaps, " "))
    local p = c:peers()[1]
    assert.same({ "full", true }, { p.refused, p.failures >= 5 })
  end)

  it("hands a node it refuses as full the addresses of others it refused lately (they have room)", function()
    local a = node(1, { policy = { max_peers = 1 } })
    local b = node(2, { peers = { addr(1) } })
    assert.is_true(net.run_until(function() return active(a) == 1 and active(b) == 1 end, 5000))
    local c = node(3, { peers = { addr(1) } })
    assert.is_true(net.run_until(function() return #c.events > 0 and c:peers()[1].refused == "full" end, 5000))
    local d = node(4, { peers = { addr(1) } })
    local Pex, Swarm = require "odo.pex", require "odo.swarm"
    local offered = {} -- node ids in the refusal frames d got from a
    d.swarm._pex = function(sw, p, payload)
      local msg = Pex.decode(payload)
      if msg and msg.flags == Pex.FULL and p.id == a.id then
        for _, e in ipairs(msg.entries) do offered[e.id] = e.host .. ":" .. e.port end
      end
      return Swarm._pex(sw, p, payload)
    end
    assert.is_true(net.run_until(function() return offered[c.id] ~= nil end, 5000))
    assert.equal(addr(3), offered[c.id])
    assert.equal(addr(2), offered[b.id]) -- and a's own peer
    assert.is_true(net.run_until(function() return d.swarm:active(c.id) ~= nil end, 10000))
  end)

  it("takes at most the bound of the addresses a peer floods it with (10,000 in 40 frames)", function()
    local Pex = require "odo.pex"
    local a = node(1, { policy = { pex_per_message = 8, pex_per_minute = 32, dial_peers = 1, max_candidates = 64 } })
    local b = node(2, { peers = { addr(1) } })
    assert.is_true(net.run_until(function() return active(a) == 1 and active(b) == 1 end, 5000))
    local to_a = b.swarm:active(a.id)
    local sent = 0
    for f = 1, 40 do
      local entries = {}
      for i = 1, 250 do
        local k = (f - 1) * 250 + i
        entries[i] = { id = ("%064x"):format(k), host = ("10.9.%d.%d"):format(k // 250, k % 250 + 1), port = 4000 }
      end
      sent = sent + #entries
      to_a.conn:send(Pex.TYPE, Pex.encode(entries))
    end
    net.run_until(function() return false end, 2000)
    assert.equal(10000, sent)
    assert.equal(32, a.swarm.pex_taken) -- 8 a frame, 32 a minute
    local known = {} -- addresses a dials or keeps waiting
    for _, p in ipairs(a:peers()) do
      if p.source == "pex" then known[p.host .. ":" .. p.port] = true end
    end
    for _, w in ipairs(a.swarm.waiting) do known[w.key] = true end
    local k = 0
    for _ in pairs(known) do k = k + 1 end
    assert.is_true(k > 0 and k <= 32, "addresses kept: " .. k)
    assert.is_not_nil(b.swarm:active(a.id)) -- bounded, not a violation
    -- a minute later, the next frame gives 8 more; a malformed one ends the session
    net.advance(60000)
    to_a = b.swarm:active(a.id)
    to_a.conn:send(Pex.TYPE, Pex.encode({ { id = ("%064x"):format(1), host = "10.8.0.1", port = 4000 },
      { id = ("%064x"):format(2), host = "10.8.0.2", port = 4000 } }))
    net.run_until(function() return false end, 100)
    assert.equal(34, a.swarm.pex_taken)
    to_a.conn:send(Pex.TYPE, "\0\1" .. ("x"):rep(32) .. "\4name\0\1")
    assert.is_true(net.run_until(function() return b.swarm:active(a.id) == nil end, 2000))
  end)

  it("PEX frames: the docs' test vectors, and well-formed addresses only", function()
    local Pex = require "odo.pex"
    local id = ("%064x"):format(1)
    local one = Pex.encode({ { id = id, host = "10.0.0.2", port = 4000 } }, 0)
    assert.equal("0001" .. id .. "0831302e302e302e320fa0", H.hex(one))
    assert.equal("0100", H.hex(Pex.encode({}, Pex.FULL)))
    local six = Pex.encode({ { id = id, host = "fe80::1", port = 1 } }, Pex.FULL)
    assert.equal("0101" .. id .. "07666538303a3a310001", H.hex(six))
    local doc = H.read_file(H.root .. "/docs/PROTOCOL.md")
    for _, v in ipairs({ one, six, Pex.encode({}, Pex.FULL) }) do
      local h = H.hex(v)
      assert.truthy(doc:find(("%08x 30 "):format(#v + 1) .. h, 1, true), h .. " is not in docs/PROTOCOL.md")
      assert.same(Pex.decode(v).entries, Pex.decode(H.unhex(h)).entries)
    end
    assert.same({ flags = 0, entries = { { id = id, host = "10.0.0.2", port = 4000 } } }, Pex.decode(one))
    for _, bad in ipairs({ "localhost", "10.0.0", "256.0.0.1", "0.0.0.0", "::", "1:2:3:4:5:6:7:8:9", "a::b::c", "" }) do
      assert.is_false(Pex.well_formed(bad, 4000), bad)
    end
    assert.is_false(Pex.well_formed("10.0.0.1", 0))
    assert.is_true(Pex.well_formed("::ffff:10.0.0.1", 1))
    assert.is_nil(Pex.decode(one .. "x"))
    assert.is_nil(Pex.decode(one:sub(1, -2)))
    assert.is_nil(Pex.decode("\0"))
    -- every cut of a frame is refused, never raises
    for i = 0, #six - 1 do assert.is_nil(Pex.decode(six:sub(1, i))) end
    -- random bytes, and random changes of a good frame: decoded or refused, never raising,
    -- and what is decoded encodes back to the same bytes
    math.randomseed(16)
    for _ = 1, 3000 do
      local b = {}
      if math.random(2) == 1 then
        for i = 1, math.random(0, 80) do b[i] = string.char(math.random(0, 255)) end
      else
        for i = 1, #one do b[i] = one:sub(i, i) end
        b[math.random(#one)] = string.char(math.random(0, 255))
      end
      local bytes = table.concat(b)
      local ok, m = pcall(Pex.decode, bytes)
      assert.is_true(ok, m)
      if m then assert.equal(H.hex(bytes), H.hex(Pex.encode(m.entries, m.flags))) end
    end
  end)

  -- every node of `ns` holds every stream of `ns` up to `last`
  local function converged(ns, last)
    for _, n in ipairs(ns) do
      for _, m in ipairs(ns) do
        local st = n.store:stream(m.id)
        if not st or st.last < last then return false end
      end
    end
    return true
  end

  -- the nodes `ns` form one connected graph of active peers
  local function connected(ns)
    local by_id, seen, todo = {}, {}, { ns[1] }
    for _, n in ipairs(ns) do by_id[n.id] = n end
    seen[ns[1].id] = true
    while #todo > 0 do
      local n = table.remove(todo)
      for _, p in ipairs(n:peers()) do
        if p.state == "active" and by_id[p.id] and not seen[p.id] then
          seen[p.id] = true
          todo[#todo + 1] = by_id[p.id]
        end
      end
    end
    for _, n in ipairs(ns) do if not seen[n.id] then return false end end
    return true
  end

  it("grows a star seed (max_peers 4) and 11 nodes into a mesh within the target, which outlives the seed", function()
    local mesh = { target_peers = 3, dial_peers = 2, pex_interval_ms = 2000, long_range_peers = 1 }
    local seed = node(1, { policy = H.merge(mesh, { max_peers = 4 }) })
    local all = { seed }
    for i = 2, 12 do all[i] = node(i, { peers = { addr(1) }, policy = mesh }) end
    for _, n in ipairs(all) do n:append(nil, H.events(20, n.id:sub(1, 4))) end
    assert.is_true(net.run_until(function() return converged(all, 20) end, 120000), "no convergence")
    net.run_until(function() return false end, 10000)
    for _, n in ipairs(all) do
      local k = active(n)
      assert.is_true(k >= 1 and k <= 3, "a node with " .. k .. " peers")
    end
    -- the seed had to refuse, and nodes found each other through PEX
    local pex = 0
    for _, n in ipairs(all) do
      for _, p in ipairs(n:peers()) do if p.source == "pex" and p.state == "active" then pex = pex + 1 end end
    end
    assert.is_true(pex > 0)
    -- the seed stops: the others stay connected and keep replicating
    seed:close()
    local rest = {}
    for i = 2, 12 do rest[#rest + 1] = all[i] end
    assert.is_true(net.run_until(function() return connected(rest) end, 60000), "the mesh fell apart")
    for _, n in ipairs(rest) do n:append(nil, H.events(5, "after")) end
    assert.is_true(net.run_until(function() return converged(rest, 25) end, 60000), "no replication after the seed")
    for _, n in ipairs(rest) do assert.is_true(active(n) <= 3) end
  end)

  -- every replica's upstream chain ends at the stream's source (no loop)
  local function loop_free(ns)
    local by_id = {}
    for _, n in ipairs(ns) do by_id[n.id] = n end
    for _, src in ipairs(ns) do
      for _, n in ipairs(ns) do
        local at, steps = n, 0
        while at ~= src do
          local up = at.sync.upstream[src.id]
          if not up or not by_id[up] or steps > #ns then return false, n.id:sub(1, 8) .. " for " .. src.id:sub(1, 8) end
          at, steps = by_id[up], steps + 1
        end
      end
    end
    return true
  end

  -- a condition: every node of ns holds node i's stream up to base + i
  local function holds(ns, base)
    return function()
      for _, n in ipairs(ns) do
        for i, m in ipairs(ns) do
          local st = n.store:stream(m.id)
          if not st or st.last < base + i then return false end
        end
      end
      return true
    end
  end

  -- nodes 1..#links, each dialling the nodes links[i] names; no peer exchange, so the shape stays
  local function shape(links, policy)
    local ns = H.link_nodes(links, function(i, peers)
      return node(i, { peers = peers, policy = H.merge({ pex_per_minute = 0 }, policy) })
    end)
    for i, n in ipairs(ns) do n:append(nil, H.events(10 + i, "s" .. i)) end
    assert.is_true(net.run_until(holds(ns, 10), 30000), "stalled")
    net.run_until(function() return false end, 1000)
    assert.is_true(loop_free(ns))
    return ns
  end

  -- cuts the link between a and b (a sheds b: neither dials the other again for a while)
  local function cut(a, b)
    local p = a.swarm:active(b.id)
    a.swarm:_shed(p)
    local q = b.swarm.peers[a.listen.host .. ":" .. a.listen.port]
    if q then b.swarm:_forget(q, "cut") end
  end

  it("a ring converges with no stream stalled, relays loop-free, and re-routes when a link is cut", function()
    local ns = shape({ { 2 }, { 3 }, { 4 }, { 5 }, { 6 }, { 1 } })
    -- node 2 follows node 1's stream straight from it; cut that link
    assert.equal(ns[1].id, ns[2].sync.upstream[ns[1].id])
    cut(ns[1], ns[2])
    -- node 2's only peer left, 3, is further than 2's feasible distance
    -- (it may be behind 2, and is): 2 says it has no path, and holds down
    -- instead of following 3 at once (a loop counting up to max_hops)
    net.run_until(function() return false end, ns[2].policy.route_hold_ms // 2)
    assert.is_not_nil(ns[2].sync.holds[ns[1].id])
    assert.is_nil(ns[2].sync.upstream[ns[1].id])
    assert.equal(255, ns[3].sync.peers[ns[2].id].catalogue[ns[1].id].hops)
    assert.is_nil(ns[2].sync.sent.longer)
    for _, n in ipairs(ns) do n:append(nil, H.events(5, "after")) end
    local ok = net.run_until(holds(ns, 15), 30000)
    if not ok then
      for i, n in ipairs(ns) do
        local up = n.sync.upstream[ns[1].id]
        local line = { i, up and up:sub(1, 6) or "-", n.store:stream(ns[1].id).last }
        for pid, rec in pairs(n.sync.peers) do
          local e = rec.catalogue[ns[1].id]
          local what = e and (e.hops .. "/" .. tostring(e.follows_you) .. "/" .. e.last) or "none"
          line[#line + 1] = pid:sub(1, 6) .. ":" .. what
        end
        io.stderr:write(table.concat(line, " "), "  ", n.id:sub(1, 6), "\n")
      end
    end
    assert.is_true(ok, "no re-route")
    -- node 2 (and 3 behind it) had only peers further than their feasible
    -- distance left: they held down (route_hold_ms) before following them
    net.run_until(function() return false end, 2 * ns[2].policy.route_hold_ms)
    assert.is_nil(ns[2].swarm:active(ns[1].id))
    assert.equal(ns[3].id, ns[2].sync.upstream[ns[1].id]) -- the long way round
    assert.is_true(loop_free(ns))
    -- hop counts say so: 2 is five hops from 1 now
    assert.equal(4, ns[2].sync.peers[ns[3].id].catalogue[ns[1].id].hops)
  end)

  it("a 3x3 grid converges with no stream stalled, and loop-free", function()
    -- node (r, c) is 3r + c + 1 and dials its right and lower neighbours
    local links = {}
    for r = 0, 2 do
      for c = 0, 2 do
        local to = {}
        if c < 2 then to[#to + 1] = 3 * r + c + 2 end
        if r < 2 then to[#to + 1] = 3 * (r + 1) + c + 1 end
        links[#links + 1] = to
      end
    end
    local ns = shape(links)
    -- the corner's stream reaches the far corner in 4 hops, the shortest path
    local far = ns[9]
    local up = far.sync.upstream[ns[1].id]
    assert.equal(3, far.sync.peers[up].catalogue[ns[1].id].hops)
  end)

  it("says a repeated log line once a window, with a count", function()
    local Repeats = require "odo.cli.repeats"
    local lines, t = {}, 0
    local r = Repeats.new(function(l) lines[#lines + 1] = l end, function() return t end, 60000)
    for i = 1, 300 do
      t = i * 500
      r:say("a", "peer x connecting -> active")
      r:say("b", "peer x active -> lifesupport")
    end
    -- three of each kind, then one a minute with the count of those held back
    assert.same({ "peer x connecting -> active", "peer x active -> lifesupport" }, { lines[1], lines[2] })
    assert.same({ "peer x connecting -> active", "peer x active -> lifesupport" }, { lines[5], lines[6] })
    assert.same({ "peer x connecting -> active (and 117 more like it in the last 60 s)",
      "peer x active -> lifesupport (and 117 more like it in the last 60 s)" }, { lines[7], lines[8] })
    assert.equal(2 * 9, #lines) -- 150 s: three windows, three lines of each kind in each
  end)
end)
