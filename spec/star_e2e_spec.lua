-- A star seed of real processes: 12 `odo run` nodes on 127.0.0.1, each
-- given only node 1 as its --peer, node 1 with max_peers 4. Peer exchange
-- turns the star into a mesh: every node ends up holding every stream, no
-- node ever has more active peers than its max_peers (nor its target),
-- and streams are relayed by other nodes than the seed. ODO_LONG=1: the
-- same with 200 processes.
local H = require "helper"

local function swarm_of(n)
  return function()
    local tmp = H.tmpdir()
    local pki = H.pki(tmp)
    -- 200 processes on a small machine: heartbeats and introductions
    -- slower than the quick ones, or the machine does little else
    local config = n <= 20 and H.QUICK_RUN_CONFIG or [[
return { policy = {
  tick_ms = 500,
  heartbeat_interval_ms = 3000,
  heartbeat_timeout_ms = 20000,
  handshake_timeout_ms = 15000,
  backoff_cap_ms = 2000,
} }
]]
    H.write_file(tmp .. "/fast.lua", config)
    local seed = config:gsub("return { policy = {", "return { policy = {\n  max_peers = 4,", 1)
    H.write_file(tmp .. "/seed.lua", seed)
    local procs = {}
    local ok, err = pcall(function()
      local nodes = {}
      for i = 1, n do
        local dir = ("%s/n%d"):format(tmp, i)
        local p = H.odo_run { dir = dir, port = H.free_ports(1)[1], certs = pki.node("n" .. i),
          peers = i > 1 and { nodes[1].port } or nil, config = tmp .. (i == 1 and "/seed.lua" or "/fast.lua") }
        procs[#procs + 1] = p.pid
        nodes[i] = p
      end
      for _, p in ipairs(nodes) do
        p.id = H.running_id(p.dir)
        assert(p.id, H.read_file(p.log))
      end
      for i, p in ipairs(nodes) do
        local out, done = H.run(("seq 5 | sed 's/^/n%d /' | '%s' append --dir '%s'"):format(i, H.odo, p.dir))
        assert(done, out)
      end
      -- poll every node's status until each holds every stream whole; on
      -- the way, no node is seen above its limit of active peers
      -- (a node seen whole is not asked again until the end)
      local limit = { [nodes[1].id] = 4 }
      local over, status, whole = {}, {}, {}
      local function look(p)
        local st = H.status(p.dir)
        if st then status[p.id] = st end
        local active, full = 0, 0
        for _, peer in ipairs(st and st.peers or {}) do
          if peer.state == "active" then active = active + 1 end
        end
        if active > (limit[p.id] or 8) then over[#over + 1] = ("%s had %d active peers"):format(p.dir, active) end
        for _, s in ipairs(st and st.streams or {}) do
          if s.last >= 5 then full = full + 1 end
        end
        whole[p.id] = full >= n
      end
      local function converged()
        local all = true
        for _, p in ipairs(nodes) do
          if not whole[p.id] then look(p) end
          all = all and whole[p.id]
        end
        return all
      end
      local deadline = n > 20 and 900000 or 120000
      assert.is_true(H.wait(converged, deadline), "not every node holds every stream")
      for _, p in ipairs(nodes) do look(p) end
      assert.same({}, over)
      -- relays other than the seed: a node following another's stream from
      -- a peer that is neither its source nor node 1
      local relayed = 0
      for _, st in pairs(status) do
        for _, s in ipairs(st.streams) do
          if not s.own and s.upstream ~= s.source and s.upstream ~= nodes[1].id then relayed = relayed + 1 end
        end
      end
      assert.is_true(relayed > 0, "node 1 relays every stream")
    end)
    for _, pid in ipairs(procs) do H.kill(pid, "KILL") end
    H.cleanup()
    assert(ok, err)
  end
end

describe("a star seed of odo run processes", function()
  it("of 12 nodes (the seed's max_peers 4) becomes a mesh in which every node holds every stream",
    swarm_of(12))
  if os.getenv("ODO_LONG") == "1" then
    it("of 200 nodes becomes a mesh in which every node holds every stream", swarm_of(200))
  end
end)
