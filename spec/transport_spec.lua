-- The transport: sessions joined to sockets, over the in-memory adapter
-- (deterministic, manual clock) and over real loopback sockets with luv,
-- between processes, and against the openssl command line.
local H = require "helper"
local core = require "odo.core"
local memory = require "odo.adapter.memory"
local luv_adapter = require "odo.adapter.luv"
local Transport = require "odo.transport"
local uv = require "luv"

describe("transport", function()
  local pki
  setup(function()
    pki = H.pki(H.tmpdir())
    pki.a, pki.b = pki.node("a"), pki.node("b")
  end)
  teardown(H.cleanup)

  local function tls(n) return assert(core.tls_context(n)) end

  describe("in memory", function()
    it("connects two nodes, carries frames both ways and says BYE", function()
      local net = memory.new()
      local A = Transport.new { adapter = net, tls = tls(pki.a), port = 4000, host = "10.0.0.1" }
      local B = Transport.new { adapter = net, tls = tls(pki.b), port = 5000, host = "10.0.0.2" }
      local log = {}
      assert(B:listen("10.0.0.2", 5000, function(conn)
        conn.handlers = {
          on_hello = function(_, h) log[#log + 1] = "B: hello " .. h.port end,
          on_message = function(c, t, p) c:send(t + 1, p:upper()) end,
          on_close = function(_, i) log[#log + 1] = "B: closed by " .. i.by .. ": " .. i.reason end,
        }
      end))
      A:dial("10.0.0.2", 5000, {
        on_hello = function(c, h)
          log[#log + 1] = "A: hello " .. h.port
          c:send(0x20, "ping me")
        end,
        on_message = function(c, t, p)
          log[#log + 1] = ("A: %d %s"):format(t, p)
          c:bye("normal", "done")
        end,
        on_close = function(_, i) log[#log + 1] = "A: closed by " .. i.by .. ": " .. i.reason end,
      })
      assert.is_true(net.run_until(function() return #log == 5 end, 1000))
      assert.same({ "B: hello 4000", "A: hello 5000", "A: 33 PING ME", "A: closed by us: done",
        "B: closed by peer: done" }, log)
      assert.equal(0, net.pending_timers())
    end)

    it("reports a refused connection", function()
      local net = memory.new()
      local A = Transport.new { adapter = net, tls = tls(pki.a), host = "10.0.0.1" }
      local err
      A:dial("10.0.0.9", 1, { on_error = function(e, name) err = { e, name } end })
      net.drain()
      assert.equal("ECONNREFUSED", err[2])
    end)

    it("drops a connection whose introductions do not finish in time", function()
      local net = memory.new()
      -- accepts TCP, never speaks TLS
      net.listen("10.0.0.2", 5000, function(sock) sock:read_start(function() end) end)
      local A = Transport.new { adapter = net, tls = tls(pki.a), host = "10.0.0.1", handshake_timeout_ms = 3000 }
      local closed
      A:dial("10.0.0.2", 5000, { on_close = function(_, i) closed = { net.now(), i.name, i.reason } end })
      net.advance(2999)
      assert.is_nil(closed)
      net.advance(1)
      assert.same({ 3000, "timeout", "introductions did not finish within 3000 ms" }, closed)
    end)

    it("refuses a second node that uses this node's key", function()
      local net = memory.new()
      local A = Transport.new { adapter = net, tls = tls(pki.a), host = "10.0.0.1" }
      local twin = Transport.new { adapter = net, tls = tls(pki.a), host = "10.0.0.3" }
      local reasons = {}
      twin:listen("10.0.0.3", 6000, function(conn)
        conn.handlers = { on_close = function(_, i) reasons.twin = i end }
      end)
      A:dial("10.0.0.3", 6000, { on_close = function(_, i) reasons.a = i end })
      assert.is_true(net.run_until(function() return reasons.a and reasons.twin end, 1000))
      assert.equal("shared key", reasons.a.name)
      assert.matches("each node needs its own key", reasons.a.reason)
      assert.equal("shared key", reasons.twin.name)
    end)

    it("introduces a node that dialled itself with its own id and instance", function()
      local net = memory.new()
      local A = Transport.new { adapter = net, tls = tls(pki.a), host = "10.0.0.1", port = 4000 }
      local hello
      A:listen("10.0.0.1", 4000, function(conn) conn.handlers = {} end)
      A:dial("10.0.0.1", 4000, { on_hello = function(_, h) hello = h end })
      net.run_until(function() return hello end, 1000)
      assert.equal(A.id, hello.id)
      assert.equal(A.instance, hello.instance)
    end)
  end)

  describe("on loopback", function()
    after_each(function()
      luv_adapter.shutdown()
      assert.same({}, H.active_handles())
    end)

    it("talks to a transport in another process", function()
      local peer = io.popen(("ODO_CPATH='%s' lua5.4 '%s/spec/tools/echo_peer.lua' '%s' '%s' '%s' 2>/dev/null")
        :format(os.getenv("ODO_CPATH") or "", H.root, pki.b.ca, pki.b.cert, pki.b.key))
      local port = tonumber(peer:read("*l"))
      assert.is_truthy(port)
      local A = Transport.new { adapter = luv_adapter, tls = tls(pki.a), port = 4242 }
      local got, closed = {}, nil
      A:dial("127.0.0.1", port, {
        on_hello = function(c, h)
          got.hello = h
          for i = 1, 50 do c:send(0x40, ("frame %d "):format(i) .. ("x"):rep(i * 1000)) end
        end,
        on_message = function(c, t, p)
          got[#got + 1] = { t, #p }
          if #got == 50 then c:bye("normal", "thanks") end
        end,
        on_close = function(_, i) closed = i end,
      })
      assert.is_true(H.luv_until(function() return closed end, 20000))
      peer:close()
      assert.equal(tls(pki.b):id(), got.hello.id)
      assert.equal(50, #got)
      assert.same({ 0x41, #"frame 50 " + 50000 }, got[50])
      assert.equal("thanks", closed.reason)
    end)

    local function s_client(port, args, out)
      -- stdin stays open for a while so s_client waits for our HELLO
      return io.popen(("(sleep 3 | openssl s_client -connect 127.0.0.1:%d -tls1_3 -quiet %s > '%s' 2>&1 &)")
        :format(port, args, out))
    end

    it("lets openssl s_client with a valid certificate read the HELLO frame", function()
      local B = Transport.new { adapter = luv_adapter, tls = tls(pki.b), port = 4321 }
      local server = assert(B:listen("127.0.0.1", 0, function(conn) conn.handlers = {} end))
      local out = pki.dir .. "/s_client.out"
      s_client(server.port, ("-cert '%s' -key '%s' -CAfile '%s'"):format(pki.a.cert, pki.a.key, pki.ca), out):close()
      local hello
      assert.is_true(H.luv_until(function()
        local fh = io.open(out, "rb")
        local data = fh and fh:read("a") or ""
        if fh then fh:close() end
        local at = data:find("\0\0\0\53\1", 1, true)
        if at then hello = core.wire_decode(data:sub(at)) end
        return hello
      end, 15000))
      assert.equal("hello", hello.kind)
      assert.equal(B.id, hello.id)
      assert.equal(4321, hello.port)
      B:close()
      server.close()
      H.luv_until(function() return next(B.conns) == nil end, 5000)
    end)

    it("gives openssl s_client with an untrusted certificate, or none, nothing", function()
      for _, args in ipairs({
        ("-cert '%s' -key '%s'"):format(pki.mallory.cert, pki.mallory.key),
        "",
      }) do
        -- an unauthenticated connection never reaches on_accept: its end
        -- is a notice of the transport's admission
        local closed, accepted
        local B = Transport.new { adapter = luv_adapter, tls = tls(pki.b), port = 4321,
          admission = { notice = function(kind, message) closed = { name = kind, reason = message } end } }
        local server = assert(B:listen("127.0.0.1", 0, function() accepted = true end))
        local out = pki.dir .. "/s_client_bad.out"
        os.remove(out)
        s_client(server.port, args, out):close()
        assert.is_true(H.luv_until(function() return closed end, 15000))
        assert.equal("tls", closed.name)
        assert.matches("certificate", closed.reason)
        assert.is_nil(accepted)
        H.luv_until(function() return false end, 300)
        local fh = io.open(out, "rb")
        local data = fh and fh:read("a") or ""
        if fh then fh:close() end
        assert.is_nil(data:find("\0\0\0\53\1", 1, true), "s_client got a HELLO")
        server.close()
      end
    end)

    it("works with the seed README's RSA-4096 self-signed certificates", function()
      local s1, s2 = pki.seed("r1", 4096), pki.seed("r2", 4096)
      pki.bundle("rsa-bundle.pem", { s1, s2 })
      local A = Transport.new { adapter = luv_adapter, tls = tls(s1), port = 1 }
      local B = Transport.new { adapter = luv_adapter, tls = tls(s2), port = 2 }
      local hellos = {}
      local server = assert(B:listen("127.0.0.1", 0, function(conn)
        conn.handlers = { on_hello = function(c, h) hellos.b = h; c:bye("normal", "ok") end }
      end))
      A:dial("127.0.0.1", server.port, { on_hello = function(_, h) hellos.a = h end,
        on_close = function() hellos.closed = true end })
      assert.is_true(H.luv_until(function() return hellos.closed end, 20000))
      assert.equal(B.id, hellos.a.id)
      assert.equal(A.id, hellos.b.id)
      server.close()
      uv.run("nowait")
    end)
  end)
end)
