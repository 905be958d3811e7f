-- The live path between a source and a caught-up replica, on the
-- in-memory adapter (real TLS, sessions, stores and commit queues;
-- simulated sockets and time): what a live event waits for. A source
-- serving a catch-up sends an append's live batch before its next slice
-- of bulk; a replica writes a small live batch of a stream with nothing
-- in flight as it handles it (no hand-off to the commit queue's worker
-- and back), unless every batch must be fsynced (`replica_sync`).
local H = require "helper"

describe("the live path", function()
  local env = H.memory_world("l", 3)
  local net
  setup(function() env.setup() end)
  teardown(H.cleanup)
  before_each(function() env.before_each(); net = env.net end)
  after_each(env.after_each_checked)

  local function node(i, opts) return env.node(i, opts) end

  local function has(n, id, rev)
    return function()
      local st = n.store:stream(id)
      return st ~= nil and st.last >= rev
    end
  end

  it("a source serving a catch-up sends an append's live batch before its next bulk slice", function()
    -- a bulk slice of a microsecond: one catch-up batch a loop turn, of
    -- one signed head (1,000 events) each
    local a = node(1, { policy = { sync_pump_us = 1, sync_bulk_batch_bytes = 0 } })
    for _ = 1, 20 do a:append(nil, H.events(1000)) end
    local b = node(2, { peers = { "10.0.0.1:4000" } })
    assert.is_true(net.run_until(has(b, a.id, 20000), 30000))
    local c = node(3, { peers = { "10.0.0.1:4000" } })
    -- a's engine calls once the append is made: its head must be signed
    -- (and its live batch pumped, tails first) before any more bulk
    local calls, appended
    local engine = a.sync.engine
    a.sync.engine = setmetatable({
      sign_heads = function(_, ...)
        if calls then calls[#calls + 1] = "sign" end
        return engine:sign_heads(...)
      end,
      pump = function(_, ...)
        if calls then calls[#calls + 1] = "pump" end
        return engine:pump(...)
      end,
    }, { __index = function(_, k)
      return function(_, ...) return engine[k](engine, ...) end
    end })
    local pump = a.sync._pump
    a.sync._pump = function(self, ...)
      pump(self, ...)
      -- c's catch-up is under way and its next bulk slice is queued: the
      -- append comes after it
      if not appended and self.pump_scheduled and (c.store:stream(a.id) or { last = 0 }).last >= 3000 then
        appended = true
        calls = {}
        a:append(nil, { { type = "live", data = "now" } })
      end
    end
    assert.is_true(net.run_until(function() return calls ~= nil and #calls >= 2 end, 30000))
    assert.same({ "sign", "pump" }, { calls[1], calls[2] })
    assert.is_true(net.run_until(has(b, a.id, 20001), 30000))
    assert.is_true(net.run_until(has(c, a.id, 20001), 30000))
    assert.is_true(c.store:verify(a.id))
  end)

  -- Where the replica's "replicated" of each batch came from: the handling
  -- of its message (written at once) or the commit queue's collection.
  local function replicated_from(b, a)
    local inside, from = false, {}
    local on_message = b.sync.on_message
    b.sync.on_message = function(self, ...)
      inside = true
      on_message(self, ...)
      inside = false
    end
    b:on("replicated", function(stream, last)
      if stream == a.id then
        from[last] = inside and "handled" or "written"
        -- whatever the path, the store holds it when it is reported
        assert.is_true(b.store:stream(a.id).last >= last)
      end
    end)
    return from
  end

  it("a replica writes a small live batch as it handles it; catch-up batches go to the worker", function()
    local a = node(1)
    for _ = 1, 5 do a:append(nil, H.events(1000)) end
    local b = node(2, { peers = { "10.0.0.1:4000" } })
    local from = replicated_from(b, a)
    assert.is_true(net.run_until(has(b, a.id, 5000), 30000))
    assert.equal("written", from[5000], "a catch-up batch of 1,000 events skipped the commit queue")
    local seen = {}
    b:subscribe(a.id, "live", function(batch)
      for _, ev in ipairs(batch) do seen[#seen + 1] = ev.data end
    end)
    for i = 1, 3 do
      a:append(nil, { { type = "live", data = "live" .. i } })
      assert.is_true(net.run_until(has(b, a.id, 5000 + i), 10000))
      assert.equal("handled", from[5000 + i])
    end
    assert.is_true(net.run_until(function() return #seen == 3 end, 10000))
    assert.same({ "live1", "live2", "live3" }, seen)
    assert.equal(0, select(2, b.sync.engine:backlog()))
    assert.is_true(b.store:verify(a.id))
  end)

  it("with replica_sync, a live batch is fsynced on the worker before it counts", function()
    local a = node(1)
    a:append(nil, H.events(10))
    local b = node(2, { peers = { "10.0.0.1:4000" }, policy = { replica_sync = true } })
    local from = replicated_from(b, a)
    assert.is_true(net.run_until(has(b, a.id, 10), 30000))
    a:append(nil, { { type = "live", data = "live" } })
    assert.is_true(net.run_until(has(b, a.id, 11), 10000))
    assert.equal("written", from[11])
  end)

  it("peer_socket_buffer sets the kernel's buffers of both ends of a peer connection", function()
    local uv = require "luv"
    local luv_adapter = require "odo.adapter.luv"
    local lp = H.pki(H.tmpdir())
    local policy = { peer_socket_buffer = 65536 }
    local a = H.node { tls = lp.node("a"), listen = "127.0.0.1:0", sync = false, policy = policy }
    local b = H.node { tls = lp.node("b"), peers = { "127.0.0.1:" .. a.listen.port }, sync = false, policy = policy }
    local c = H.node { tls = lp.node("c"), peers = { "127.0.0.1:" .. a.listen.port }, sync = false }
    finally(function()
      c:close()
      b:close()
      a:close()
      luv_adapter.shutdown()
    end)
    a:append(nil, H.events(10))
    assert.is_true(H.luv_until(function()
      local sb, sc = b.store:stream(a.id), c.store:stream(a.id)
      return sb ~= nil and sb.last == 10 and sc ~= nil and sc.last == 10
    end, 20000))
    local function sizes(n, peer)
      local tcp = n.swarm:active(peer).conn.sock.tcp
      return uv.send_buffer_size(tcp), uv.recv_buffer_size(tcp)
    end
    -- Linux doubles what is asked, for its own bookkeeping
    assert.same({ 131072, 131072 }, { sizes(b, a.id) })
    assert.same({ 131072, 131072 }, { sizes(a, b.id) }) -- a's side follows its own policy
    -- without the policy, the kernel's own sizing (not what was asked of b)
    local snd = sizes(c, a.id)
    assert.is_true(snd ~= 131072)
  end)
end)
