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
  after_each(function()
    for _, n in ipairs(env.after_each()) do assert.same({}, n.errors) end
  end)

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
    net.run_until(function() return false end, 30000)
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

  it("says a repeated log line once a window, with a count", function()
    local Repeats = require "odo.cli.repeats"
    local lines, t = {}, 0
    local r = Repeats.new(function(l) lines[#lines + 1] = l end, function() return t end, 60000)
    for i = 1, 300 do
      t = i * 500
      r:say("a", "peer x connecting -> active")
      r:say("b", "peer x active -> lifesupport")
    end
    assert.same({ "peer x connecting -> active", "peer x active -> lifesupport",
      "peer x connecting -> active (and 119 more like it in the last 60 s)",
      "peer x active -> lifesupport (and 119 more like it in the last 60 s)" },
      { lines[1], lines[2], lines[3], lines[4] })
    assert.equal(6, #lines)
  end)
end)
