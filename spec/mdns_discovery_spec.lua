-- odo.discovery.mdns on the in-memory adapter's UDP: real nodes and real
-- engines, datagrams moved in memory (no multicast leaves the process), so
-- the source's own rules run under the sanitizer: same swarm found and
-- dialled, other swarms ignored, goodbye forgets, status, failures.
local H = require "helper"
local discovery = require "odo.discovery"

describe("odo.discovery.mdns (in-memory network)", function()
  local w = H.memory_world("md", 3)
  setup(w.setup)
  before_each(w.before_each)
  after_each(function()
    for _, n in ipairs(w.after_each()) do assert.same({}, n.errors) end
  end)

  local function node(i, src)
    local n = H.node {
      dir = H.tmpdir(), node_id = false, tls = w.pki.n[i], listen = "10.0.0." .. i .. ":4000",
      adapter = w.net, policy = H.FAST, discovery = { src },
    }
    w.nodes[#w.nodes + 1] = n
    return n
  end

  local function active(n, id)
    for _, p in ipairs(n:peers()) do
      if p.state == "active" and p.id == id then return true end
    end
    return false
  end

  it("nodes of one swarm find and connect to each other; another swarm is only logged", function()
    local logs = { {}, {}, {} }
    local srcs = {}
    for i, swarm in ipairs({ "lab", "lab" }) do
      srcs[i] = discovery.mdns { swarm = swarm, log = function(l) table.insert(logs[i], l) end }
    end
    -- without a log function, lines are the node's "discovery" events
    srcs[3] = discovery.mdns { swarm = "other" }
    local n1, n2, n3 = node(1, srcs[1]), node(2, srcs[2]), node(3, srcs[3])
    n3:on("discovery", function(name, line) table.insert(logs[3], name .. ": " .. line) end)
    assert.is_true(w.net.run_until(function() return active(n1, n2.id) and active(n2, n1.id) end, 20000, 20))
    local st = srcs[1]:status()
    assert.equal("mdns", st.name)
    assert.equal("lab", st.swarm)
    assert.equal("10.0.0.1", st.interface)
    assert.equal(1, #st.found)
    assert.same({ n2.id, "10.0.0.2", 4000 }, { st.found[1].id, st.found[1].host, st.found[1].port })
    assert.equal(n2.id, st.last.id)
    assert.is_number(st.last.at)
    assert.is_nil(st.error)
    -- n3 heard them and they heard n3, and nobody dialled across swarms
    assert.is_true(w.net.run_until(function()
      local s = table.concat(logs[3], "\n")
      return select(2, s:gsub("mdns: ignored odo%-%x+ at 10%.0%.0%.[12]:4000 %(swarm 'lab', not 'other'%)", "")) == 2
    end, 20000, 20), table.concat(logs[3], "\n"))
    assert.matches("ignored odo%-%x+ at 10%.0%.0%.3:4000 %(swarm 'other', not 'lab'%)", table.concat(logs[1], "\n"))
    assert.same({}, srcs[3]:status().found)
    for _, n in ipairs({ n1, n2, n3 }) do
      for _, p in ipairs(n:peers()) do
        assert.is_false(p.host == "10.0.0.3" or (n == n3 and p.host ~= nil), "a peer across swarms")
      end
    end

    -- a clean stop: its goodbye makes the others forget it
    n2:close()
    assert.is_true(w.net.run_until(function() return #srcs[1]:status().found == 0 end, 20000, 20))
    assert.matches("gone " .. n2.id:sub(1, 16) .. " at 10%.0%.0%.2:4000", table.concat(logs[1], "\n"))
  end)

  it("a source that cannot start says why in its status and log", function()
    local lines = {}
    local busy = assert(w.net.udp("0.0.0.0", 5353))
    local src = discovery.mdns { log = function(l) lines[#lines + 1] = l end }
    node(1, src)
    assert.is_true(w.net.run_until(function() return src:status().error ~= nil end, 1000, 10))
    assert.matches("EADDRINUSE", src:status().error)
    assert.matches("mdns: EADDRINUSE", lines[1])
    busy:close()
    assert.has_error(function() discovery.mdns { swarm = "" } end)
    assert.has_error(function() discovery.mdns { interface = "eth0" } end)
  end)

  it("tells packets from the interface's subnet from others (RFC 6762 §11)", function()
    local same = require("odo.discovery.mdns").same_subnet
    assert.is_true(same("10.77.0.2", "10.77.0.1", "255.255.255.0"))
    assert.is_false(same("10.77.1.2", "10.77.0.1", "255.255.255.0"))
    assert.is_true(same("192.168.1.130", "192.168.1.129", "255.255.255.128"))
    assert.is_false(same("192.168.1.20", "192.168.1.129", "255.255.255.128"))
    assert.is_true(same("172.20.9.9", "172.16.0.1", "255.240.0.0"))
    assert.is_false(same("172.32.0.1", "172.16.0.1", "255.240.0.0"))
  end)
end)
