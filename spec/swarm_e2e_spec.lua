-- The swarm end to end: `odo run` processes on loopback, real sockets and
-- real time, with generous timeouts. Timings are shortened by a --config
-- file so the cases stay quick.
local H = require "helper"
local uv = require "luv"

-- the topologies here are the spec's: no peer exchange (spec/mesh_spec.lua has it)
local CONFIG = H.QUICK_RUN_CONFIG:gsub("policy = {", "policy = {\n  pex_per_minute = 0,", 1)

describe("odo run", function()
  local w = H.odo_swarm(CONFIG)
  setup(w.setup)
  teardown(w.teardown)
  after_each(function() w.stop_all("CONT", "TERM") end)

  -- starts `odo run` for a node named `name` (a certificate of the test CA)
  local function run(name, port, peers, dir) return w.start(name, { port = port, peers = peers, dir = dir }) end

  local function logged(p, pattern)
    return H.read_file(p.log):find(pattern) ~= nil
  end

  local function active_peers(p)
    local st = H.status(p.dir)
    local out = {}
    for _, q in ipairs(st and st.peers or {}) do
      if q.state == "active" then out[#out + 1] = q end
    end
    return out, st
  end

  it("a stopped peer misses heartbeats and goes to lifesupport; continued, it is active again", function()
    local ports = H.free_ports(2)
    local b = run("b", ports[2])
    local a = run("a", ports[1], { ports[2] })
    assert.is_true(H.wait(function() return #active_peers(a) == 1 end, 20000), H.read_file(a.log))
    H.kill(b.pid, "STOP")
    assert.is_true(H.wait(function() return logged(a, "active %-> lifesupport %(heartbeat") end, 20000),
      H.read_file(a.log))
    assert.is_true(H.alive(b.pid))
    H.kill(b.pid, "CONT")
    assert.is_true(H.wait(function()
      local log = H.read_file(a.log)
      local after = log:match("active %-> lifesupport %(heartbeat.*$")
      return after and after:find("lifesupport %-> connecting %(retry") and after:find("connecting %-> active")
    end, 30000), H.read_file(a.log))
    assert.equal(1, #active_peers(a))
  end)

  it("dialling its own listen address sends it to purgatory 'self'", function()
    local port = H.free_ports(1)[1]
    local a = run("a", port, { port })
    assert.is_true(H.wait(function() return logged(a, "connecting %-> purgatory %(self") end, 20000),
      H.read_file(a.log))
    local _, st = active_peers(a)
    assert.equal("purgatory", st.peers[1].state)
  end)

  it("two nodes dialling each other at once end with exactly one connection", function()
    local ports = H.free_ports(2)
    local go = w.tmp .. "/go"
    os.remove(go)
    -- both listen first; both dial when the file appears (polled every ms)
    local function config(peer_port)
      local path = ("%s/at-go-%d.lua"):format(w.tmp, peer_port)
      local fh = assert(io.open(path, "w"))
      fh:write(("local uv = require 'luv'\nlocal conf = dofile(%q)\n"):format(w.tmp .. "/fast.lua"), ([[
conf.discovery = { {
  name = "at-go",
  start = function(self, report)
    self.t = uv.new_timer()
    self.t:start(1, 1, function()
      local f = io.open(%q)
      if f then f:close(); self.t:stop(); report("127.0.0.1", %d) end
    end)
  end,
  stop = function(self) if not self.t:is_closing() then self.t:close() end end,
} }
return conf
]]):format(go, peer_port))
      fh:close()
      return path
    end
    local function start(name, port, peer) return w.start(name, { port = port, config = config(peer) }) end
    local a = start("a", ports[1], ports[2])
    local b = start("b", ports[2], ports[1])
    assert.is_true(H.wait(function() return logged(a, "listening") and logged(b, "listening") end, 20000))
    -- both stopped while the file appears: continued together, each runs
    -- its overdue timer (and dials) before it reads its sockets, so both
    -- dial before either has met the other
    H.kill(a.pid, "STOP")
    H.kill(b.pid, "STOP")
    io.open(go, "w"):close()
    H.kill(a.pid, "CONT")
    H.kill(b.pid, "CONT")
    assert.is_true(H.wait(function() return #active_peers(a) == 1 and #active_peers(b) == 1 end, 20000))
    uv.sleep(1500) -- and it stays so
    local pa, sa = active_peers(a)
    local pb = active_peers(b)
    assert.equal(1, #pa)
    assert.equal(1, #pb)
    for _, p in ipairs({ a, b }) do assert.is_false(logged(p, "purgatory"), H.read_file(p.log)) end
    -- both dialled, and the connection dialled by the lower id survived
    for _, p in ipairs({ a, b }) do
      assert.is_true(logged(p, "connecting %(discovered: at%-go"), H.read_file(a.log) .. H.read_file(b.log))
    end
    local lower_is_a = sa.id < pa[1].id
    assert.equal(not lower_is_a, pa[1].incoming, H.read_file(a.log) .. H.read_file(b.log))
    assert.equal(lower_is_a, pb[1].incoming)
  end)

  it("a restarted node finds its peers from history, with no seeds", function()
    local ports = H.free_ports(2)
    run("b", ports[2])
    local a = run("a", ports[1], { ports[2] })
    assert.is_true(H.wait(function() return #active_peers(a) == 1 end, 20000))
    H.kill(a.pid, "TERM")
    assert.is_true(H.wait(function() return not H.alive(a.pid) end, 10000))
    assert.is_true(logged(a, "stopped"))
    local a2 = run("a", ports[1], nil, a.dir)
    assert.is_true(H.wait(function() return #active_peers(a2) == 1 end, 20000), H.read_file(a2.log))
    assert.is_true(logged(a2, "connecting %(discovered: history%)"))
  end)

  it("a peer that accepts TCP but never speaks TLS goes to lifesupport 'timeout'", function()
    local silent = uv.new_tcp()
    assert(silent:bind("127.0.0.1", 0))
    assert(silent:listen(8, function() end)) -- the kernel accepts; nobody answers
    local port = silent:getsockname().port
    local a = run("a", H.free_ports(1)[1], { port })
    assert.is_true(H.wait(function() return logged(a, "connecting %-> lifesupport %(timeout") end, 20000),
      H.read_file(a.log))
    silent:close()
    uv.run("nowait")
  end)

  it("20 nodes in a ring, each seeded with its neighbour, all end active with both neighbours", function()
    local N = 20
    local ports = H.free_ports(N)
    local ring = {}
    for i = 1, N do
      ring[i] = run("r" .. i, ports[i], { ports[i % N + 1] })
    end
    local ids = {}
    assert.is_true(H.wait(function()
      for i = 1, N do
        if not ids[i] then
          local st = H.status(ring[i].dir)
          ids[i] = st and st.id
        end
        if not ids[i] then return false end
      end
      return true
    end, 60000))
    assert.is_true(H.wait(function()
      for i = 1, N do
        local peers = active_peers(ring[i])
        if #peers ~= 2 then return false end
      end
      return true
    end, 120000), "not every node has two active peers")
    for i = 1, N do
      local want = { [ids[i % N + 1]] = true, [ids[(i - 2) % N + 1]] = true }
      for _, p in ipairs(active_peers(ring[i])) do assert.is_true(want[p.id]) end
      -- every transition was reported, each from the state the last one left
      local log = H.read_file(ring[i].log)
      local last = {}
      local count = 0
      for id, old, new in log:gmatch("peer (%S+) %S+ (%a+) %-> (%a+)") do
        count = count + 1
        if old ~= "none" and old ~= "incoming" and id ~= "?" then
          assert.equal(last[id] or old, old, "node " .. i .. " peer " .. id)
        end
        last[id] = new
      end
      assert.is_true(count >= 4, "node " .. i .. " logged " .. count .. " transitions")
      assert.is_truthy(log:find("none %-> connecting %(discovered: static"))
      assert.is_truthy(log:find("connecting %-> active %(introduced: outgoing"))
      assert.is_truthy(log:find("none %-> incoming"))
      assert.is_truthy(log:find("incoming %-> active %(introduced: incoming"))
    end
  end)
end)
