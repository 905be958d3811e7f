-- A node's contract at its edges: wrong options raise before anything is
-- opened; runtime failures while opening return nil, "NAME: message",
-- NAME with everything released; group commits answer every caller
-- exactly once, whatever another caller did wrong.
local H = require "helper"
local odo = require "odo"
local memory = require "odo.adapter.memory"
local luv_adapter = require "odo.adapter.luv"

local function exists(path)
  local fh = io.open(path, "r")
  if fh then fh:close() end
  return fh ~= nil
end

describe("node", function()
  local pki
  setup(function()
    pki = H.pki(H.tmpdir())
    pki.a, pki.b = pki.node("a"), pki.node("b")
  end)
  teardown(H.cleanup)

  describe("opening", function()
    local opened
    before_each(function() opened = {} end)
    after_each(function()
      for _, n in ipairs(opened) do n:close() end
      luv_adapter.shutdown()
      assert.same({}, H.active_handles())
    end)

    it("raises on wrong options before it opens the store or arms a timer", function()
      local clock = memory.new()
      local cases = {
        { peers = { "nonsense" } },
        { peers = "10.0.0.2:4000" },
        { policy = { tick_ms = "fast" } },
        { policy = { max_peers = -1 } },
        { policy = { backoff = { 100, "soon" } } },
        { policy = { upstream = "the source" } },
        { policy = { reducer = { name = "no reduce" } } },
        { policy = "fast" },
        { discovery = { 42 } },
        { sync = "yes" },
      }
      for i, extra in ipairs(cases) do
        local dir = H.tmpdir()
        local opts = H.merge({ dir = dir, node_id = "n", adapter = clock }, extra)
        assert.has_error(function() odo.node(opts) end, nil, "case " .. i)
        assert.is_false(exists(dir .. "/store/CURRENT"), "case " .. i .. " opened the store")
        assert.equal(0, clock.pending_timers(), "case " .. i .. " left a timer")
      end
      -- with a certificate too: listen and peers are checked first
      for i, extra in ipairs({ { listen = "nonsense" }, { listen = "10.0.0.1:99999" }, { peers = { "a:b" } } }) do
        local dir = H.tmpdir()
        local opts = H.merge({ dir = dir, tls = pki.a, adapter = clock, listen = "10.0.0.1:4000" }, extra)
        assert.has_error(function() odo.node(opts) end, nil, "tls case " .. i)
        assert.is_false(exists(dir .. "/store/CURRENT"), "tls case " .. i .. " opened the store")
        assert.equal(0, clock.pending_timers(), "tls case " .. i .. " left a timer")
      end
    end)

    it("returns EADDRINUSE when the address is taken, and releases the store and its timers", function()
      local net = memory.new()
      local a = assert(odo.node { dir = H.tmpdir(), tls = pki.a, adapter = net, listen = "10.0.0.1:4000" })
      opened[#opened + 1] = a
      local timers = net.pending_timers()
      local dir = H.tmpdir()
      local b, err, name = odo.node { dir = dir, tls = pki.b, adapter = net, listen = "10.0.0.1:4000" }
      assert.is_nil(b)
      assert.equal("EADDRINUSE", name)
      assert.matches("^EADDRINUSE: ", err)
      assert.equal(timers, net.pending_timers())
      -- the store is free again
      local b2 = assert(odo.node { dir = dir, tls = pki.b, adapter = net, listen = "10.0.0.2:4000" })
      opened[#opened + 1] = b2
    end)

    it("returns EINVAL for a listen host that is neither an IP nor a name (luv), and releases everything", function()
      local dir = H.tmpdir()
      local n, err, name = odo.node { dir = dir, tls = pki.a, listen = "no host:0" }
      assert.is_nil(n)
      assert.equal("EINVAL", name)
      assert.matches("not an IP address or host name", err)
      luv_adapter.shutdown()
      assert.same({}, H.active_handles())
      local n2, err2 = odo.node { dir = dir, tls = pki.a, listen = "127.0.0.1:0" }
      assert.is_not_nil(n2, err2)
      opened[#opened + 1] = n2
    end)
  end)

  describe("append_async", function()
    local clock, n
    before_each(function()
      clock = memory.new()
      n = H.node { adapter = clock }
    end)
    after_each(function()
      n:close()
      assert.same({}, n.errors)
      assert.equal(0, clock.pending_timers())
    end)

    it("raises at the call on a wrong event, and the other callers' appends are written", function()
      local got = {}
      local function cb(i) return function(...) got[#got + 1] = { i, ... } end end
      n:append_async(nil, H.events(2), nil, cb(1))
      for _, bad in ipairs({ { type = "t", data = 42 }, { { data = "no type" } }, { type = "t", ts = -1 }, "x" }) do
        assert.has_error(function() n:append_async(nil, bad, nil, cb("bad")) end)
      end
      assert.has_error(function() n:append_async(42, H.events(1), nil, cb("bad")) end)
      assert.has_error(function() n:append_async(nil, H.events(1), { expected = "0" }, cb("bad")) end)
      n:append_async(nil, H.events(1), nil, cb(2))
      clock.drain()
      assert.same({ { 1, 2 }, { 2, 3 } }, got)
      assert.equal(3, n.store:stream(n.id).last)
    end)

    it("answers every caller exactly once when a group still fails in the shared write", function()
      local got = {}
      local function cb(i) return function(...) got[#got + 1] = { i, ... } end end
      local ev = { type = "t", data = "fine when appended" }
      n:append_async(nil, H.events(1), nil, cb(1))
      n:append_async(nil, ev, nil, cb(2))
      n:append_async(nil, H.events(2), nil, cb(3))
      ev.data = 42 -- changed after the call's checks
      clock.drain()
      assert.equal(3, #got)
      assert.same({ 1, 1 }, got[1])
      assert.same({ 2, nil }, { got[2][1], got[2][2] })
      assert.equal("EINVAL", got[2][4])
      assert.same({ 3, 3 }, got[3])
    end)

    it("append_wait returns while another coroutine's append is wrong", function()
      local res, raised
      n:spawn(function() res = { n:append_wait(nil, { type = "ok", data = "fine" }) } end)
      n:spawn(function()
        local ok, err = pcall(n.append_wait, n, nil, { type = "bad", data = 42 })
        raised = not ok and err
      end)
      clock.drain()
      assert.same({ 1 }, res)
      assert.matches("event.data must be a string", raised)
    end)
  end)
end)
