-- DNS discovery end to end: `odo run --dns` processes with no seeds find
-- each other through a real dnsmasq on 127.0.0.1 (a port chosen at run
-- time), and replicate. Timings shortened by a --config file.
local H = require "helper"
local dnsmasq = require "dnsmasq"

local CONFIG = [[
return { policy = {
  tick_ms = 100, heartbeat_interval_ms = 500, heartbeat_timeout_ms = 2000,
  handshake_timeout_ms = 2000, backoff = { 200, 400, 800, 800, 800, 800, 800, 800 },
  backoff_cap_ms = 800,
  dns_ttl_floor_ms = 500, dns_backoff = { 200, 400, 800 }, dns_timeout_ms = 300, dns_tries = 1,
} }
]]

describe("odo run --dns", function()
  local w = H.odo_swarm(CONFIG)
  setup(w.setup)
  teardown(w.teardown)
  after_each(function()
    w.stop_all()
    dnsmasq.stop_all()
  end)

  local function run(name, port, args) return w.start(name, { port = port, args = args }) end

  local function dns_args(server_port, ...)
    local a = { "--dns", "swarm.test", "--dns-server", "127.0.0.1:" .. server_port }
    for _, x in ipairs({ ... }) do a[#a + 1] = x end
    return a
  end

  local function active(p)
    local st = H.status(p.dir)
    local c = 0
    for _, q in ipairs(st and st.peers or {}) do
      if q.state == "active" then c = c + 1 end
    end
    return c, st
  end

  local function logged(p, text) return H.read_file(p.log):find(text, 1, true) ~= nil end

  -- appends one event on each node, then waits until every node holds
  -- every node's stream at revision 1
  local function replicate(ps)
    local ids = {}
    for i, p in ipairs(ps) do
      local out, ok = H.odo_cmd("append", "--dir", p.dir, "from " .. i)
      assert.is_true(ok, out)
      ids[i] = H.status(p.dir).id
    end
    assert.is_true(H.wait(function()
      for _, p in ipairs(ps) do
        local st = H.status(p.dir)
        local have = {}
        for _, s in ipairs(st and st.streams or {}) do have[s.id] = math.tointeger(s.last) end
        for _, id in ipairs(ids) do
          if have[id] ~= 1 then return false end
        end
      end
      return true
    end, 30000), H.logs(ps))
  end

  it("three nodes with no seeds find each other through SRV records, and replicate", function()
    local ports = H.free_ports(3)
    local d = dnsmasq.start { records = {
      "--srv-host=_odo._tcp.swarm.test,n1.swarm.test," .. ports[1] .. ",10,50",
      "--srv-host=_odo._tcp.swarm.test,n2.swarm.test," .. ports[2] .. ",10,50",
      "--srv-host=_odo._tcp.swarm.test,n3.swarm.test," .. ports[3] .. ",20,50",
      "--host-record=n1.swarm.test,127.0.0.1", "--host-record=n2.swarm.test,127.0.0.1",
      "--host-record=n3.swarm.test,127.0.0.1",
    } }
    local ps = {}
    for i = 1, 3 do ps[i] = run("n" .. i, ports[i], dns_args(d.port)) end
    assert.is_true(H.wait(function()
      return active(ps[1]) == 2 and active(ps[2]) == 2 and active(ps[3]) == 2
    end, 30000), H.logs(ps))
    replicate(ps)
    local _, st = active(ps[1])
    local disc = st.discovery[1]
    assert.equal("dns swarm.test", disc.name)
    assert.equal("SRV", disc.via)
    assert.equal(3, #disc.found)
    assert.is_number(disc.found_at)
    assert.is_true(logged(ps[1], "dns swarm.test: found 3 peer addresses through _odo._tcp.swarm.test SRV"))
    -- the status table shows the source, what it found and when
    local text = H.odo_cmd("status", "--dir", ps[1].dir)
    assert.matches("\ndiscovery: 1\n  SOURCE +FOUND +LAST FOUND +STATE +LAST ERROR\n"
      .. "  dns swarm%.test +3 +%d+s ago +%- +%-", text)
  end)

  it("through A records with the default port: the node's own listen port, or --dns-port", function()
    local ports = H.free_ports(3)
    local d = dnsmasq.start { records = { "--host-record=swarm.test,127.0.0.1" } }
    -- n1 uses its own listen port, so it finds itself; n2 and n3 are told n1's
    local ps = { run("n1", ports[1], dns_args(d.port)) }
    ps[2] = run("n2", ports[2], dns_args(d.port, "--dns-port", tostring(ports[1])))
    ps[3] = run("n3", ports[3], dns_args(d.port, "--dns-port", tostring(ports[1])))
    assert.is_true(H.wait(function() return logged(ps[1], "connecting -> purgatory (self") end, 30000), H.logs(ps))
    assert.is_true(logged(ps[1], "through swarm.test A/AAAA: 127.0.0.1:" .. ports[1]))
    assert.is_true(H.wait(function() return active(ps[1]) == 2 end, 30000), H.logs(ps))
    replicate(ps)
    assert.equal("A/AAAA", H.status(ps[2].dir).discovery[1].via)
  end)

  it("a record added after start is found once its TTL runs out (dnsmasq restarted with it)", function()
    local ports = H.free_ports(2)
    local self_only = { "--srv-host=_odo._tcp.swarm.test,a.swarm.test," .. ports[1] .. ",10,50",
      "--host-record=a.swarm.test,127.0.0.1", "--host-record=b.swarm.test,127.0.0.1" }
    local d = dnsmasq.start { ttl = 1, records = self_only }
    local a = run("a", ports[1], dns_args(d.port))
    local b = run("b", ports[2]) -- no seeds, no DNS: only a can find b
    assert.is_true(H.wait(function() return logged(a, "found 1 peer address") end, 30000), H.logs({ a, b }))
    local port = d.port
    d.stop()
    local with_b = { "--srv-host=_odo._tcp.swarm.test,b.swarm.test," .. ports[2] .. ",10,50" }
    for _, r in ipairs(self_only) do with_b[#with_b + 1] = r end
    dnsmasq.start { port = port, ttl = 1, records = with_b }
    assert.is_true(H.wait(function() return active(a) == 1 and active(b) == 1 end, 30000), H.logs({ a, b }))
    assert.is_true(logged(a, "found 2 peer addresses"))
  end)

  it("a DNS server down at start: the node says so, retries, and finds its peer once the server is up", function()
    local ports = H.free_ports(3)
    local a = run("a", ports[1], dns_args(ports[3]))
    local b = run("b", ports[2])
    assert.is_true(H.wait(function() return logged(a, "DNS server 127.0.0.1:" .. ports[3] .. " did not answer") end,
      30000), H.logs({ a, b }))
    assert.equal(0, (active(a)))
    dnsmasq.start { port = ports[3], records = {
      "--srv-host=_odo._tcp.swarm.test,b.swarm.test," .. ports[2] .. ",10,50",
      "--host-record=b.swarm.test,127.0.0.1" } }
    assert.is_true(H.wait(function() return active(a) == 1 and active(b) == 1 end, 30000), H.logs({ a, b }))
    assert.matches("did not answer", H.status(a.dir).discovery[1].error)
  end)

  it("refuses --dns-server that is not an address, and --dns-port without --dns", function()
    local port = H.free_ports(1)[1]
    local x = w.certs("x")
    local base = { "run", "--dir", w.tmp .. "/x", "--listen", "127.0.0.1:" .. port, "--ca", x.ca,
      "--cert", x.cert, "--key", x.key }
    local function odo(...)
      local args = {}
      for _, v in ipairs(base) do args[#args + 1] = v end
      for _, v in ipairs({ ... }) do args[#args + 1] = v end
      return H.odo_cmd(table.unpack(args))
    end
    local out, ok = odo("--dns", "swarm.test", "--dns-server", "dns.example:53")
    assert.is_false(ok)
    assert.matches("odo: %-%-dns swarm.test: cannot use DNS server 'dns.example:53'", out)
    out, ok = odo("--dns-port", "4000")
    assert.is_false(ok)
    assert.matches("need %-%-dns NAME", out)
  end)
end)
