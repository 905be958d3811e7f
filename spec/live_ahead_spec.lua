-- Live traffic ahead of bulk (in-memory adapter: real TLS, sessions and
-- stores; simulated sockets and time): a source serving a bulk catch-up
-- to one peer sends a new event to a caught-up follower before the rest
-- of that catch-up; bulk never fills a session past its low watermark
-- (heartbeats queue behind no more than that); a fleet of small streams
-- is subscribed in one go and served whole.
local H = require "helper"

local FAST = H.merge(H.FAST, { purgatory_ms = 600000 })

describe("live ahead of bulk", function()
  local env = H.memory_world("l", 3)
  local pki, net, nodes
  setup(function() env.setup(); pki = env.pki end)
  teardown(H.cleanup)
  before_each(function() env.before_each(); net, nodes = env.net, env.nodes end)
  after_each(function()
    for _, n in ipairs(env.after_each()) do assert.same({}, n.errors) end
  end)

  local function node(i, opts)
    opts = opts or {}
    local n = H.net_node(net, i, pki.n[i], { peers = opts.peers, policy = H.merge(FAST, opts.policy) })
    nodes[#nodes + 1] = n
    return n
  end

  local function last(n, id)
    local st = n.store:stream(id)
    return st and st.last or 0
  end

  local function has(n, id, rev)
    return function() return last(n, id) >= rev end
  end

  it("a new event reaches a caught-up follower while another peer's catch-up is still under way", function()
    -- a bulk slice of a microsecond: one batch of catch-up a loop turn
    local a = node(1, { policy = { sync_pump_us = 1 } })
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
    assert.equal(H.hex(a.store:stream(a.id).hash), H.hex(c.store:stream(a.id).hash))
    assert.is_true(c.store:verify(a.id))
    assert.equal("now", c:read(a.id, 20001, 20001)[1].data)
  end)

  it("a catch-up keeps at most the low watermark queued, so a heartbeat never waits behind more", function()
    local a = node(1)
    local big = {}
    for i = 1, 1000 do big[i] = { type = "t", data = ("x"):rep(1000) } end
    for _ = 1, 20 do a:append(nil, big) end -- 20 MB of events
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
    -- the low watermark (1 MiB) plus the batch that crossed it (about 1 MB)
    assert.is_true(worst > 0)
    assert.is_true(worst < 2.2 * 1024 * 1024, "queued " .. worst)
    net.release("10.0.0.2")
    assert.is_true(net.run_until(has(b, a.id, 20000), 60000))
    assert.equal(H.hex(a.store:stream(a.id).hash), H.hex(b.store:stream(a.id).hash))
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
      assert.equal(H.hex(a.store:stream(id).hash), H.hex(b.store:stream(id).hash))
    end
    -- b follows every stream live: a new event of one of them arrives
    a:append(ids[150], H.events(1, "late"))
    assert.is_true(net.run_until(has(b, ids[150], 6), 10000))
    assert.equal("late1", b:read(ids[150], 6, 6)[1].data)
  end)
end)
