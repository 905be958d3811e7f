-- Sessions in one process: TLS 1.3 with mutual authentication over memory
-- BIOs, introductions, heartbeats, BYE, frames and their limits, and the
-- output watermarks. Real certificates, real OpenSSL; no sockets.
local H = require "helper"
local core = require "odo.core"
local Raw = require "raw_peer"

describe("sessions", function()
  local pki, dir
  setup(function()
    dir = H.tmpdir()
    pki = H.pki(dir)
    pki.a = pki.node("a")
    pki.b = pki.node("b")
  end)
  teardown(H.cleanup)

  local function ctx(n) return assert(core.tls_context(n)) end

  local function pair(na, nb, opts_a, opts_b)
    local a = core.session(ctx(na), opts_a or { port = 4001 })
    local opts = opts_b or { port = 4002 }
    opts.server = true
    local b = core.session(ctx(nb), opts)
    local ea = a:start()
    local ea2, eb = H.pump(a, b)
    for _, e in ipairs(ea2) do ea[#ea + 1] = e end
    return a, b, ea, eb
  end

  it("authenticate both sides and introduce them", function()
    local a, b, ea, eb = pair(pki.a, pki.b)
    local ta, tb = ctx(pki.a), ctx(pki.b)
    assert.equal(tb:id(), H.find_event(ea, "handshake").peer)
    assert.equal(ta:id(), H.find_event(eb, "handshake").peer)
    local ha, hb = H.find_event(ea, "hello"), H.find_event(eb, "hello")
    assert.same({ tb:id(), 4002, 2, 1 }, { ha.id, ha.port, ha.version, ha.features })
    assert.same({ ta:id(), 4001 }, { hb.id, hb.port })
    assert.equal("open", a:info().state)
    assert.equal("open", b:info().state)
    assert.equal("TLS_AES_256_GCM_SHA384", a:info().cipher)
  end)

  it("the node id is the SHA-256 of the certificate's public key", function()
    local out = H.run(("openssl x509 -in '%s' -pubkey -noout | openssl pkey -pubin -outform DER"
      .. " | openssl dgst -sha256 -r"):format(pki.a.cert))
    assert.equal(out:match("^(%x+)"), ctx(pki.a):id())
  end)

  it("accept seed-style self-signed certificates that share one subject name", function()
    local s1, s2, s3 = pki.seed("s1"), pki.seed("s2"), pki.seed("s3")
    pki.bundle("seed-bundle.pem", { s1, s2, s3 })
    -- plain OpenSSL chain verification fails for all but one of them
    local _, ok2 = H.run(("openssl verify -CAfile '%s' '%s'"):format(s1.ca, s2.cert))
    local _, ok3 = H.run(("openssl verify -CAfile '%s' '%s'"):format(s1.ca, s3.cert))
    assert.is_false(ok2 and ok3)
    for _, p in ipairs({ { s1, s2 }, { s2, s3 }, { s3, s1 } }) do
      local _, _, ea, eb = pair(p[1], p[2])
      assert.is_truthy(H.find_event(ea, "hello"))
      assert.is_truthy(H.find_event(eb, "hello"))
    end
  end)

  it("refuse a self-signed certificate that is not in the bundle", function()
    local s4, s5 = pki.seed("s4"), pki.seed("s5")
    pki.bundle("s4-bundle.pem", { s4 })
    s5.ca = s4.ca
    local _, _, ea, eb = pair(s4, s5)
    assert.is_nil(H.find_event(ea, "hello"))
    assert.is_nil(H.find_event(eb, "hello"))
    assert.matches("certificate not trusted", H.find_event(ea, "closed").reason)
  end)

  it("refuse a certificate from an untrusted CA on both sides; neither gets a HELLO", function()
    for _, order in ipairs({ { pki.a, pki.mallory }, { pki.mallory, pki.a } }) do
      local a, b, ea, eb = pair(order[1], order[2])
      assert.is_nil(H.find_event(ea, "hello"))
      assert.is_nil(H.find_event(eb, "hello"))
      local ca, cb = H.find_event(ea, "closed"), H.find_event(eb, "closed")
      assert.is_truthy(ca and cb)
      assert.equal("tls", ca.name)
      assert.equal("closed", a:info().state)
      assert.equal("closed", b:info().state)
      local reasons = ca.reason .. " | " .. cb.reason
      assert.matches("certificate", reasons)
    end
  end)

  it("refuse an expired certificate", function()
    local _, _, ea, eb = pair(pki.a, pki.expired)
    assert.is_nil(H.find_event(ea, "hello"))
    assert.is_nil(H.find_event(eb, "hello"))
    assert.matches("expired", H.find_event(ea, "closed").reason)
  end)

  it("close on plaintext bytes with a TLS reason", function()
    local b = core.session(ctx(pki.b), { server = true })
    local ev = b:feed("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    local closed = H.find_event(ev, "closed")
    assert.equal("tls", closed.name)
    assert.matches("TLS", closed.reason)
    assert.same({}, b:feed("more"))
  end)

  -- A raw peer with a's certificate whose HELLO says `hello`, against a
  -- server session of b: b's events, and the frames the peer heard.
  local function raw_hello(hello)
    local b = core.session(ctx(pki.b), { server = true, port = 4002 })
    local raw = Raw.connect(ctx(pki.a), b)
    raw:write(core.wire_encode("hello", hello))
    return raw:pump(), raw:frames()
  end

  it("refuse a HELLO whose node id is not the certificate's", function()
    local liar = ctx(pki.b):id()
    local eb, heard = raw_hello({ id = liar, port = 1 })
    local closed = H.find_event(eb, "closed")
    assert.equal("identity", closed.name)
    assert.equal(("HELLO names node %s... but the certificate is node %s...")
      :format(liar:sub(1, 16), ctx(pki.a):id():sub(1, 16)), closed.reason)
    assert.is_nil(H.find_event(eb, "hello"))
    -- the liar hears why: b's HELLO, then a BYE "identity"
    assert.same({ "hello", "bye" }, { heard[1].kind, heard[2].kind })
    assert.equal(3, heard[2].code)
    assert.equal(closed.reason, heard[2].reason)
  end)

  it("refuse another protocol version", function()
    local eb = raw_hello({ id = ctx(pki.a):id(), port = 1, version = 9 })
    local closed = H.find_event(eb, "closed")
    assert.equal("version", closed.name)
    assert.equal("the peer speaks protocol version 9; this node speaks 2 (the peer runs a newer release: "
      .. "upgrade this node)", closed.reason)
    -- version 1 (no peer exchange, no hop counts) is refused too, saying so
    eb = raw_hello({ id = ctx(pki.a):id(), port = 1, version = 1 })
    closed = H.find_event(eb, "closed")
    assert.equal("version", closed.name)
    assert.equal("the peer speaks protocol version 1; this node speaks 2 (the peer runs an older release: "
      .. "upgrade it)", closed.reason)
  end)

  it("measure round trips with PING and PONG", function()
    local a, b = pair(pki.a, pki.b)
    a:ping(100)
    local o = a:output()
    a:written(#o)
    b:feed(o, 101)
    o = b:output()
    b:written(#o)
    local ev = a:feed(o, 103.5)
    assert.equal(3.5, H.find_event(ev, "pong").rtt)
    assert.equal(3.5, a:info().rtt)
  end)

  it("carry frames of any free type, and refuse reserved ones", function()
    local a, b = pair(pki.a, pki.b)
    assert.is_true(a:send(0x42, "payload"))
    local _, eb = H.pump(a, b)
    local m = H.find_event(eb, "message")
    assert.same({ 0x42, "payload" }, { m.type, m.payload })
    assert.has_error(function() a:send(0x01, "x") end)
    assert.has_error(function() a:send(0x100, "x") end)
  end)

  it("end a session that sends a frame over the limit, without reading it", function()
    local a, b = pair(pki.a, pki.b, nil, { max_frame = 2048 })
    a:send(0x20, ("x"):rep(4000))
    local ea, eb = H.pump(a, b)
    local closed = H.find_event(eb, "closed")
    assert.equal("protocol", closed.name)
    assert.matches("a frame of 4001 bytes, over the limit of 2048", closed.reason)
    assert.equal("protocol", H.find_event(ea, "closed").name)
    -- a sender learns its own limit too
    local _, err, name = core.session(ctx(pki.a), { max_frame = 1024 }):send(0x20, ("x"):rep(2000))
    assert.equal("ETOOBIG", name, err)
  end)

  it("report a connection that ends inside a frame", function()
    local a, b = pair(pki.a, pki.b)
    a:send(0x20, ("y"):rep(100000))
    local o = a:output()
    local ev = b:feed(o:sub(1, #o // 2))
    assert.is_nil(H.find_event(ev, "message"))
    local closed = H.find_event(b:eof(), "closed")
    assert.equal("eof", closed.name)
    assert.matches("ended inside a frame", closed.reason)
    assert.same({}, b:eof()) -- closed reports once
  end)

  it("say BYE with a code and a reason, once", function()
    local a, b = pair(pki.a, pki.b)
    local ev = a:bye("duplicate", "already connected to this peer")
    assert.same({ "duplicate", "us" }, { ev[1].name, ev[1].by })
    local _, eb = H.pump(a, b)
    local closed = H.find_event(eb, "closed")
    assert.same({ 4, "duplicate", "already connected to this peer", "peer" },
      { closed.code, closed.name, closed.reason, closed.by })
    local ok, _, name = a:send(0x20, "late")
    assert.is_nil(ok)
    assert.equal("ECLOSED", name)
    assert.same({}, a:bye())
    assert.has_error(function() a:bye("nonsense") end)
  end)

  it("report output over the high watermark until it drains below the low one", function()
    local a, b = pair(pki.a, pki.b, { high = 100000, low = 20000 })
    local chunk = ("z"):rep(30000)
    assert.is_true(a:send(0x20, chunk))
    assert.is_true(a:send(0x20, chunk))
    assert.is_true(a:send(0x20, chunk))
    assert.is_false(a:send(0x20, chunk)) -- 120 kB queued
    assert.is_false(a:writable())
    local o = a:output()          -- handed to the socket: still in flight
    assert.is_false(a:writable())
    assert.is_false(a:written(50000)) -- 70 kB left: still above low
    assert.is_true(a:written(#o - 50000)) -- all written: resume
    assert.is_true(a:writable())
    local n = 0
    for _, e in ipairs(b:feed(o)) do if e.event == "message" then n = n + 1 end end
    assert.equal(4, n)
  end)

  describe("a misbehaving peer", function()
    -- a raw peer (no HELLO yet) and the server session b it talks to
    local function raw_pair()
      local b = core.session(ctx(pki.b), { server = true })
      return Raw.connect(ctx(pki.a), b), b
    end
    local function frame(t, payload) return string.pack(">I4B", #payload + 1, t) .. payload end

    for _, case in ipairs({
      { "a frame before HELLO", frame(0x20, "x"), "a frame of type 32 before HELLO" },
      { "a malformed HELLO", frame(0x01, "short"), "a malformed HELLO %(5 bytes%)" },
      { "a frame of length 0", "\0\0\0\0\1", "a frame of length 0" },
      { "an oversize frame header", "\255\255\255\255\1", "over the limit" },
    }) do
      it("is refused: " .. case[1], function()
        local a = raw_pair()
        a:write(case[2])
        local eb = a:pump()
        local closed = H.find_event(eb, "closed")
        assert.equal("protocol", closed.name)
        assert.matches(case[3], closed.reason)
        assert.is_nil(H.find_event(eb, "hello"))
      end)
    end

    local function hello_of(t)
      local raw = core.wire_encode("hello", { id = t:id(), port = 1 })
      return raw
    end

    for _, case in ipairs({
      { "a second HELLO", function(t) return hello_of(t) end, "a second HELLO" },
      { "an unknown session message type", function() return frame(0x07, "") end, "unknown type 7" },
      { "a malformed PING", function() return frame(0x02, "123") end, "a malformed frame of type 2" },
      { "a malformed BYE", function() return frame(0x04, "x") end, "a malformed BYE" },
    }) do
      it("is refused after introductions: " .. case[1], function()
        local a = raw_pair()
        local ta = ctx(pki.a)
        a:write(hello_of(ta))
        local eb = a:pump()
        assert.is_truthy(H.find_event(eb, "hello"))
        a:write(case[2](ta))
        eb = a:pump()
        local closed = H.find_event(eb, "closed")
        assert.equal("protocol", closed.name)
        assert.matches(case[3], closed.reason)
      end)
    end

    it("a PONG with an unknown nonce is ignored", function()
      local a, b = raw_pair()
      a:write(hello_of(ctx(pki.a)))
      a:pump()
      a:write(frame(0x03, string.pack(">I8", 99)))
      local eb = a:pump()
      assert.same({}, eb)
      assert.equal("open", b:info().state)
    end)
  end)

  it("queue frames sent before the handshake and deliver them after HELLO", function()
    local a = core.session(ctx(pki.a), {})
    local b = core.session(ctx(pki.b), { server = true })
    a:send(0x30, "early")
    a:start()
    local _, eb = H.pump(a, b)
    assert.equal("hello", eb[2].event)
    assert.same({ "message", "early" }, { eb[3].event, eb[3].payload })
  end)
end)

describe("wire codec", function()
  it("rejects frames of length 0 and over the limit, and waits for partial ones", function()
    local _, err, name = core.wire_decode("\0\0\0\0\16")
    assert.equal("EPROTO", name)
    assert.matches("length 0", err)
    _, err = core.wire_decode("\255\255\255\255\16")
    assert.matches("over the limit", err)
    assert.is_nil((core.wire_decode("\0\0\0\9\16abc")))
    assert.is_nil((core.wire_decode("\0\0")))
    _, err = core.wire_decode("\0\0\0\4\1abc") -- a HELLO too short
    assert.matches("a HELLO of 3 bytes", err)
  end)
end)
