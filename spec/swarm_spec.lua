-- The swarm's rules, one by one, on the in-memory adapter with its manual
-- clock: real TLS and real sessions, simulated sockets and time.
local H = require "helper"

local FAST = H.merge(H.FAST, { backoff = { 1000, 2000, 4000 } })

describe("swarm", function()
  local env = H.memory_world("n", 4)
  local pki, net, nodes
  setup(function() env.setup(); pki = env.pki end)
  teardown(H.cleanup)
  before_each(function() env.before_each(); net, nodes = env.net, env.nodes end)
  after_each(function()
    env.after_each_checked()
    assert.equal(0, net.pending_timers())
  end)

  -- node i listens on 10.0.0.i:4000; `opts.peers` are seeds, `opts.adapter`
  -- another view of the network (see `late_dials`); every "peer" event is
  -- logged in node.events as {old, new, reason, id, host, port}
  local function node(i, opts)
    opts = opts or {}
    local n = H.net_node(opts.adapter or net, i, opts.tls or pki.n[i], {
      dir = opts.dir, listen = opts.listen, peers = opts.peers, policy = H.merge(FAST, opts.policy) })
    n.events = {}
    n:on("peer", function(p, old, new, reason)
      n.events[#n.events + 1] = { old = old, new = new, reason = reason, id = p.id, host = p.host,
        port = p.port, at = net.now(), detail = p.detail }
    end)
    nodes[#nodes + 1] = n
    return n
  end

  local function states(n)
    local out = {}
    for _, p in ipairs(n:peers()) do out[#out + 1] = p.state end
    table.sort(out)
    return out
  end

  local function active_with(n, other)
    for _, p in ipairs(n:peers()) do
      if p.state == "active" and p.id == other.id then return p end
    end
  end

  local function transitions(n, filter)
    local out = {}
    for _, e in ipairs(n.events) do
      if not filter or filter(e) then out[#out + 1] = e.old .. ">" .. e.new .. ":" .. e.reason end
    end
    return out
  end

  it("rule 1: a new address is dialled; a known one, in any state, is ignored", function()
    local a, b = node(1), node(2)
    a:discover("10.0.0.2", 4000)
    a:discover("10.0.0.2", 4000) -- while connecting
    assert.is_true(net.run_until(function() return active_with(a, b) end, 5000))
    a:discover("10.0.0.2", 4000) -- while active
    net.advance(100)
    assert.same({ "none>connecting:discovered", "connecting>active:introduced" }, transitions(a))
    -- in lifesupport too
    a:discover("10.0.0.9", 4000)
    assert.is_true(net.run_until(function() return #transitions(a) == 4 end, 1000))
    a:discover("10.0.0.9", 4000)
    net.advance(10)
    assert.same({ "connecting>lifesupport:refused" }, { transitions(a)[4] })
    assert.equal(4, #transitions(a))
  end)

  it("rule 2: an attempt is TLS then introductions, which give the peer's id", function()
    local a, b = node(1), node(2)
    a:discover("10.0.0.2", 4000)
    assert.is_true(net.run_until(function() return active_with(a, b) end, 5000))
    local p = active_with(a, b)
    assert.equal(b.id, p.id)
    assert.equal("10.0.0.2", p.host)
    assert.equal(4000, p.port)
    -- the side that was dialled knows the dialler by its announced port
    local q = active_with(b, a)
    assert.same({ "10.0.0.1", 4000, true }, { q.host, q.port, q.incoming })
  end)

  it("rule 3: refused, silent and untrusted peers go to lifesupport with the reason", function()
    local a = node(1)
    -- accepts TCP, never speaks TLS
    net.listen("10.0.0.7", 4000, function(sock) sock:read_start(function() end) end)
    local m = node(3, { tls = pki.mallory })
    a:discover("10.0.0.9", 4000)
    a:discover("10.0.0.7", 4000)
    a:discover("10.0.0.3", 4000)
    net.advance(2999)
    local by_host = {}
    for _, p in ipairs(a:peers()) do by_host[p.host] = p end
    assert.same({ "lifesupport", "refused" }, { by_host["10.0.0.9"].state, by_host["10.0.0.9"].reason })
    assert.same({ "lifesupport", "tls" }, { by_host["10.0.0.3"].state, by_host["10.0.0.3"].reason })
    assert.equal("connecting", by_host["10.0.0.7"].state)
    net.advance(1)
    by_host = {}
    for _, p in ipairs(a:peers()) do by_host[p.host] = p end
    assert.same({ "lifesupport", "timeout" }, { by_host["10.0.0.7"].state, by_host["10.0.0.7"].reason })
    assert.is_nil(active_with(m, a))
  end)

  it("rule 4: dialling our own address sends it to purgatory 'self'", function()
    local a = node(1)
    a:discover("10.0.0.1", 4000)
    net.advance(100)
    local p = a:peers()
    assert.equal(1, #p)
    assert.same({ "purgatory", "self", a.id }, { p[1].state, p[1].reason, p[1].id })
  end)

  it("rule 4: another address of an active peer goes to purgatory 'duplicate'", function()
    local a, b = node(1), node(2)
    -- b answers on a second address too
    b.swarm.transport:listen("10.0.0.20", 4000, function(conn) b.swarm:_accept(conn) end)
    a:discover("10.0.0.2", 4000)
    assert.is_true(net.run_until(function() return active_with(a, b) end, 5000))
    a:discover("10.0.0.20", 4000)
    net.advance(100)
    local by_host = {}
    for _, p in ipairs(a:peers()) do by_host[p.host] = p end
    assert.same({ "purgatory", "duplicate" }, { by_host["10.0.0.20"].state, by_host["10.0.0.20"].reason })
    assert.equal("active", by_host["10.0.0.2"].state)
    -- the surviving connection was not disturbed
    assert.same({ "none>connecting:discovered", "connecting>active:introduced" },
      transitions(a, function(e) return e.host == "10.0.0.2" end))
    assert.same({ "active" }, states(b))
  end)

  it("rule 4: simultaneous dials end with exactly one connection, the one dialled by the lower id", function()
    local a = node(1, { peers = { "10.0.0.2:4000" } })
    local b = node(2, { peers = { "10.0.0.1:4000" } })
    net.advance(5000)
    assert.same({ "active" }, states(a))
    assert.same({ "active" }, states(b))
    local lower, higher = a, b
    if b.id < a.id then lower, higher = b, a end
    -- the lower id dialled the surviving connection
    assert.is_false(active_with(lower, higher).incoming)
    assert.is_true(active_with(higher, lower).incoming)
    -- no purgatory entry on either side
    for _, n in ipairs({ a, b }) do
      for _, e in ipairs(n.events) do assert.is_not.equal("purgatory", e.new) end
    end
    -- and it stays that way: one connection, heartbeats flowing
    net.advance(20000)
    assert.same({ "active" }, states(a))
    assert.same({ "active" }, states(b))
    local conns = 0
    for _ in pairs(a.swarm.transport.conns) do conns = conns + 1 end
    assert.equal(1, conns)
  end)

  it("rule 4: simultaneous dials where the higher id ends its own dial before the survivor is introduced", function()
    local a, b = node(1), node(2)
    local lower, higher = a, b
    if b.id < a.id then lower, higher = b, a end
    local lhost = lower == a and "10.0.0.1" or "10.0.0.2"
    local hhost = lower == a and "10.0.0.2" or "10.0.0.1"
    -- on the connection the lower id dialled, the higher's answers after
    -- its handshake flight (its HELLO) stay in flight: the lower meets the
    -- higher first on the higher's connection, and the higher, introduced
    -- on both, ends its own as "duplicate" before the lower sees the other
    local stall, seen = true, 0
    net.tap(function(from, to, data, from_port)
      if from == hhost and to == lhost and from_port == 4000 then
        seen = seen + 1
        if stall and seen > 1 then return false end
      end
      return data
    end)
    lower:discover(hhost, 4000)
    higher:discover(lhost, 4000)
    assert.is_true(net.run_until(function()
      for _, e in ipairs(lower.events) do
        if e.reason == "duplicate" then return true end
      end
    end, 5000))
    stall = false
    net.flush_network()
    assert.is_true(net.run_until(function() return active_with(a, b) and active_with(b, a) end, 5000))
    net.tap(nil)
    -- the lower id's own connection survived it all: it was never dropped
    -- for a retry, and nobody went to purgatory
    assert.same({ "none>connecting:discovered", "none>incoming:accepted", "incoming>deleted:merged",
      "connecting>active:introduced", "active>connecting:duplicate", "connecting>active:introduced" },
      transitions(lower))
    for _, n in ipairs({ a, b }) do
      assert.same({}, transitions(n, function(e) return e.new == "purgatory" or e.new == "lifesupport" end))
    end
    assert.is_false(active_with(lower, higher).incoming)
    assert.is_true(active_with(higher, lower).incoming)
    net.advance(20000)
    assert.same({ "active" }, states(a))
    assert.same({ "active" }, states(b))
  end)

  it("rule 5: an active peer is saved to history, and a restarted node finds it without seeds", function()
    local dir = H.tmpdir()
    local a = node(1, { dir = dir })
    local b = node(2)
    a:discover("10.0.0.2", 4000)
    assert.is_true(net.run_until(function() return active_with(a, b) end, 5000))
    local hist = a.store:peers()
    assert.same({ { b.id, "10.0.0.2", 4000 } }, { { hist[1].id, hist[1].host, hist[1].port } })
    a:close()
    net.advance(100)
    assert.same({}, states(b)) -- b forgot the incoming peer when it ended
    local a2 = node(1, { dir = dir })
    assert.is_true(net.run_until(function() return active_with(a2, b) end, 5000))
    assert.same({ "none>connecting:discovered", "connecting>active:introduced" }, transitions(a2))
  end)

  it("rule 6: an active peer with no traffic for the heartbeat interval gets a heartbeat", function()
    local a, b = node(1), node(2)
    a:discover("10.0.0.2", 4000)
    assert.is_true(net.run_until(function() return active_with(a, b) end, 5000))
    local conn = a.swarm:active(b.id).conn
    local sent = conn.session:info().frames_out
    net.advance(1500) -- quiet, but under the interval
    assert.equal(sent, conn.session:info().frames_out)
    net.advance(1000)
    assert.is_true(conn.session:info().frames_out > sent)
    assert.is_number(active_with(a, b).rtt)
    assert.same({ "active" }, states(a))
  end)

  it("rule 7: a missed heartbeat: a dialled peer to lifesupport, an incoming one forgotten; redial", function()
    local a, b = node(1), node(2)
    a:discover("10.0.0.2", 4000)
    assert.is_true(net.run_until(function() return active_with(a, b) end, 5000))
    net.hold("10.0.0.2") -- b stops answering
    net.advance(10000)
    assert.equal("lifesupport", a:peers()[1].state)
    assert.same({ "active>lifesupport:heartbeat" },
      transitions(a, function(e) return e.old == "active" end))
    -- b, on its side, forgot the incoming peer
    assert.same({}, states(b))
    net.release("10.0.0.2")
    assert.is_true(net.run_until(function() return active_with(a, b) end, 20000))
    assert.same({ "lifesupport>connecting:retry", "connecting>active:introduced" },
      { transitions(a)[#transitions(a) - 1], transitions(a)[#transitions(a)] })
  end)

  it("rule 7: a closed connection sends a dialled peer to lifesupport", function()
    local a, b = node(1), node(2)
    a:discover("10.0.0.2", 4000)
    assert.is_true(net.run_until(function() return active_with(a, b) end, 5000))
    b:close() -- says BYE
    net.advance(10)
    local p = a:peers()[1]
    assert.same({ "lifesupport", "shutdown" }, { p.state, p.reason })
  end)

  it("rule 8: lifesupport retries on the backoff schedule, then deletes an unpinned peer", function()
    local a = node(1)
    a:discover("10.0.0.9", 4000)
    net.advance(20000)
    local t = transitions(a)
    assert.same({
      "none>connecting:discovered", "connecting>lifesupport:refused",
      "lifesupport>connecting:retry", "connecting>lifesupport:refused",
      "lifesupport>connecting:retry", "connecting>lifesupport:refused",
      "lifesupport>connecting:retry", "connecting>lifesupport:refused",
      "lifesupport>deleted:exhausted",
    }, t)
    local retries = {}
    for _, e in ipairs(a.events) do
      if e.reason == "retry" then retries[#retries + 1] = e.at end
    end
    local t0 = a.events[2].at
    assert.same({ 1000, 3000, 7000 }, { retries[1] - t0, retries[2] - t0, retries[3] - t0 })
    assert.same({}, a:peers())
  end)

  it("rule 8: a pinned seed is never deleted; it retries at the last delay", function()
    local a = node(1, { peers = { "10.0.0.9:4000" } })
    net.advance(60000)
    local p = a:peers()
    assert.equal(1, #p)
    assert.is_true(p[1].pinned)
    assert.is_true(p[1].attempts >= 10)
    -- when it appears, it is found
    local b = node(9, { tls = pki.n[2], listen = "10.0.0.9:4000" })
    assert.is_true(net.run_until(function() return active_with(a, b) end, 10000))
  end)

  it("rule 8: the backoff may be a function, and is spread by jitter within bounds", function()
    local asked = {}
    local a = node(1, { policy = {
      backoff = function(attempt) asked[#asked + 1] = attempt; return attempt <= 2 and 1000 or nil end,
    } })
    a:discover("10.0.0.9", 4000)
    net.advance(10000)
    assert.same({ 1, 2, 3 }, asked)
    assert.equal("lifesupport>deleted:exhausted", transitions(a)[#transitions(a)])
    local j = node(2, { policy = { backoff = { 1000, 1000, 1000 }, backoff_jitter = 0.5 } })
    j:discover("10.0.0.9", 4000)
    net.advance(10000)
    local last, retries = nil, 0
    for _, e in ipairs(j.events) do
      if e.new == "lifesupport" then last = e.at end
      if e.reason == "retry" then
        retries = retries + 1
        local d = e.at - last
        assert.is_true(d >= 500 and d <= 1500, "delay " .. d)
      end
    end
    -- three delays in the table: three retries, then deleted
    assert.equal(3, retries)
    assert.equal("lifesupport>deleted:exhausted", transitions(j)[#transitions(j)])
  end)

  it("rule 9: purgatory entries are deleted after the purgatory timeout", function()
    local a = node(1)
    a:discover("10.0.0.1", 4000)
    net.advance(100)
    assert.same({ "purgatory" }, states(a))
    net.advance(59000)
    assert.same({ "purgatory" }, states(a))
    net.advance(1000)
    assert.same({}, states(a))
    assert.equal("purgatory>deleted:purgatory over", transitions(a)[#transitions(a)])
  end)

  it("an incoming connection is a peer once TLS proves it, 'incoming' until introductions finish", function()
    local a, b = node(1, { policy = { first_byte_timeout_ms = 1000 } }), node(2)
    -- a TCP connection that never speaks: pending in the transport, never
    -- a peer, closed after the first-byte timeout
    local closed
    net.connect("10.0.0.1", 4000, function(sock)
      sock:read_start(function(_, data) if data == nil then closed = true end end)
    end, "10.0.0.8")
    net.advance(10)
    assert.same({}, states(a))
    assert.equal(1, a:status().connections.pending)
    net.advance(a.policy.first_byte_timeout_ms)
    assert.is_true(closed)
    assert.same({}, transitions(a))
    local c = a:status().connections
    assert.same({ 0, 1, 1 }, { c.pending, c.admitted, c.silent })
    -- a real peer: incoming, then active
    b:discover("10.0.0.1", 4000)
    assert.is_true(net.run_until(function() return active_with(a, b) end, 5000))
    assert.same({ "none>incoming:accepted", "incoming>active:introduced" },
      { transitions(a)[1], transitions(a)[2] })
  end)

  it("refuses incoming peers over the maximum, and keeps discoveries waiting", function()
    local a = node(1, { policy = { max_peers = 1 } })
    local b, c = node(2), node(3)
    b:discover("10.0.0.1", 4000)
    assert.is_true(net.run_until(function() return active_with(a, b) end, 5000))
    c:discover("10.0.0.1", 4000)
    net.advance(100)
    local p = c:peers()[1]
    assert.same({ "lifesupport", "full" }, { p.state, p.reason })
    a:discover("10.0.0.3", 4000)
    net.advance(10)
    assert.same({ "active" }, states(a))
  end)

  it("asks the policy which discovered addresses to accept", function()
    local a = node(1, { policy = { accept_address = function(host) return host ~= "10.0.0.2" end } })
    a:discover("10.0.0.2", 4000)
    a:discover("10.0.0.3", 4000)
    net.advance(10)
    local hosts = {}
    for _, p in ipairs(a:peers()) do hosts[#hosts + 1] = p.host end
    assert.same({ "10.0.0.3" }, hosts)
  end)

  it("lists peers with id, host, port, state, reason, attempts, last activity and rtt", function()
    local a, b = node(1), node(2)
    a:discover("10.0.0.2", 4000)
    assert.is_true(net.run_until(function() return active_with(a, b) end, 5000))
    net.advance(3000)
    local p = a:peers()[1]
    for _, k in ipairs({ "id", "host", "port", "state", "reason", "attempts", "last_activity", "rtt" }) do
      assert.is_not_nil(p[k], k)
    end
    assert.equal(0, p.attempts)
  end)

  it("takes discovery sources with start(report) and stop()", function()
    local stopped = false
    local src = {
      start = function(_, report) report("10.0.0.2", 4000) end,
      stop = function() stopped = true end,
    }
    local b = node(2)
    local a = H.node { dir = H.tmpdir(), tls = pki.n[1], listen = "10.0.0.1:4000",
      adapter = net, policy = FAST, discovery = { src } }
    nodes[#nodes + 1] = a
    assert.is_true(net.run_until(function() return active_with(a, b) end, 5000))
    a:close()
    assert.is_true(stopped)
  end)
  -- ---- a dial still under way when the peer's own connection arrives -----------------

  -- A view of the network where TCP connects from this node finish `ms`
  -- later than they would (a slow route), or fail then (`fail`).
  local function late_dials(ms, fail)
    local view = setmetatable({}, { __index = net })
    view.connect = function(host, port, cb, from)
      local timer
      local inner = net.connect(host, port, function(sock, err, name)
        timer = net.timer(ms, function()
          if fail then
            if sock then sock:close() end
            return cb(nil, "ETIMEDOUT: cannot connect", "ETIMEDOUT")
          end
          cb(sock, err, name)
        end)
      end, from)
      return { cancel = function()
        inner.cancel()
        if timer then timer.stop() end
      end }
    end
    return view
  end

  local function live_conns(n)
    local k = 0
    for c in pairs(n.swarm.transport.conns) do
      if not c.closed then k = k + 1 end
    end
    return k
  end

  for _, slow in ipairs({ 1, 2 }) do
    it(("rule 4: node %d's dial finishing after the peer's own connection made it active leaves one"
      .. " working connection, the one dialled by the lower id"):format(slow), function()
      local a = node(1, { adapter = slow == 1 and late_dials(50) or nil })
      local b = node(2, { adapter = slow == 2 and late_dials(50) or nil })
      a:discover("10.0.0.2", 4000)
      b:discover("10.0.0.1", 4000)
      net.advance(20000) -- past heartbeats and timeouts
      assert.same({ "active" }, states(a))
      assert.same({ "active" }, states(b))
      for _, n in ipairs({ a, b }) do
        assert.equal(1, live_conns(n))
        for _, e in ipairs(n.events) do assert.is_not.equal("lifesupport", e.new) end
      end
      local lower, higher = a, b
      if b.id < a.id then lower, higher = b, a end
      assert.is_false(active_with(lower, higher).incoming)
      assert.is_true(active_with(higher, lower).incoming)
      -- and it carries sync both ways
      a:append(nil, H.events(2))
      b:append(nil, H.events(3))
      assert.is_true(net.run_until(function()
        local x, y = a.store:stream(b.id), b.store:stream(a.id)
        return x and x.last == 3 and y and y.last == 2
      end, 5000))
    end)
  end

  it("rule 4: a dial failing after the peer's own connection made it active leaves the peer active", function()
    local a = node(1, { adapter = late_dials(50, true) })
    local b = node(2)
    a:discover("10.0.0.2", 4000)
    b:discover("10.0.0.1", 4000)
    net.advance(20000)
    assert.same({ "active" }, states(a))
    assert.same({ "active" }, states(b))
    for _, e in ipairs(a.events) do assert.is_not.equal("lifesupport", e.new) end
    b:append(nil, H.events(1))
    assert.is_true(net.run_until(function()
      local x = a.store:stream(b.id)
      return x and x.last == 1
    end, 5000))
  end)

  it("an incoming entry that joins the entry kept for its address ends with incoming > deleted 'merged'", function()
    local a = node(1, { adapter = late_dials(50, true) })
    local b = node(2)
    a:discover("10.0.0.2", 4000)
    b:discover("10.0.0.1", 4000)
    net.advance(1000)
    assert.same({ "none>connecting:discovered", "none>incoming:accepted", "incoming>deleted:merged",
      "connecting>active:introduced" }, transitions(a))
    -- the merged entry's events name the peer it turned out to be
    assert.same({ b.id, "10.0.0.2", 4000 }, { a.events[3].id, a.events[3].host, a.events[3].port })
  end)

  -- ---- policies that fail -------------------------------------------------------------

  local function take_errors(n)
    local out = {}
    for i, e in ipairs(n.errors) do out[i] = e end
    for i = #n.errors, 1, -1 do n.errors[i] = nil end
    return out
  end

  it("rule 8: a backoff function that raises is reported, and the default table decides that retry", function()
    local calls = 0
    local a = node(1, { policy = { backoff = function()
      calls = calls + 1
      if calls == 2 then error("backoff broke") end
      if calls == 3 then return "soon" end
      return 1000
    end } })
    a:discover("10.0.0.9", 4000)
    net.advance(10500)
    -- a retry every second (the default's second and third delays are 1000
    -- and 2000 ms with no jitter in these specs)
    assert.equal(9, #transitions(a, function(e) return e.reason == "retry" end))
    assert.equal("lifesupport", a:peers()[1].state)
    local errs = take_errors(a)
    assert.equal(2, #errs)
    assert.matches("backoff broke", errs[1])
    assert.matches("it returned soon", errs[2])
  end)

  it("reports an accept_address policy that raises, and the default accepts", function()
    local a = node(1, { policy = { accept_address = function() error("accept broke") end } })
    local b = node(2)
    a:discover("10.0.0.2", 4000)
    assert.is_true(net.run_until(function() return active_with(a, b) end, 5000))
    assert.matches("accept broke", take_errors(a)[1])
  end)

  for _, which in ipairs({ "upstream", "replicate" }) do
    it(("a raising %s policy is reported, the default decides, and a lost peer goes to lifesupport"):format(which),
      function()
        local a = node(1, { policy = { [which] = function() error(which .. " broke") end } })
        local b = node(2)
        b:append(nil, H.events(3))
        a:discover("10.0.0.2", 4000)
        assert.is_true(net.run_until(function()
          local x = a.store:stream(b.id)
          return x and x.last == 3
        end, 5000))
        b:close()
        net.advance(100)
        assert.same({ "lifesupport" }, states(a))
        assert.is_nil(a.swarm:active(b.id))
        local errs = take_errors(a)
        assert.is_true(#errs >= 1)
        for _, e in ipairs(errs) do assert.matches(which .. " broke", e) end
      end)
  end

  -- ---- a "peer" handler that closes the node ----------------------------------------

  local function closes_on(n, state)
    n:on("peer", function(_, _, new) if new == state then n:close() end end)
  end

  it("arms no retry timer when a handler closes the node as a peer goes to lifesupport", function()
    local a = node(1)
    closes_on(a, "lifesupport")
    a:discover("10.0.0.9", 4000) -- refused
    net.advance(100)
    assert.is_true(a.closed)
    assert.equal(0, net.pending_timers())
  end)

  it("arms no retry timer when a handler closes the node as an active peer is lost", function()
    local a, b = node(1), node(2)
    closes_on(a, "lifesupport")
    a:discover("10.0.0.2", 4000)
    assert.is_true(net.run_until(function() return active_with(a, b) end, 5000))
    b:close()
    net.advance(100)
    assert.is_true(a.closed)
    assert.equal(0, net.pending_timers())
  end)

  it("arms no purgatory timer when a handler closes the node as a peer goes to purgatory", function()
    local a = node(1)
    closes_on(a, "purgatory")
    a:discover("10.0.0.1", 4000) -- itself
    net.advance(100)
    assert.is_true(a.closed)
    assert.equal(0, net.pending_timers())
  end)

  it("dials nothing when a handler closes the node as a peer starts connecting", function()
    local a = node(1)
    local dialled = 0
    net.listen("10.0.0.7", 4000, function() dialled = dialled + 1 end)
    closes_on(a, "connecting")
    a:discover("10.0.0.7", 4000)
    net.advance(100)
    assert.is_true(a.closed)
    assert.equal(0, dialled)
    assert.equal(0, net.pending_timers())
  end)

  it("touches no closed store when a handler closes the node as a peer becomes active", function()
    local a = node(1)
    node(2)
    closes_on(a, "active")
    a:discover("10.0.0.2", 4000)
    net.advance(100)
    assert.is_true(a.closed)
    -- after_each: no error reported (peer history went to a closed store before)
  end)

  -- ---- max_peers ----------------------------------------------------------------------

  it("keeps seeds over max_peers waiting, and dials them as slots free", function()
    local a = node(1, { peers = { "10.0.0.9:4000", "10.0.0.2:4000" }, policy = { max_peers = 1 } })
    local b = node(2)
    assert.is_true(net.run_until(function() return active_with(a, b) end, 5000))
    -- the first seed (nobody there) keeps retrying, but waits while the node is full
    net.advance(20000)
    assert.same({ "none>connecting:discovered", "connecting>lifesupport:refused" },
      transitions(a, function(e) return e.host == "10.0.0.9" end))
    assert.same({ "active", "lifesupport" }, states(a))
  end)

  it("dials a waiting address when a slot frees, and a due retry waits for one", function()
    local a = node(1, { policy = { max_peers = 1 } })
    -- (b and c take no addresses from peer exchange: b would dial a on its own)
    local b, c = node(2, { policy = { pex_per_minute = 0 } }), node(3, { policy = { pex_per_minute = 0 } })
    a:discover("10.0.0.2", 4000)
    assert.is_true(net.run_until(function() return active_with(a, b) end, 5000))
    a:discover("10.0.0.3", 4000) -- waits
    net.advance(100)
    assert.same({}, transitions(a, function(e) return e.host == "10.0.0.3" end))
    -- b stops answering: its entry leaves the live states, and c gets the slot
    net.hold("10.0.0.2")
    assert.is_true(net.run_until(function() return active_with(a, c) end, 20000))
    assert.equal("lifesupport", transitions(a, function(e) return e.host == "10.0.0.2" end)[3]:match(">(%a+)"))
    -- b is back, but its retries wait while c holds the only slot
    net.release("10.0.0.2")
    net.advance(20000)
    assert.same({ "none>connecting:discovered", "connecting>active:introduced", "active>lifesupport:heartbeat" },
      transitions(a, function(e) return e.host == "10.0.0.2" end))
    -- c goes away: b gets the slot back
    c:close()
    assert.is_true(net.run_until(function() return active_with(a, b) end, 5000))
  end)
end)
