-- Pipelined catch-up over real TLS sockets on loopback (luv): received
-- batches go to the store's commit queue, whose worker chains and writes
-- them. The bytes waiting for the worker stay bounded (the replica stops
-- reading from its upstream past policy.sync_write_backlog); every event
-- arrives once and in order, with the source's chain; nothing is reported
-- replicated or caught up before it is written.
local H = require "helper"
local luv_adapter = require "odo.adapter.luv"

describe("pipelined catch-up", function()
  teardown(H.cleanup)

  it("bounds the bytes waiting for the worker, holding the upstream's socket, and loses nothing", function()
    local LIMIT = 64 * 1024
    local pki = H.pki(H.tmpdir())
    local a = H.node { tls = pki.node("a"), listen = "127.0.0.1:0", sync = false }
    local b = H.node { tls = pki.node("b"), peers = { "127.0.0.1:" .. a.listen.port }, sync = false,
      policy = { sync_write_backlog = LIMIT } }
    finally(function()
      b:close()
      a:close()
      luv_adapter.shutdown()
    end)
    for _ = 1, 20 do a:append(nil, H.events(1000)) end
    -- per socket read: the growth of the bytes in flight to the worker,
    -- and whether the replica read while it said it held its reading
    local worst, per_read, holds, reads_held = 0, 0, 0, 0
    local on_message = b.sync.on_message
    b.sync.on_message = function(self, p, t, payload)
      local conn = p.conn
      if not conn.spec_watched then
        conn.spec_watched = true
        local on_read = conn._on_read
        conn._on_read = function(c, err, data)
          if c.reading_held then reads_held = reads_held + 1 end
          local before = self.engine:backlog()
          on_read(c, err, data)
          per_read = math.max(per_read, self.engine:backlog() - before)
        end
      end
      on_message(self, p, t, payload)
      worst = math.max(worst, (self.engine:backlog()))
      if conn.reading_held then holds = holds + 1 end
    end
    -- what the application sees: every revision once, in order, and only
    -- what the store holds
    local seen, ahead = 0, 0
    b:on("replicated", function(stream, last)
      if stream == a.id and b.store:stream(stream).last < last then ahead = ahead + 1 end
    end)
    b:subscribe(a.id, 1, function(batch)
      for _, ev in ipairs(batch) do
        assert.equal(seen + 1, ev.rev)
        seen = ev.rev
      end
    end)
    local caught
    b:on("caught_up", function(stream, rev)
      if stream == a.id and rev == 20000 then caught = b.store:stream(stream).last end
    end)
    assert.is_true(H.luv_until(function() return caught ~= nil and seen == 20000 end, 60000))
    assert.equal(20000, caught) -- told it caught up only once all was written
    assert.equal(0, ahead)
    assert.is_true(holds > 0, "the replica never stopped reading")
    assert.equal(0, reads_held)
    -- past the bound by at most what one read of the socket completed
    assert.is_true(worst >= LIMIT)
    assert.is_true(worst <= LIMIT + per_read, ("worst %d, one read %d"):format(worst, per_read))
    assert.equal(H.hex(a.store:stream(a.id).hash), H.hex(b.store:stream(a.id).hash))
    assert.is_true(b.store:verify(a.id))
    assert.same({ 0, 0 }, { b.sync.engine:backlog() })
    assert.same({}, a.errors)
    assert.same({}, b.errors)
  end)
end)
