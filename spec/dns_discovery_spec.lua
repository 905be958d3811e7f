-- DNS discovery in one process: odo.resolver (c-ares driven by luv's loop)
-- and the odo.discovery.dns source against a real dnsmasq on 127.0.0.1.
local H = require "helper"
local dnsmasq = require "dnsmasq"
local luv_adapter = require "odo.adapter.luv"
local Resolver = require "odo.resolver"
local dns = require "odo.discovery.dns"
local memory = require "odo.adapter.memory"

-- Quick retries and re-reads for the specs.
local FAST = { dns_ttl_floor_ms = 200, dns_backoff = { 100, 200, 400 }, dns_timeout_ms = 300, dns_tries = 1 }

describe("DNS discovery", function()
  local sources
  before_each(function() sources = {} end)
  after_each(function()
    for _, s in ipairs(sources) do s:stop() end
    dnsmasq.stop_all()
    assert.same({}, H.active_handles())
  end)

  -- a started source: `reported` holds "host:port" in order of reports,
  -- `logs` its lines
  local function source(opts)
    local reported, logs = {}, {}
    opts.policy = opts.policy or FAST
    opts.adapter = opts.adapter or luv_adapter
    opts.on_log = function(msg) logs[#logs + 1] = msg end
    local src = dns(opts)
    sources[#sources + 1] = src
    src:start(function(host, port) reported[#reported + 1] = host .. ":" .. port end)
    return src, reported, logs
  end

  local function logged(logs, text)
    for _, l in ipairs(logs) do
      if l:find(text, 1, true) then return true end
    end
    return false
  end

  local function found(src)
    local out = {}
    for i, a in ipairs(src:status().found) do out[i] = a.host .. ":" .. a.port end
    return out
  end

  describe("the resolver", function()
    it("answers SRV with TTLs, A and AAAA with TTLs, and says ENODATA and ENOTFOUND apart", function()
      local d = dnsmasq.start { ttl = 7, records = {
        "--srv-host=_odo._tcp.swarm.test,n1.swarm.test,4001,10,50",
        "--host-record=n1.swarm.test,127.0.0.1,::1",
        "--host-record=v4.swarm.test,127.0.0.2",
      } }
      local r = assert(Resolver.new(luv_adapter, { servers = "127.0.0.1:" .. d.port }))
      assert.equal("127.0.0.1:" .. d.port, r:servers())
      local res = {}
      local asks = { { "_odo._tcp.swarm.test", "SRV" }, { "n1.swarm.test", "A" }, { "n1.swarm.test", "AAAA" },
        { "v4.swarm.test", "AAAA" }, { "none.swarm.test", "A" } }
      for i, q in ipairs(asks) do r:query(q[1], q[2], function(x) res[i] = x end) end
      assert.is_true(H.luv_until(function() return #res == #asks and res[5] ~= nil end))
      assert.same({ { target = "n1.swarm.test", port = 4001, priority = 10, weight = 50, ttl = 7 } }, res[1].records)
      assert.same({ { address = "127.0.0.1", ttl = 7 } }, res[2].records)
      assert.same({ { address = "::1", ttl = 7 } }, res[3].records)
      assert.equal("ENODATA", res[4].code)
      assert.matches("^ENODATA: v4.swarm.test AAAA: ", res[4].err)
      assert.equal("ENOTFOUND", res[5].code)
      assert.matches("NXDOMAIN", res[5].err)
      assert.is_true(res[1].at > 1.7e12) -- wall clock, ms
      r:close()
    end)

    it("says REFUSED for a name the server does not serve, and ECONNREFUSED for a closed port", function()
      local d = dnsmasq.start {}
      local closed = H.free_ports(1)[1]
      local r = assert(Resolver.new(luv_adapter, { servers = "127.0.0.1:" .. d.port, tries = 1 }))
      local r2 = assert(Resolver.new(luv_adapter, { servers = "127.0.0.1:" .. closed, tries = 1, timeout_ms = 300 }))
      local a, b
      r:query("example.org", "A", function(x) a = x end)
      r2:query("n1.swarm.test", "A", function(x) b = x end)
      assert.is_true(H.luv_until(function() return a and b end))
      assert.equal("EREFUSED", a.code)
      assert.is_truthy(b.code == "ECONNREFUSED" or b.code == "ETIMEDOUT", b.err)
      r:close()
      r2:close()
    end)

    it("when c-ares's socket changes could not all be queued, polls its whole state anew", function()
      local d = dnsmasq.start { records = { "--host-record=n1.swarm.test,127.0.0.1" } }
      local r = assert(Resolver.new(luv_adapter, { servers = "127.0.0.1:" .. d.port }))
      local got = {}
      r:query("n1.swarm.test", "A", function(x) got[1] = x end)
      local fd, handle = next(r.polls)
      assert.is_number(fd)
      r.core:_resync()
      -- the next call into c-ares reports the whole state: every poll is
      -- started again (the same socket: a new handle)
      r:query("n1.swarm.test", "AAAA", function(x) got[2] = x end)
      assert.is_truthy(r.polls[fd])
      assert.are_not.equal(handle, r.polls[fd])
      assert.same({}, (r.core:sockets()))
      assert.is_true(H.luv_until(function() return got[1] and got[2] end))
      assert.equal("127.0.0.1", got[1].records[1].address)
      assert.equal("ENODATA", got[2].code)
      r:close()
    end)

    it("close drops queries in flight: their callbacks never run, and nothing is left polled", function()
      local closed = H.free_ports(1)[1]
      local r = assert(Resolver.new(luv_adapter, { servers = "127.0.0.1:" .. closed, timeout_ms = 5000 }))
      local called = 0
      for i = 1, 20 do r:query("n" .. i .. ".swarm.test", "A", function() called = called + 1 end) end
      r:close()
      r:close()
      H.luv_until(function() return false end, 100)
      assert.equal(0, called)
      assert.has_error(function() r:query("x.swarm.test", "A", function() end) end)
    end)

    it("refuses servers that are not addresses, and an adapter that cannot poll", function()
      local r, err, name = Resolver.new(luv_adapter, { servers = "dns.example:53" })
      assert.is_nil(r)
      assert.equal("EINVAL", name)
      assert.matches("not a host name", err)
      r, err, name = Resolver.new(memory.new(), {})
      assert.is_nil(r)
      assert.equal("ENOTSUP", name)
      assert.matches("poll", err)
      assert.has_error(function() dns { name = "swarm.test", server = "dns.example:53" } end)
      assert.has_error(function() dns { name = "bad name" } end)
      assert.has_error(function() dns { name = ".swarm.test" } end)
      assert.has_no_error(function() dns { name = "swarm.test." } end)
    end)
  end)

  describe("the source", function()
    it("finds _odo._tcp SRV records in priority order, their targets' addresses, and says what it found", function()
      local d = dnsmasq.start { records = {
        "--srv-host=_odo._tcp.swarm.test,n3.swarm.test,4003,20,5",
        "--srv-host=_odo._tcp.swarm.test,n1.swarm.test,4001,10,0",
        "--srv-host=_odo._tcp.swarm.test,n2.swarm.test,4002,10,50",
        "--host-record=n1.swarm.test,127.0.0.1", "--host-record=n2.swarm.test,127.0.0.1",
        "--host-record=n3.swarm.test,127.0.0.1",
      } }
      -- random(total) = total: the heaviest running sum wins each draw
      local src, reported, logs = source { name = "swarm.test", server = "127.0.0.1:" .. d.port,
        random = function(total) return total end }
      assert.is_true(H.luv_until(function() return #reported >= 3 end))
      assert.same({ "127.0.0.1:4002", "127.0.0.1:4001", "127.0.0.1:4003" }, { reported[1], reported[2], reported[3] })
      local st = src:status()
      assert.equal("dns swarm.test", st.name)
      assert.equal("SRV", st.via)
      assert.equal("127.0.0.1:" .. d.port, st.servers)
      assert.same({ "127.0.0.1:4002", "127.0.0.1:4001", "127.0.0.1:4003" }, found(src))
      assert.is_number(st.found_at)
      assert.is_nil(st.error)
      assert.is_true(logged(logs, "found 3 peer addresses through _odo._tcp.swarm.test SRV"), table.concat(logs, "\n"))
    end)

    it("without SRV records, uses the name's A and AAAA records with the default port", function()
      local d = dnsmasq.start { records = { "--host-record=swarm.test,127.0.0.1,::1" } }
      local src, reported = source { name = "swarm.test", server = "127.0.0.1:" .. d.port, port = 4100 }
      assert.is_true(H.luv_until(function() return #reported >= 2 end))
      assert.same({ "127.0.0.1:4100", "::1:4100" }, { reported[1], reported[2] })
      assert.equal("A/AAAA", src:status().via)
    end)

    it("says when there are no records, or the server refuses, and retries with backoff", function()
      local d = dnsmasq.start {}
      local src, _, logs = source { name = "swarm.test", server = "127.0.0.1:" .. d.port, port = 1 }
      local src2, _, logs2 = source { name = "example.org", server = "127.0.0.1:" .. d.port, port = 1 }
      assert.is_true(H.luv_until(function() return #logs >= 2 and #logs2 >= 2 end))
      assert.equal("no _odo._tcp SRV or A records for swarm.test; retrying in 0.1 s", logs[1])
      assert.equal("no _odo._tcp SRV or A records for swarm.test; retrying in 0.2 s", logs[2])
      assert.matches("^DNS server 127%.0%.0%.1:%d+ refused to answer for _odo%._tcp%.example%.org %(REFUSED", logs2[1])
      assert.equal(logs[#logs], src:status().error)
      assert.is_number(src2:status().error_at)
      assert.same({}, src:status().found)
    end)

    it("a server down at start: says it did not answer, then finds the records once it is up", function()
      local port = H.free_ports(1)[1]
      local src, reported, logs = source { name = "swarm.test", server = "127.0.0.1:" .. port }
      assert.is_true(H.luv_until(function() return #logs >= 1 end))
      assert.matches("^DNS server 127%.0%.0%.1:" .. port .. " did not answer.*; retrying in 0%.1 s$", logs[1])
      dnsmasq.start { port = port, records = { "--srv-host=_odo._tcp.swarm.test,n1.swarm.test,4001,10,50",
        "--host-record=n1.swarm.test,127.0.0.1" } }
      assert.is_true(H.luv_until(function() return #reported >= 1 end))
      assert.equal("127.0.0.1:4001", reported[1])
      assert.matches("did not answer", src:status().error) -- the last error stays, with its time
    end)

    it("a record added after start is found once the TTL runs out", function()
      local records = { "--host-record=n1.swarm.test,127.0.0.1", "--host-record=n2.swarm.test,127.0.0.1" }
      local d = dnsmasq.start { ttl = 1, records = { records[1], records[2],
        "--srv-host=_odo._tcp.swarm.test,n1.swarm.test,4001,10,50" } }
      local src = source { name = "swarm.test", server = "127.0.0.1:" .. d.port }
      assert.is_true(H.luv_until(function() return #found(src) == 1 end))
      local port = d.port
      d.stop()
      dnsmasq.start { port = port, ttl = 1, records = { records[1], records[2],
        "--srv-host=_odo._tcp.swarm.test,n1.swarm.test,4001,10,50",
        "--srv-host=_odo._tcp.swarm.test,n2.swarm.test,4002,10,50" } }
      assert.is_true(H.luv_until(function() return #found(src) == 2 end))
      local got = found(src)
      table.sort(got)
      assert.same({ "127.0.0.1:4001", "127.0.0.1:4002" }, got)
    end)

    it("on an adapter without poll, says DNS cannot run there", function()
      local src = source { name = "swarm.test", adapter = memory.new() }
      assert.matches("has no poll", src:status().error)
    end)

    it("in a node: gets the node, logs through its \"discovery\" event, and shows in node:status()", function()
      local d = dnsmasq.start { records = { "--host-record=swarm.test,127.0.0.1" } }
      local pki = H.pki(H.tmpdir())
      local plain = { start = function() end, stop = function() end } -- no status(): not listed
      local node = H.node { node_id = false, tls = pki.node("a"), listen = "127.0.0.1:0",
        policy = FAST, discovery = { plain, dns { name = "swarm.test", server = "127.0.0.1:" .. d.port } } }
      local lines = {}
      node:on("discovery", function(name, msg) lines[#lines + 1] = name .. ": " .. msg end)
      assert.is_true(H.luv_until(function() return #lines > 0 end))
      -- the default port is the node's own listen port
      assert.equal(("dns swarm.test: found 1 peer address through swarm.test A/AAAA: 127.0.0.1:%d;"
        .. " looking again in 2 s"):format(node.listen.port), lines[1])
      local st = node:status()
      assert.equal(1, #st.discovery)
      assert.equal("dns swarm.test", st.discovery[1].name)
      assert.same({ { host = "127.0.0.1", port = node.listen.port } }, st.discovery[1].found)
      node:close()
      H.luv_until(function() return false end, 50)
      luv_adapter.shutdown()
      assert.same({}, node.errors)
      H.cleanup()
    end)
  end)
end)
