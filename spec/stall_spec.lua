-- Relaying past a dead relay on the in-memory adapter (real TLS, sessions,
-- sync engines and stores; simulated sockets and time): every (node,
-- stream) pair arrives, however the paths and distances broke.
local H = require "helper"

describe("relaying after relays die", function()
  local env = H.memory_world("st", 12)
  local pki, net, nodes
  setup(function() env.setup(); pki = env.pki end)
  teardown(H.cleanup)
  before_each(function() env.before_each(); net, nodes = env.net, env.nodes end)
  after_each(env.after_each_checked)

  local function addr(i) return "10.0.0." .. i .. ":4000" end

  -- nodes 1..#links, each dialling the nodes links[i] names; no peer exchange
  local function shape(links, policy)
    return H.link_nodes(links, function(i, peers)
      local n = H.net_node(net, i, pki.n[i], { peers = peers, policy = H.merge({ pex_per_minute = 0 }, policy) })
      nodes[#nodes + 1] = n
      return n
    end)
  end

  -- a condition: every node of ns holds every stream of ns up to `last`
  local function holds(ns, last)
    return function()
      for _, n in ipairs(ns) do
        for _, m in ipairs(ns) do
          local st = n.store:stream(m.id)
          if not st or st.last < last then return false end
        end
      end
      return true
    end
  end

  -- (node, stream) pairs still short of `last`, said for a failure message
  local function missing(ns, last)
    local out = {}
    for i, n in ipairs(ns) do
      for j, m in ipairs(ns) do
        local st = n.store:stream(m.id)
        if not st or st.last < last then
          local up = n.sync.upstream[m.id]
          local line = ("%d lacks %d's (has %s, upstream %s):"):format(i, j, st and st.last or "none",
            up and up:sub(1, 6) or "none")
          for pid, rec in pairs(n.sync.peers) do
            local e = rec.catalogue[m.id]
            line = line .. (" %s=%s"):format(pid:sub(1, 6),
              e and (e.hops .. "/" .. tostring(e.follows_you) .. "/" .. e.last) or "none")
          end
          out[#out + 1] = line
        end
      end
    end
    return table.concat(out, "\n")
  end

  it("a line longer than max_hops converges", function()
    local ns = shape({ {}, { 1 }, { 2 }, { 3 }, { 4 }, { 5 }, { 6 }, { 7 } }, { max_hops = 3 })
    for _, n in ipairs(ns) do n:append(nil, H.events(3, "s")) end
    assert.is_true(net.run_until(holds(ns, 3), 600000), missing(ns, 3))
    for _, n in ipairs(ns) do n:append(nil, H.events(2, "after")) end
    assert.is_true(net.run_until(holds(ns, 5), 600000), missing(ns, 5))
  end)

  it("a 4x3 grid with relays killed converges", function()
    for _, dead in ipairs({ { 2, 6 }, { 5, 6, 7 }, { 6, 7 }, { 2, 7 }, { 6, 10 }, { 3, 6 }, { 7, 10 } }) do
      local links = {}
      for r = 0, 2 do
        for c = 0, 3 do
          local to = {}
          if c < 3 then to[#to + 1] = 4 * r + c + 2 end
          if r < 2 then to[#to + 1] = 4 * (r + 1) + c + 1 end
          links[#links + 1] = to
        end
      end
      env.after_each()
      env.before_each(); net, nodes = env.net, env.nodes
      local ns = shape(links, nil)
      for _, n in ipairs(ns) do n:append(nil, H.events(1, "s")) end
      assert.is_true(net.run_until(holds(ns, 1), 600000), missing(ns, 1))
      local rest, gone = {}, {}
      for _, i in ipairs(dead) do ns[i]:close(); gone[i] = true end
      for i, n in ipairs(ns) do if not gone[i] then rest[#rest + 1] = n end end
      for _, n in ipairs(rest) do n:append(nil, H.events(1, "after")) end
      assert.is_true(net.run_until(holds(rest, 2), 600000), table.concat(dead, ",") .. ": " .. missing(rest, 2))
    end
  end)

  it("a mesh grown from a seed re-converges after a quarter of it dies", function()
    local mesh = { target_peers = 3, dial_peers = 2, pex_interval_ms = 2000, long_range_peers = 1 }
    for round = 1, 3 do
      math.randomseed(round)
      env.after_each()
      env.before_each(); net, nodes = env.net, env.nodes
      local ns = {}
      for i = 1, 12 do
        ns[i] = H.net_node(net, i, pki.n[i], { peers = i > 1 and { addr(1) } or nil,
          policy = H.merge(mesh, { max_peers = 6 }) })
        nodes[#nodes + 1] = ns[i]
        ns[i]:append(nil, H.events(1, "s"))
      end
      assert.is_true(net.run_until(holds(ns, 1), 600000), missing(ns, 1))
      net.run_until(function() return false end, 5000)
      local rest, gone, k = {}, {}, 0
      while k < 3 do
        local i = math.random(2, 12)
        if not gone[i] then ns[i]:close(); gone[i] = true; k = k + 1 end
      end
      for i, n in ipairs(ns) do if not gone[i] then rest[#rest + 1] = n end end
      for _, n in ipairs(rest) do n:append(nil, H.events(1, "after")) end
      assert.is_true(net.run_until(holds(rest, 2), 600000), "round " .. round .. ": " .. missing(rest, 2))
    end
  end)

  it("a part of the mesh cut off by dead nodes dials past its target to the seed and heals", function()
    -- A = 1, 2, 3 and B = 4, 5, 6, each a triangle, joined only by 7; 4
    -- was refused by the seed 1 as full, so it retries the seed only when
    -- a slot frees: once 7 dies, 4 is still at its dialling limit
    local pol = { target_peers = 3, dial_peers = 2, long_range_peers = 0, max_peers = 8, pex_per_minute = 0 }
    local ns = {}
    local function make(i, to)
      local peers = {}
      for _, j in ipairs(to) do peers[#peers + 1] = addr(j) end
      -- B's nodes keep a fourth peer: 4 stays at its dialling limit (5, 6) when 7 dies
      ns[i] = H.net_node(net, i, pki.n[i], { peers = peers,
        policy = H.merge(pol, { target_peers = (i >= 4 and i <= 6) and 4 or 3 }) })
      nodes[#nodes + 1] = ns[i]
    end
    make(1, {}); make(2, { 1 }); make(3, { 1, 2 }); make(7, { 1 })
    assert.is_true(net.run_until(function() return #ns[1]:peers() >= 3 and ns[7].swarm:active(ns[1].id) end, 60000))
    make(4, { 1, 7 }); make(5, { 4 }); make(6, { 4, 5 })
    local all = { ns[1], ns[2], ns[3], ns[4], ns[5], ns[6], ns[7] }
    for _, n in ipairs(all) do n:append(nil, H.events(1, "s")) end
    assert.is_true(net.run_until(holds(all, 1), 600000), missing(all, 1))
    assert.is_nil(ns[4].swarm:active(ns[1].id))
    ns[7]:close()
    local rest = { ns[1], ns[2], ns[3], ns[4], ns[5], ns[6] }
    for _, n in ipairs(rest) do n:append(nil, H.events(1, "after")) end
    assert.is_true(net.run_until(holds(rest, 2), 600000), missing(rest, 2))
  end)
end)
