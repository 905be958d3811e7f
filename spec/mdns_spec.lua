-- The mDNS engine (odo.core.mdns, libmdnsd behind our own packet checks)
-- with packets handed from engine to engine in Lua, no sockets: announce,
-- browse, TXT, goodbyes, legacy unicast answers, QU questions, refused
-- packets, the instance bound; and the luv adapter's UDP sockets on
-- 127.0.0.1 (unicast only: multicast runs in mdns_e2e_spec's namespaces).
local core = require "odo.core"

-- ---- a small DNS codec for the spec's own packets ------------------------

local function u16(n) return string.char(n >> 8 & 255, n & 255) end
local function u32(n) return u16(n >> 16 & 65535) .. u16(n & 65535) end

local function name(s)
  local out = {}
  for label in s:gmatch("[^.]+") do out[#out + 1] = string.char(#label) .. label end
  return table.concat(out) .. "\0"
end

-- a query: id, flags 0, questions {name, type, class}
local function query(id, questions)
  local out = { u16(id), u16(0), u16(#questions), u16(0), u16(0), u16(0) }
  for _, q in ipairs(questions) do out[#out + 1] = name(q[1]) .. u16(q[2]) .. u16(q[3] or 1) end
  return table.concat(out)
end

-- a response with answers {name, type, ttl, rdata}
local function response(answers, additionals)
  additionals = additionals or {}
  local out = { u16(0), u16(0x8400), u16(0), u16(#answers), u16(0), u16(#additionals) }
  for _, list in ipairs({ answers, additionals }) do
    for _, a in ipairs(list) do
      out[#out + 1] = name(a[1]) .. u16(a[2]) .. u16(1) .. u32(a[3]) .. u16(#a[4]) .. a[4]
    end
  end
  return table.concat(out)
end

local function txt(...)
  local out = {}
  for _, s in ipairs({ ... }) do out[#out + 1] = string.char(#s) .. s end
  return table.concat(out)
end

local function srv(port, target) return u16(0) .. u16(0) .. u16(port) .. name(target) end

-- reads a name at pos (1-based), following pointers; returns name, next pos
local function read_name(p, pos)
  local labels, after = {}, nil
  for _ = 1, 128 do
    local len = p:byte(pos)
    if len == 0 then
      return table.concat(labels, ".") .. ".", after or pos + 1
    elseif len >= 0xC0 then
      after = after or pos + 2
      pos = ((len & 0x3F) << 8 | p:byte(pos + 1)) + 1
    else
      labels[#labels + 1] = p:sub(pos + 1, pos + len)
      pos = pos + len + 1
    end
  end
  error("name loop")
end

-- decodes a packet: {id, qr, questions = {{name, type}}, records = {{name, type, ttl}}}
local function decode(p)
  local function n16(i) return p:byte(i) << 8 | p:byte(i + 1) end
  local m = { id = n16(1), qr = p:byte(3) >> 7, questions = {}, records = {} }
  local pos = 13
  for _ = 1, n16(5) do
    local nm
    nm, pos = read_name(p, pos)
    m.questions[#m.questions + 1] = { name = nm, type = n16(pos) }
    pos = pos + 4
  end
  for _ = 1, n16(7) + n16(9) + n16(11) do
    local nm
    nm, pos = read_name(p, pos)
    local ttl = n16(pos + 4) << 16 | n16(pos + 6)
    m.records[#m.records + 1] = { name = nm, type = n16(pos), ttl = ttl }
    pos = pos + 10 + n16(pos + 8)
  end
  return m
end

-- every packet `from` has due, each fed to every engine in `to` as sent
-- by from_ip:5353; returns the packets
local function pump(from, from_ip, to)
  local sent = {}
  while true do
    local p, ip, port = from:output()
    if not p then break end
    sent[#sent + 1] = { data = p, ip = ip, port = port }
    for _, e in ipairs(to) do assert(e:input(p, from_ip, 5353)) end
  end
  return sent
end

local function engine(label, ip, port, swarm, extra)
  local opts = { instance = label, ip = ip, port = port, txt = { "id=" .. label .. "-id", "swarm=" .. swarm } }
  for k, v in pairs(extra or {}) do opts[k] = v end
  return assert(core.mdns(opts))
end

local function by_name(list)
  local out = {}
  for _, x in ipairs(list) do out[x.instance] = x end
  return out
end

describe("odo.core.mdns", function()
  local open = {}
  local function track(e) open[#open + 1] = e; return e end
  after_each(function()
    for _, e in ipairs(open) do e:close() end
    open = {}
  end)

  it("two engines announce, find each other with host, address, port and TXT, and forget on goodbye", function()
    local a = track(engine("odo-a", "10.0.0.1", 4001, "odo"))
    local b = track(engine("odo-b", "10.0.0.2", 4002, "odo"))
    for _ = 1, 3 do
      pump(a, "10.0.0.1", { b })
      pump(b, "10.0.0.2", { a })
    end
    local fa = by_name(b:instances())["odo-a"]
    assert.same({ "odo-a._odo._tcp.local.", "odo-a.local.", "10.0.0.1", 4001, "odo-a-id", "odo" },
      { fa.name, fa.host, fa.ip, fa.port, fa.txt.id, fa.txt.swarm })
    assert.is_true(fa.expires_in > 0 and fa.expires_in <= 120)
    assert.equal("odo-b-id", by_name(a:instances())["odo-b"].txt.id)
    -- its own announcements, looped back, are not an instance found
    pump(a, "10.0.0.1", { a })
    assert.equal(1, #a:instances())
    assert.is_true(a:sleep() >= 0)

    a:stop()
    local bye = pump(a, "10.0.0.1", {})
    assert.is_true(#bye >= 1)
    local kinds = {}
    for _, p in ipairs(bye) do
      assert.equal("224.0.0.251", p.ip)
      for _, r in ipairs(decode(p.data).records) do
        assert.equal(0, r.ttl)
        kinds[r.type] = true
      end
    end
    assert.same({ [1] = true, [12] = true, [16] = true, [33] = true }, kinds) -- A, PTR, TXT, SRV
    for _, p in ipairs(bye) do assert(b:input(p.data, "10.0.0.1", 5353)) end
    assert.same({}, b:instances())
    -- a stopped engine takes no more input
    local ok, err, ename = a:input(bye[1].data, "10.0.0.2", 5353)
    assert.is_nil(ok)
    assert.equal("EINVAL", ename)
    assert.matches("stopped", err)
  end)

  it("answers a legacy unicast query (source port not 5353) by unicast, TTLs at most 10 s", function()
    local a = track(engine("odo-a", "10.0.0.1", 4001, "odo", { browse = false }))
    pump(a, "10.0.0.1", {})
    assert(a:input(query(0x1234, { { "_odo._tcp.local", 12 } }), "10.0.0.9", 40000))
    local sent = pump(a, "10.0.0.1", {})
    local unicast
    for _, p in ipairs(sent) do
      if p.port == 40000 then unicast = p end
    end
    assert.truthy(unicast, "no unicast answer")
    assert.equal("10.0.0.9", unicast.ip)
    local m = decode(unicast.data)
    assert.equal(0x1234, m.id)
    assert.equal(1, m.qr)
    assert.same({ { name = "_odo._tcp.local.", type = 12 } }, m.questions)
    assert.equal("_odo._tcp.local.", m.records[1].name)
    for _, r in ipairs(m.records) do assert.is_true(r.ttl <= 10 and r.ttl > 0) end
  end)

  it("publishes an AAAA record when given one", function()
    local a = track(engine("odo-a", "10.0.0.1", 4001, "odo", { ip6 = "fd00::1", browse = false }))
    local types = {}
    for _, p in ipairs(pump(a, "10.0.0.1", {})) do
      for _, r in ipairs(decode(p.data).records) do types[r.type] = r.name end
    end
    assert.equal("odo-a.local.", types[28])
    assert.is_nil((core.mdns { instance = "a", ip = "10.0.0.1", port = 1, ip6 = "10.0.0.1" }))
  end)

  it("answers a QU question (unicast-response bit set) too", function()
    local a = track(engine("odo-a", "10.0.0.1", 4001, "odo", { browse = false }))
    for _ = 1, 6 do pump(a, "10.0.0.1", {}) end
    assert(a:input(query(7, { { "odo-a._odo._tcp.local", 33, 0x8001 } }), "10.0.0.9", 5353))
    local answered = false
    for _ = 1, 50 do
      for _, p in ipairs(pump(a, "10.0.0.1", {})) do
        for _, r in ipairs(decode(p.data).records) do
          if r.type == 33 and r.name == "odo-a._odo._tcp.local." then answered = true end
        end
      end
      if answered then break end
      require("luv").sleep(20)
    end
    assert.is_true(answered)
  end)

  it("reads TXT keys case-insensitively, the first of a key wins, a bare key is true", function()
    local b = track(core.mdns {})
    local inst = "py._odo._tcp.local"
    assert(b:input(response({
      { "_odo._tcp.local", 12, 120, name(inst) },
    }, {
      { inst, 33, 120, srv(7100, "py-host.local") },
      { inst, 16, 120, txt("ID=abc", "id=later", "Swarm=odo", "flag", "=novalue", "") },
      { "py-host.local", 1, 120, "\10\0\0\7" },
    }), "10.0.0.7", 5353))
    local f = b:instances()[1]
    assert.same({ id = "abc", swarm = "odo", flag = true }, f.txt)
    assert.same({ "py", "py-host.local.", "10.0.0.7", 7100 }, { f.instance, f.host, f.ip, f.port })
  end)

  it("refuses malformed packets with the reason, and goes on working", function()
    local b = track(core.mdns {})
    local hdr = u16(0) .. u16(0x8400)
    local cases = {
      { "", "shorter than a DNS header" },
      { hdr .. u16(0) .. u16(1) .. u16(0) .. u16(0), "more entries counted" },
      { hdr .. u16(0) .. u16(1) .. u16(0) .. u16(0) .. "\20" .. ("a"):rep(10), "runs past the end" },
      -- a pointer to itself, and one forwards
      { hdr .. u16(0) .. u16(1) .. u16(0) .. u16(0) .. "\192\12" .. ("\0"):rep(10), "backwards" },
      { hdr .. u16(0) .. u16(1) .. u16(0) .. u16(0) .. "\192\40" .. ("\0"):rep(40), "backwards" },
      { hdr .. u16(0) .. u16(1) .. u16(0) .. u16(0) .. "\64" .. ("x"):rep(64) .. ("\0"):rep(11), "reserved length" },
      { hdr .. u16(0) .. u16(1) .. u16(0) .. u16(0) .. "\2a.\0" .. ("\0"):rep(10), "NUL or a dot" },
      { response({ { "h.local", 1, 120, "\1\2\3\4\5" } }), "not 4 bytes" },
      { response({ { "_odo._tcp.local", 12, 120, name("x._odo._tcp.local") .. "\0" } }), "does not fill" },
      { response({ { ("a"):rep(63) .. "." .. ("b"):rep(63) .. "." .. ("c"):rep(63) .. "." .. ("d"):rep(63),
        1, 1, "\1\2\3\4" } }), "longer than 255" },
      { response({}) .. ("\0"):rep(9000), "longer than 9000" },
    }
    for _, c in ipairs(cases) do
      local ok, err, ename = b:input(c[1], "10.0.0.7", 5353)
      assert.is_nil(ok, c[2])
      assert.equal("EINVAL", ename)
      assert.matches(c[2], err, 1, true)
      assert.matches("from 10.0.0.7:5353", err, 1, true)
    end
    assert(b:input(response({ { "_odo._tcp.local", 12, 120, name("ok._odo._tcp.local") } }, {
      { "ok._odo._tcp.local", 33, 120, srv(1, "ok.local") }, { "ok.local", 1, 120, "\10\0\0\8" } }),
      "10.0.0.8", 5353))
    assert.equal("10.0.0.8", b:instances()[1].ip)
  end)

  it("keeps at most max_instances instances, and nothing of other services", function()
    local b = track(core.mdns { max_instances = 2 })
    for i = 1, 5 do
      local inst = "n" .. i .. "._odo._tcp.local"
      assert(b:input(response({ { "_odo._tcp.local", 12, 120, name(inst) } }, {
        { inst, 33, 120, srv(4000 + i, "n" .. i .. ".local") },
        { "n" .. i .. ".local", 1, 120, "\10\0\0" .. string.char(i) },
      }), "10.0.0." .. i, 5353))
    end
    assert(b:input(response({ { "_http._tcp.local", 12, 120, name("web._http._tcp.local") } }, {
      { "web._http._tcp.local", 33, 120, srv(80, "web.local") }, { "web.local", 1, 120, "\10\0\0\9" } }),
      "10.0.0.9", 5353))
    local found = b:instances()
    assert.equal(2, #found)
    for _, f in ipairs(found) do assert.matches("^n[12]$", f.instance) end
  end)

  it("checks its options", function()
    local ok, err, ename = core.mdns { instance = "a.b", ip = "10.0.0.1", port = 1 }
    assert.is_nil(ok)
    assert.equal("EINVAL", ename)
    assert.matches("without a dot", err)
    assert.is_nil((core.mdns { instance = "a", ip = "not-ip", port = 1 }))
    assert.is_nil((core.mdns { instance = "a", ip = "10.0.0.1", port = 0 }))
    assert.is_nil((core.mdns { max_instances = 0 }))
    assert.has_error(function() core.mdns { instance = "a", ip = "10.0.0.1", port = 1, txt = { ("x"):rep(256) } } end)
    assert.has_error(function() core.mdns { service = 5 } end)
    local e = core.mdns {}
    e:close()
    e:close()
    assert.has_error(function() e:output() end)
  end)
end)

describe("the luv adapter's UDP sockets", function()
  local A = require "odo.adapter.luv"
  local uv = require "luv"

  it("send to an address, receive with the sender's address; reuse shares a port", function()
    local a = assert(A.udp("127.0.0.1", 0, { reuse = true }))
    local b = assert(A.udp("127.0.0.1", 0))
    local shared = assert(A.udp("127.0.0.1", a.port, { reuse = true }))
    local ok, err, ename = A.udp("127.0.0.1", b.port)
    assert.is_nil(ok)
    assert.equal("EADDRINUSE", ename)
    assert.matches("cannot bind UDP 127.0.0.1:" .. b.port, err, 1, true)
    local got
    b:recv_start(function(rerr, data, host, port) got = { rerr, data, host, port } end)
    local sent
    assert(a:send("hello", "127.0.0.1", b.port, function(serr) sent = serr or true end))
    local deadline = uv.hrtime() + 5e9
    while not got and uv.hrtime() < deadline do uv.run("once") end
    assert.same({ nil, "hello", "127.0.0.1", a.port }, got)
    assert.is_true(sent)
    local bad = { a:send("x", "not an address", 1) }
    assert.equal("EINVAL", bad[3])
    for _, s in ipairs({ a, b, shared }) do s:close() end
    uv.run("nowait")
  end)
end)
