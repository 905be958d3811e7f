-- Sync between nodes on the in-memory adapter (real TLS, real sessions,
-- real stores; simulated sockets and time): the seed's sync rules 1-8 and
-- the replication rules.
local H = require "helper"
local odo = require "odo"

local FAST = H.merge(H.FAST, { purgatory_ms = 600000 })

describe("sync", function()
  local env = H.memory_world("s", 6)
  local pki, net, nodes
  setup(function() env.setup(); pki = env.pki end)
  teardown(H.cleanup)
  before_each(function() env.before_each(); net, nodes = env.net, env.nodes end)
  after_each(env.after_each_checked)

  local function node(i, opts)
    opts = opts or {}
    local n = H.net_node(net, i, opts.tls or pki.n[i], {
      dir = opts.dir, peers = opts.peers, policy = H.merge(FAST, opts.policy), on_error = opts.on_error })
    nodes[#nodes + 1] = n
    n.log = {}
    for _, ev in ipairs({ "catalogue", "subscribed", "replicated", "caught_up", "upstream", "violation" }) do
      n:on(ev, function(...) n.log[#n.log + 1] = { ev, ... } end)
    end
    n:on("peer", function(p, old, new, reason) n.log[#n.log + 1] = { "peer", p.id, old, new, reason } end)
    return n
  end

  local last = H.node_last

  local function has(n, id, rev)
    return function() return last(n, id) >= rev end
  end

  local function events_of(log, kind)
    local out = {}
    for _, e in ipairs(log) do
      if e[1] == kind then out[#out + 1] = e end
    end
    return out
  end

  -- the replica holds exactly what the source wrote
  local function same_stream(a, b, id)
    local sa, sb = a.store:stream(id), b.store:stream(id)
    assert.is_truthy(sa and sb)
    assert.equal(sa.last, sb.last)
    assert.equal(H.hex(sa.hash), H.hex(sb.hash))
    assert.is_true(b.store:verify(id))
  end

  it("rule 1: peers exchange catalogues when they meet, then push coalesced updates", function()
    local a = node(1)
    a:append(nil, H.events(10))
    a:append(a:stream_id("chat"), H.events(3))
    local b = node(2, { peers = { "10.0.0.1:4000" } })
    assert.is_true(net.run_until(has(b, a.id, 10), 5000))
    local cats = events_of(b.log, "catalogue")
    assert.is_true(cats[1][4]) -- the first one is full
    local seen = {}
    for _, e in ipairs(cats[1][3]) do seen[e.id] = e end
    assert.same({ 1, 10, true, 0 }, { seen[a.id].first, seen[a.id].last, seen[a.id].source, seen[a.id].hops })
    assert.equal(3, seen[a:stream_id("chat")].last)
    -- many appends within the refresh interval (advances, no change of
    -- route): one update
    local before = #events_of(b.log, "catalogue")
    for _ = 1, 20 do a:append(nil, H.events(1)) end
    net.advance(1100)
    local after = events_of(b.log, "catalogue")
    assert.equal(before + 1, #after)
    assert.is_false(after[#after][4]) -- an update, not a full catalogue
    local upd = {}
    for _, e in ipairs(after[#after][3]) do upd[e.id] = e end
    assert.equal(30, upd[a.id].last)
    -- b's view of a never goes stale
    assert.equal(30, b.sync.peers[a.id].catalogue[a.id].last)
  end)

  it("rules 2 and 4: a replica asks for what it lacks from its last known revision", function()
    local a = node(1)
    a:append(nil, H.events(1500))
    -- b already holds 1..700 (copied from a with their chain)
    local dir = H.tmpdir()
    local b0 = H.node { dir = dir, tls = pki.n[2], adapter = net, policy = FAST }
    local evs = a.store:read(a.id, 1, 700)
    assert(b0.store:append_replica(a.id, evs))
    b0:close()
    local b = node(2, { dir = dir, peers = { "10.0.0.1:4000" } })
    assert.is_true(net.run_until(has(b, a.id, 1500), 5000))
    local subs = events_of(a.log, "subscribed")
    assert.same({ b.id, a.id, 701 }, { subs[1][2], subs[1][3], subs[1][4] })
    same_stream(a, b, a.id)
    -- and it stays subscribed: new events arrive live
    a:append(nil, H.events(5))
    assert.is_true(net.run_until(has(b, a.id, 1505), 1000))
  end)

  it("a node never follows its own stream, even on a fresh store while a peer holds it", function()
    local a = node(1)
    a:append(nil, H.events(20))
    local b = node(2, { peers = { "10.0.0.1:4000" } })
    assert.is_true(net.run_until(has(b, a.id, 20), 5000))
    a:close()
    -- the same identity on a fresh store meets a peer that holds its stream
    local a2 = node(1, { dir = H.tmpdir(), peers = { "10.0.0.2:4000" } })
    assert.is_true(net.run_until(function() return #events_of(a2.log, "catalogue") > 0 end, 5000))
    net.advance(1000)
    assert.same({}, events_of(b.log, "subscribed"))
    assert.same({}, events_of(a2.log, "upstream"))
    assert.same({}, events_of(a2.log, "violation"))
    assert.equal(0, last(a2, a.id))
  end)

  -- a source (node 1, with policy) holding 5333 events, heads every 1000
  -- and at 5333, and a new node 2 caught up with it
  local function caught_up_5333(policy)
    local a = node(1, { policy = policy })
    for _ = 1, 5 do a:append(nil, H.events(1000)) end
    a:append(nil, H.events(333))
    local b = node(2, { peers = { "10.0.0.1:4000" } })
    assert.is_true(net.run_until(has(b, a.id, 5333), 10000))
    return a, b
  end

  it("rule 3: events come in bounded batches that each end at a signed head", function()
    local a, b = caught_up_5333({ sync_bulk_batch_bytes = 0 })
    local total = 0
    for _, r in ipairs(events_of(b.log, "replicated")) do
      assert.is_true(r[5] <= 1000, "a batch of " .. r[5])
      total = total + r[5]
      -- every batch ends at a head b now holds
      assert.equal(r[3], b.store:head_find(a.id, r[3]).rev)
    end
    assert.equal(5333, total)
    same_stream(a, b, a.id)
  end)

  it("rule 3: a catch-up's batches go on to the last head within sync_bulk_batch_bytes", function()
    -- heads every 1000 events of about 20 bytes: batches of two heads
    local a, b = caught_up_5333({ sync_bulk_batch_bytes = 30000 })
    local sizes = {}
    for _, r in ipairs(events_of(b.log, "replicated")) do
      sizes[#sizes + 1] = r[5]
      assert.equal(r[3], b.store:head_find(a.id, r[3]).rev)
    end
    -- 1..2000, 2001..4000, then 4001..5333 (within 1000 of the end: the
    -- heads at 5000 and 5333 both fit)
    assert.same({ 2000, 2000, 1333 }, sizes)
    same_stream(a, b, a.id)
    -- b relays with the heads it holds: c catches up from b alone
    a:close()
    local c = node(3, { peers = { "10.0.0.2:4000" } })
    assert.is_true(net.run_until(has(c, a.id, 5333), 10000))
    same_stream(b, c, a.id)
    assert.same({}, events_of(c.log, "violation"))
  end)

  it("rule 3: a subscriber that stops reading does not grow the server's memory past a bound", function()
    local a = node(1)
    local big = {}
    for i = 1, 1000 do big[i] = { type = "t", data = ("x"):rep(1000) } end
    for _ = 1, 40 do a:append(nil, big) end -- 40 MB of events
    -- b stops reading as soon as it asks for the stream: a's queue to it fills
    local held = false
    a:on("subscribed", function()
      if not held then
        held = true
        net.hold("10.0.0.2")
      end
    end)
    local b = node(2, { peers = { "10.0.0.1:4000" } })
    assert.is_true(net.run_until(function() return held end, 5000))
    local worst = 0
    for _ = 1, 50 do
      net.advance(20)
      local conn = a.swarm:active(b.id) and a.swarm:active(b.id).conn
      if conn then worst = math.max(worst, conn.session:info().queued) end
    end
    -- bulk stops at the low watermark (1 MiB), so a heartbeat never waits
    -- behind more than that and the batch that crossed it (about 1 MB)
    assert.is_true(worst > 0)
    assert.is_true(worst < 2.2 * 1024 * 1024, "queued " .. worst)
    net.release("10.0.0.2")
    assert.is_true(net.run_until(has(b, a.id, 40000), 60000))
    same_stream(a, b, a.id)
  end)

  it("rule 5: no gap and no duplicate while appends race the catch-up, and a caught-up marker", function()
    local a = node(1)
    a:append(nil, H.events(5000))
    local b = node(2, { peers = { "10.0.0.1:4000" } })
    local seen = {}
    b:subscribe(a.id, 1, function(batch)
      for _, ev in ipairs(batch) do seen[#seen + 1] = ev.rev end
    end)
    local appended = 0
    local t = net.every(1, function()
      if appended < 200 then
        a:append(nil, H.events(3))
        appended = appended + 1
      end
    end)
    assert.is_true(net.run_until(function() return appended == 200 and last(b, a.id) == 5600 end, 30000))
    t.stop()
    net.advance(100)
    assert.equal(5600, #seen)
    for i = 1, 5600 do assert.equal(i, seen[i]) end
    same_stream(a, b, a.id)
    local cu = events_of(b.log, "caught_up")
    assert.is_true(#cu >= 1)
    assert.equal(a.id, cu[1][2])
    assert.same({ upstream = a.id, lag = 0, caught_up = true },
      (function()
        for _, st in ipairs(b:status().streams) do
          if st.id == a.id then return { upstream = st.upstream, lag = st.lag, caught_up = st.caught_up } end
        end
      end)())
  end)

  it("rule 6: a lost connection drops subscriptions; another upstream takes over; reconnects start over", function()
    local a = node(1)
    a:append(nil, H.events(100))
    local c = node(3, { peers = { "10.0.0.1:4000" } }) -- c follows a directly
    local b = node(2, { peers = { "10.0.0.1:4000", "10.0.0.3:4000" } })
    assert.is_true(net.run_until(function() return last(b, a.id) == 100 and last(c, a.id) == 100 end, 5000))
    assert.equal(a.id, b.sync.upstream[a.id]) -- the source itself
    -- the a-b link dies (a stops answering b)
    net.tap(function(from, to, data)
      if (from == "10.0.0.1" and to == "10.0.0.2") or (from == "10.0.0.2" and to == "10.0.0.1") then return nil end
      return data
    end)
    a:append(nil, H.events(50))
    assert.is_true(net.run_until(function() return b.sync.upstream[a.id] == c.id end, 20000))
    assert.is_true(net.run_until(has(b, a.id, 150), 5000))
    same_stream(a, b, a.id)
    -- the link heals: b meets a again, exchanges catalogues and prefers the source
    net.tap(nil)
    local cats = #events_of(b.log, "catalogue")
    a:append(nil, H.events(10))
    assert.is_true(net.run_until(function() return b.sync.upstream[a.id] == a.id end, 30000))
    assert.is_true(#events_of(b.log, "catalogue") > cats)
    assert.is_true(net.run_until(has(b, a.id, 160), 5000))
    same_stream(a, b, a.id)
  end)

  it("rules 7 and 8: a late joiner behind the compaction point gets the signed snapshot, then the tail", function()
    local a = node(1, { policy = { reducer = "kv", snapshot_every_events = 1000, compact_after_events = 10,
      snapshot_every_ms = 1e9, compact_after_ms = 1e9 } })
    for i = 1, 1200 do a:append(nil, odo.kv.put("k" .. (i % 50), "v" .. i)) end
    assert.is_true(net.run_until(function() return a.store:stream(a.id).first > 1 end, 5000))
    local st = a.store:stream(a.id)
    assert.equal(1000, st.snapshot)
    assert.equal(1001, st.first)
    assert.is_true(#a.store:snapshot_get(a.id).sig > 0) -- signed by the source
    local b = node(2, { peers = { "10.0.0.1:4000" } })
    local got = {}
    b:subscribe(a.id, 1, function(batch) got[#got + 1] = batch end)
    assert.is_true(net.run_until(has(b, a.id, 1200), 5000))
    local bs = b.store:stream(a.id)
    assert.same({ 1001, 1200, 1000 }, { bs.first, bs.last, bs.snapshot })
    same_stream(a, b, a.id)
    assert.equal(1000, got[1].snapshot.rev)
    assert.equal("v1000", odo.kv.decode(got[1].snapshot.data).k0)
    -- the replica serves the source's snapshot onwards, untouched
    local c = node(3, { peers = { "10.0.0.2:4000" } })
    assert.is_true(net.run_until(has(c, a.id, 1200), 5000))
    assert.equal(b.store:snapshot_get(a.id).sig, c.store:snapshot_get(a.id).sig)
    same_stream(a, c, a.id)
  end)

  it("rule 8: a replica that follows live fetches the source's snapshot and compacts against it", function()
    local pol = { reducer = "kv", snapshot_every_events = 1000, compact_after_events = 100,
      snapshot_every_ms = 1e9, compact_after_ms = 1e9 }
    local a = node(1, { policy = pol })
    a:append(nil, odo.kv.put("k0", "v0"))
    local b = node(2, { peers = { "10.0.0.1:4000" }, policy = pol })
    assert.is_true(net.run_until(function() return b.sync.upstream[a.id] == a.id end, 5000))
    for i = 2, 1300 do a:append(nil, odo.kv.put("k" .. (i % 30), "v" .. i)) end
    assert.is_true(net.run_until(function()
      local st = b.store:stream(a.id)
      return st and st.last == 1300 and st.snapshot == 1000 and st.first == 1001
    end, 10000))
    local snap = b.store:snapshot_get(a.id, "source")
    assert.equal(a.store:snapshot_get(a.id).sig, snap.sig)
    same_stream(a, b, a.id)
  end)

  it("two streams that both need a large snapshot arrive whole, one after the other", function()
    local big = ("z"):rep(3000)
    local a = node(1, { policy = { reducer = "kv", snapshot_every_events = 1000, compact_after_events = 1,
      snapshot_every_ms = 1e9, compact_after_ms = 1e9 } })
    for _, id in ipairs({ a.id, a:stream_id("two") }) do
      for i = 1, 1001 do a:append(id, odo.kv.put(id:sub(-3) .. i, big)) end
    end
    assert.is_true(net.run_until(function()
      return a.store:stream(a.id).first > 1 and a.store:stream(a:stream_id("two")).first > 1
    end, 10000))
    assert.is_true(#a.store:snapshot_get(a.id).data > 2 * 1024 * 1024) -- several chunks each
    local b = node(2, { peers = { "10.0.0.1:4000" } })
    assert.is_true(net.run_until(function()
      return last(b, a.id) == 1001 and last(b, a:stream_id("two")) == 1001
    end, 20000))
    same_stream(a, b, a.id)
    same_stream(a, b, a:stream_id("two"))
    assert.same({}, events_of(b.log, "violation"))
  end)

  it("relays: C follows A through B when A and C are not connected", function()
    -- (no node takes addresses from peer exchange, which would connect a and c)
    local solo = { pex_per_minute = 0 }
    local a = node(1, { policy = solo })
    a:append(nil, H.events(2500))
    local b = node(2, { peers = { "10.0.0.1:4000" }, policy = solo })
    local c = node(3, { peers = { "10.0.0.2:4000" }, policy = solo })
    assert.is_true(net.run_until(has(c, a.id, 2500), 10000))
    assert.equal(b.id, c.sync.upstream[a.id])
    a:append(nil, H.events(7))
    assert.is_true(net.run_until(has(c, a.id, 2507), 5000))
    same_stream(a, c, a.id)
    -- c's catalogue says b follows the source directly (one hop), and b's that c follows it
    assert.same({ 1, true }, { c.sync.peers[b.id].catalogue[a.id].hops, c.sync.peers[b.id].catalogue[a.id].direct })
    assert.is_true(net.run_until(function()
      local e = b.sync.peers[c.id].catalogue[a.id]
      return e and e.follows_you and e.hops == 2
    end, 2000))
  end)

  it("the upstream policy prefers the source, then a direct follower; switches when a better one appears", function()
    local solo = { pex_per_minute = 0 } -- (a and c meet only when the spec says)
    local a = node(1, { policy = solo })
    a:append(nil, H.events(100))
    local b = node(2, { peers = { "10.0.0.1:4000" }, policy = solo })
    assert.is_true(net.run_until(has(b, a.id, 100), 5000))
    local c = node(3, { peers = { "10.0.0.2:4000" }, policy = solo })
    assert.is_true(net.run_until(has(c, a.id, 100), 5000))
    assert.equal(b.id, c.sync.upstream[a.id])
    c:discover("10.0.0.1", 4000)
    assert.is_true(net.run_until(function() return c.sync.upstream[a.id] == a.id end, 5000))
    a:append(nil, H.events(5))
    assert.is_true(net.run_until(has(c, a.id, 105), 5000))
    same_stream(a, c, a.id)
  end)

  it("a filter chooses which streams to replicate", function()
    local a = node(1)
    a:append(nil, H.events(10))
    a:append(a:stream_id("private"), H.events(10))
    local b = node(2, { peers = { "10.0.0.1:4000" }, policy = {
      replicate = function(id) return not id:find("/private", 1, true) end } })
    assert.is_true(net.run_until(has(b, a.id, 10), 5000))
    net.advance(500)
    assert.is_nil(b.store:stream(a:stream_id("private")))
  end)

  it("five nodes in a mesh, each writing, converge to identical catalogues and chains", function()
    local n = {}
    for i = 1, 5 do
      local peers = {}
      for j = 1, i - 1 do peers[#peers + 1] = "10.0.0." .. j .. ":4000" end
      n[i] = node(i, { peers = peers })
    end
    for round = 1, 5 do
      for i = 1, 5 do n[i]:append(nil, H.events(37 * i + round)) end
      net.advance(50)
    end
    local function converged()
      for i = 1, 5 do
        for j = 1, 5 do
          if last(n[j], n[i].id) ~= n[i].store:stream(n[i].id).last then return false end
        end
      end
      return true
    end
    assert.is_true(net.run_until(converged, 20000))
    for i = 1, 5 do
      for j = 1, 5 do
        if i ~= j then same_stream(n[i], n[j], n[i].id) end
      end
    end
  end)

  it("never accepts events of a stream it is the source of, and drops the peer that sends them", function()
    local errors = {}
    local a = node(1, { on_error = function(e) errors[#errors + 1] = e end })
    a:append(nil, H.events(10))
    local b = node(2, { peers = { "10.0.0.1:4000" } })
    assert.is_true(net.run_until(has(b, a.id, 10), 5000))
    -- make a ask b for a's own stream, as a confused policy would
    local rec = a.sync.peers[b.id]
    a.sync.engine:subscribe(rec.session, { { id = a.id, from = 1 } }, true)
    rec.peer.conn:flush()
    net.advance(100)
    local v = events_of(a.log, "violation")
    assert.equal(1, #v)
    assert.equal("verification failed", v[1][4])
    assert.matches("stream this node is the source of", v[1][5])
    assert.equal(10, last(a, a.id))
    assert.is_true(a.store:verify(a.id))
    -- b dialled a: a forgets it, with the reason (b redials, and is refused again)
    local dropped
    for _, e in ipairs(events_of(a.log, "peer")) do
      if e[2] == b.id and e[3] == "active" then dropped = e end
    end
    assert.same({ "deleted", "verification failed" }, { dropped[4], dropped[5] })
    assert.is_true(#errors >= 1)
  end)

  it("a restart during catch-up resumes at the last durable revision", function()
    local a = node(1)
    for _ = 1, 20 do a:append(nil, H.events(1000)) end
    local dir = H.tmpdir()
    local b = node(2, { dir = dir, peers = { "10.0.0.1:4000" } })
    assert.is_true(net.run_until(function() return last(b, a.id) >= 3000 end, 10000))
    local got = last(b, a.id)
    b:close()
    local b2 = node(2, { dir = dir, peers = { "10.0.0.1:4000" } })
    local from = last(b2, a.id)
    assert.is_true(from >= 3000)
    assert.is_true(net.run_until(has(b2, a.id, 20000), 20000))
    local subs = events_of(a.log, "subscribed")
    assert.equal(from + 1, subs[#subs][4])
    same_stream(a, b2, a.id)
    assert.is_true(got >= 3000)
  end)

  -- Live traffic ahead of bulk: a source serving a bulk catch-up to one
  -- peer sends a new event to a caught-up follower before the rest of that
  -- catch-up (and, rule 3 above, bulk never fills a session past its low
  -- watermark); a fleet of small streams is subscribed in one go and
  -- served whole.
  it("a new event reaches a caught-up follower while another peer's catch-up is still under way", function()
    -- a bulk slice of a microsecond: one batch of catch-up (1000 events) a
    -- loop turn
    local a = node(1, { policy = { sync_pump_us = 1, sync_bulk_batch_bytes = 0 } })
    for _ = 1, 20 do a:append(nil, H.events(1000)) end
    local b = node(2, { peers = { "10.0.0.1:4000" } })
    assert.is_true(net.run_until(has(b, a.id, 20000), 30000))
    -- c's first batch: a appends a live event at once; where was c's
    -- catch-up when b got it?
    local c = node(3, { peers = { "10.0.0.1:4000" } })
    local c_at_live
    c:on("replicated", function()
      if a.store:stream(a.id).last == 20000 then a:append(nil, { { type = "live", data = "now" } }) end
    end)
    b:on("replicated", function(_, rev)
      if rev == 20001 then c_at_live = last(c, a.id) end
    end)
    assert.is_true(net.run_until(function() return c_at_live ~= nil end, 10000))
    -- the live batch went out ahead of the rest of c's catch-up
    assert.is_true(c_at_live < 20000, ("c already held %d events"):format(c_at_live))
    -- and c still gets everything, the live event last, with no gap
    assert.is_true(net.run_until(has(c, a.id, 20001), 30000))
    same_stream(a, c, a.id)
    assert.equal("now", c:read(a.id, 20001, 20001)[1].data)
  end)

  it("a fleet of small streams is caught up whole, each stream subscribed once", function()
    local a = node(1)
    local ids = {}
    for i = 1, 300 do
      ids[i] = a:stream_id("device" .. i)
      a:append(ids[i], H.events(5, "d" .. i .. "-"))
    end
    local b = node(2, { peers = { "10.0.0.1:4000" } })
    local subscribed = {}
    a:on("subscribed", function(_, stream) subscribed[stream] = (subscribed[stream] or 0) + 1 end)
    assert.is_true(net.run_until(function()
      for _, id in ipairs(ids) do if last(b, id) < 5 then return false end end
      return true
    end, 30000))
    for _, id in ipairs(ids) do
      assert.equal(1, subscribed[id], id)
      same_stream(a, b, id)
    end
    -- b follows every stream live: a new event of one of them arrives
    a:append(ids[150], H.events(1, "late"))
    assert.is_true(net.run_until(has(b, ids[150], 6), 10000))
    assert.equal("late1", b:read(ids[150], 6, 6)[1].data)
  end)
end)
