-- The SRV answer reader (csrc/dns_answer.c, through core.dns_srv_answer)
-- on DNS messages built here byte by byte, and RFC 2782's order of SRV
-- records (odo.discovery.srv) with a fixed random source.
local core = require "odo.core"
local srv = require "odo.discovery.srv"

-- ---- building messages ----------------------------------------------------------

local function name(n)
  if n == "." then return "\0" end
  local out = {}
  for label in n:gmatch("[^.]+") do out[#out + 1] = string.char(#label) .. label end
  return table.concat(out) .. "\0"
end

local function header(qd, an, rcode)
  return string.pack(">I2I2I2I2I2I2", 0x1234, 0x8580 + (rcode or 0), qd, an, 0, 0)
end
local function question(n, t) return name(n) .. string.pack(">I2I2", t or 33, 1) end
local function ptr(off) return string.pack(">I2", 0xC000 | off) end
local function rr(owner, t, ttl, rdata, class)
  return owner .. string.pack(">I2I2I4s2", t, class or 1, ttl, rdata)
end
local function srv_data(prio, weight, port, target) return string.pack(">I2I2I2", prio, weight, port) .. target end

local Q = "_odo._tcp.swarm.test"

describe("the SRV answer reader", function()
  it("reads dnsmasq's answer: a compressed target, the TTL, the additional A record left alone", function()
    local msg = ("123485800001000100000001045f6f646f045f74637005737761726d04746573740000210001c00c002100010000"
      .. "00020015000a00320fa1026e3105737761726d047465737400c038000100010000000200047f000001"):gsub("..",
      function(h) return string.char(tonumber(h, 16)) end)
    local recs, skipped = core.dns_srv_answer(msg)
    assert.same({ { target = "n1.swarm.test", port = 4001, priority = 10, weight = 50, ttl = 2 } }, recs)
    assert.equal(0, skipped)
  end)

  it("reads several records in wire order, with targets compressed against each other", function()
    local m = header(1, 3) .. question(Q)
    local first = rr(ptr(12), 33, 2, srv_data(10, 50, 4001, name("n1.swarm.test")))
    local swarm_at = #m + 2 + 10 + 6 + 3 -- "swarm.test" inside the first target
    m = m .. first
      .. rr(ptr(12), 33, 2, srv_data(10, 50, 4002, "\2n2" .. ptr(swarm_at)))
      .. rr(ptr(12), 33, 300, srv_data(20, 0, 4003, "\2n3" .. ptr(swarm_at)))
    local recs = assert(core.dns_srv_answer(m))
    assert.same({ "n1.swarm.test", "n2.swarm.test", "n3.swarm.test" },
      { recs[1].target, recs[2].target, recs[3].target })
    assert.same({ 2, 2, 300 }, { recs[1].ttl, recs[2].ttl, recs[3].ttl })
    assert.same({ 20, 0, 4003 }, { recs[3].priority, recs[3].weight, recs[3].port })
  end)

  it("skips other types and classes, keeps '.', and skips targets that are not host names", function()
    local m = header(1, 5) .. question(Q)
      .. rr(ptr(12), 5, 30, name("real.swarm.test"))
      .. rr(name("real.swarm.test"), 33, 2, srv_data(5, 5, 4005, name("h.swarm.test")))
      .. rr(ptr(12), 33, 2, srv_data(1, 1, 1, name("t.test")), 3)
      .. rr(ptr(12), 33, 60, srv_data(0, 0, 0, name(".")))
      .. rr(ptr(12), 33, 2, srv_data(1, 1, 4001, name("bad host.test")))
    local recs, skipped = core.dns_srv_answer(m)
    assert.same({ "h.swarm.test", "." }, { recs[1].target, recs[2].target })
    assert.equal(2, #recs)
    assert.equal(1, skipped)
  end)

  it("reads a TTL with its top bit set as 0 (RFC 2181)", function()
    local recs = core.dns_srv_answer(header(0, 1) .. rr("\0", 33, 0x80000005, srv_data(1, 1, 1, name("t.test"))))
    assert.equal(0, recs[1].ttl)
  end)

  it("takes a name of 255 bytes, and refuses one longer", function()
    local longest = ("b"):rep(63) .. "." .. ("b"):rep(63) .. "." .. ("b"):rep(63) .. "." .. ("c"):rep(61)
    local recs = core.dns_srv_answer(header(0, 1) .. rr("\0", 33, 2, srv_data(1, 1, 1, name(longest))))
    assert.equal(longest, recs[1].target)
    local r, err, code = core.dns_srv_answer(header(0, 1) .. rr("\0", 33, 2, srv_data(1, 1, 1, name(longest .. "c"))))
    assert.is_nil(r)
    assert.equal("EBADRESP", code)
    assert.matches("longer than 255", err)
  end)

  local function refused(msg, why)
    local r, err, code = core.dns_srv_answer(msg)
    assert.is_nil(r)
    assert.equal("EBADRESP", code)
    assert.matches(why, err, 1, true)
  end

  it("refuses compression loops and pointers that go forwards", function()
    local m = header(1, 1) .. question(Q)
    refused(m .. ptr(#m) .. string.pack(">I2I2I4s2", 33, 1, 2, srv_data(1, 1, 1, "\0")), "does not point backwards")
    local pair = header(0, 1)
    local a = #pair
    refused(pair .. "\1a" .. ptr(a + 4) .. ptr(a) .. string.pack(">I2I2I4s2", 33, 1, 2, srv_data(1, 1, 1, "\0")),
      "does not point backwards")
    refused(m .. ptr(#m + 20) .. string.pack(">I2I2I4s2", 33, 1, 2, srv_data(1, 1, 1, "\0")) .. "\1x\0",
      "does not point backwards")
  end)

  it("refuses truncated messages, reserved label types and SRV data of the wrong size", function()
    local full = header(1, 1) .. question(Q) .. rr(ptr(12), 33, 2, srv_data(10, 50, 4001, name("n1.swarm.test")))
    refused(full:sub(1, -6), "ends inside a record")
    refused(full:sub(1, #header(1, 1) + 6), "past the end")
    refused(header(1, 0):sub(1, 7), "shorter than a DNS header")
    refused(header(0, 1) .. "\65x\0" .. string.pack(">I2I2I4s2", 33, 1, 2, srv_data(1, 1, 1, "\0")), "reserved label")
    refused(header(0, 1) .. rr("\0", 33, 2, srv_data(1, 1, 1, name("a.b")) .. ("\0"):rep(10)), "SRV record's data")
    refused(header(0, 1) .. rr("\0", 33, 2, srv_data(1, 1, 1, "\0"):sub(1, 5)), "SRV record's data")
  end)

  it("reads no records from NXDOMAIN or an empty answer", function()
    assert.same({}, core.dns_srv_answer(header(1, 0, 3) .. question(Q)))
    assert.same({}, core.dns_srv_answer(header(0, 0)))
  end)
end)

describe("RFC 2782 order", function()
  local function rec(t, prio, weight) return { target = t, priority = prio, weight = weight, port = 1 } end
  local function targets(list)
    local out = {}
    for i, r in ipairs(list) do out[i] = r.target end
    return out
  end
  -- a random source that returns the given numbers in turn, and records
  -- the totals it was asked for
  local function fixed(...)
    local picks, asked = { ... }, {}
    return function(total)
      asked[#asked + 1] = total
      return table.remove(picks, 1)
    end, asked
  end

  it("puts lower priorities first, whatever the wire order", function()
    local random = fixed(0, 0, 0)
    assert.same({ "a", "b", "c" }, targets(srv.order({ rec("c", 30, 0), rec("a", 10, 0), rec("b", 20, 0) }, random)))
  end)

  it("chooses by running sums of weights, weight 0 first, from random numbers 0..total", function()
    local list = { rec("x", 10, 60), rec("zero", 10, 0), rec("y", 10, 30), rec("z", 10, 10) }
    -- order considered: zero(0) x(60) y(30) z(10), running sums 0 60 90 100
    local random, asked = fixed(61, 0, 60, 0)
    -- 61 -> y (sum 90); then zero x z: sums 0 60 70, 0 -> zero; then x z:
    -- sums 60 70, 60 -> x; then z
    assert.same({ "y", "zero", "x", "z" }, targets(srv.order(list, random)))
    assert.same({ 100, 70, 70, 10 }, asked)
  end)

  it("with random = total, the last record of the running sums comes first", function()
    local list = { rec("a", 1, 1), rec("b", 1, 1), rec("c", 1, 1) }
    assert.same({ "c", "b", "a" }, targets(srv.order(list, function(total) return total end)))
    assert.same({ "a", "b", "c" }, targets(srv.order(list, function() return 0 end)))
  end)

  it("leaves the records given as they were, and refuses a random source out of range", function()
    local list = { rec("a", 1, 5), rec("b", 0, 5) }
    srv.order(list, function() return 0 end)
    assert.same({ "a", "b" }, targets(list))
    assert.has_error(function() srv.order(list, function(total) return total + 1 end) end)
    assert.has_error(function() srv.order(list, function() return 0.5 end) end)
  end)

  it("by default spreads choices by weight (math.random)", function()
    local first = {}
    for _ = 1, 200 do
      local t = srv.order({ rec("heavy", 1, 1000), rec("light", 1, 1) })[1].target
      first[t] = (first[t] or 0) + 1
    end
    assert.is_true((first.heavy or 0) > (first.light or 0))
  end)
end)
