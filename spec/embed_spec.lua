-- Embedding a node in a host's loop: `node:step(timeout_ms)` and
-- `node:timeout()` drive it without `uv.run()`; two nodes stepped only by
-- a host loop replicate over TLS; the call shapes (the new forms with
-- options in a table and the callback last, and the old forms, kept);
-- listeners in table form; the allocator left alone unless asked for.
local H = require "helper"
local odo = require "odo"
local core = require "odo.core"
local uv = require "luv"
local luv_adapter = require "odo.adapter.luv"

-- Steps `nodes` as a host would (each frame: step with the time the node
-- says it needs, capped) until cond() holds or ms of real time pass.
local function host_loop(nodes, cond, ms)
  local deadline = uv.hrtime() + ms * H.slow * 1e6
  while not cond() and uv.hrtime() < deadline do
    for _, n in ipairs(nodes) do
      local t = n:timeout()
      n:step(math.min(t or 10, 10))
    end
  end
  return not not cond()
end

describe("an embedded node", function()
  local pki, opened
  setup(function()
    pki = H.pki(H.tmpdir())
    pki.a, pki.b = pki.node("a"), pki.node("b")
  end)
  before_each(function() opened = {} end)
  after_each(function()
    H.close_checked(opened)
    luv_adapter.shutdown()
    assert.same({}, H.active_handles())
  end)
  teardown(H.cleanup)

  local function node(opts)
    local n = H.node(opts)
    opened[#opened + 1] = n
    return n
  end

  describe("step and timeout", function()
    it("runs ready work on step(0) and waits for a due timer only within step's timeout", function()
      local n = node()
      local fired = false
      local t = n.adapter.timer(30, function() fired = true end)
      n:step(0)
      assert.is_false(fired) -- not due yet, and step(0) does not wait
      local wait = n:timeout()
      assert.is_number(wait)
      assert.is_true(wait <= 30, tostring(wait))
      -- waiting as long as timeout() says makes it due
      assert.is_true(host_loop({ n }, function() return fired end, 5000))
      t.stop()
    end)

    it("says 0 while group commits are pending, and steps answer them once the worker wrote them", function()
      local n = node()
      local rev
      n:append({ { type = "t", data = "x" } }, nil, function(r) rev = r end)
      assert.equal(0, n:timeout())
      -- the write is fsynced on the core's worker: a step hands it over,
      -- and a later step (its descriptor readable) answers
      assert.is_true(host_loop({ n }, function() return rev ~= nil end, 5000))
      assert.equal(1, rev)
      assert.equal(1, n.store:stream(n.id).last)
    end)

    it("offers the loop's descriptor for hosts that poll", function()
      local n = node()
      assert.is_number(n:pollfd())
    end)

    it("replicates over mutual TLS with two nodes stepped by a host loop only", function()
      local a = node { tls = pki.a, listen = "127.0.0.1:0" }
      local b = node { tls = pki.b, peers = { "127.0.0.1:" .. a.listen.port } }
      a:append({ { type = "move", data = "a1" } })
      b:append({ { type = "move", data = "b1" }, { type = "move", data = "b2" } })
      local function holds(n, stream, rev)
        local st = n.store:stream(stream)
        return st and st.last >= rev
      end
      assert.is_true(host_loop({ a, b }, function() return holds(b, a.id, 1) and holds(a, b.id, 2) end, 20000))
      assert.equal("b2", a:read(b.id, 2, 2)[1].data)
    end)

    it("raises on a wrong timeout, and without an adapter that can step", function()
      local n = node()
      assert.has_error(function() n:step(-1) end)
      assert.has_error(function() n:step("1") end)
      -- the in-memory adapter steps its queue (its clock moves only on
      -- advance) and cannot tell a timeout
      local m = node { adapter = require("odo.adapter.memory").new() }
      local rev
      m:append({ type = "t" }, nil, function(r) rev = r end)
      m:step(0)
      assert.equal(1, rev)
      assert.is_nil(m:timeout())
      local bare = setmetatable({ step = false }, { __index = m.adapter })
      local b = node { adapter = bare }
      assert.has_error(function() b:step(0) end, "this node's adapter has no step (see docs/ADAPTERS.md)")
    end)
  end)

  describe("the luv adapter's read budget", function()
    local budget
    before_each(function() budget = luv_adapter.read_budget_ms end)
    after_each(function() luv_adapter.read_budget_ms = budget end)

    -- A socket with `chunks` x 64 KiB waiting in the kernel, read by a
    -- handler that takes 2 ms per chunk; returns the chunks the first
    -- loop turn delivered, and every byte once the loop ran to the end.
    local function first_turn(chunks)
      local got_sock
      local server = assert(luv_adapter.listen("127.0.0.1", 0, function(s) got_sock = s end))
      local client = uv.new_tcp()
      local written = false
      client:connect("127.0.0.1", server.port, function(err)
        assert(not err, err)
        client:write(("z"):rep(65536 * chunks), function() written = true end)
      end)
      assert.is_true(H.luv_until(function() return got_sock and written end, 5000))
      local calls, bytes = 0, 0
      got_sock:read_start(function(_, data)
        calls = calls + 1
        bytes = bytes + (data and #data or 0)
        local t = uv.hrtime()
        repeat until uv.hrtime() - t > 2e6 -- a handler that takes 2 ms
      end)
      uv.run("nowait")
      local first = calls
      client:shutdown()
      assert.is_true(H.luv_until(function() return bytes == 65536 * chunks end, 10000))
      got_sock:close()
      client:close()
      server.close()
      return first, bytes
    end

    it("stops a socket's reads for the rest of a loop turn once they took longer than the budget", function()
      luv_adapter.read_budget_ms = 1
      local first = first_turn(8)
      assert.equal(1, first)
    end)

    it("reads on in the same turn without a budget (what the budget prevents)", function()
      luv_adapter.read_budget_ms = nil
      local first = first_turn(8)
      assert.is_true(first > 1, first)
    end)
  end)

  describe("call shapes", function()
    it("appends with options in a table (stream, expected, sync), and in the old form", function()
      local n = node()
      assert.equal(1, n:append({ type = "t", data = "one" }))
      assert.equal(3, n:append({ { type = "t", data = "two" }, { type = "t", data = "three" } }, { expected = 1 }))
      local last, err, name = n:append({ type = "t", data = "late" }, { expected = 1 })
      assert.is_nil(last)
      assert.equal("ECONFLICT", name)
      assert.matches("^ECONFLICT", err)
      local named = n:stream_id("moves")
      assert.equal(1, n:append({ type = "m", data = "n1" }, { stream = named, sync = false }))
      -- the old form, kept
      assert.equal(4, n:append(nil, { type = "t", data = "four" }))
      assert.equal(2, n:append(named, { type = "m", data = "n2" }, { expected = 1 }))
      assert.equal("n2", n:read(named, 2, 2)[1].data)
      assert.has_error(function() n:append({ type = "t" }, "opts") end)
      assert.has_error(function() n:append({ type = "t" }, { stream = 5 }) end)
    end)

    it("appends with a callback last: a group commit, answered once", function()
      local n = node()
      local got = {}
      n:append({ type = "t", data = "a" }, nil, function(r) got[#got + 1] = r end)
      n:append({ type = "t", data = "b" }, { stream = n:stream_id("x") }, function(r) got[#got + 1] = r end)
      n:append({ type = "t", data = "c" }, { expected = 7 }, function(_, _, name)
        got[#got + 1] = name
      end)
      assert.is_true(H.luv_until(function() return #got == 3 end, 5000))
      assert.same({ 1, 1, "ECONFLICT" }, got)
    end)

    it("snapshots with (stream, opts, cb) and with the old (stream, cb, reducer)", function()
      local n = node()
      n:append({ odo.kv.put("k", "1"), odo.kv.put("k", "2") })
      local revs = {}
      n:snapshot(nil, { reducer = "kv" }, function(rev, err) revs[#revs + 1] = rev or err end)
      assert.is_true(H.luv_until(function() return #revs == 1 end, 5000))
      n:append({ odo.kv.put("j", "3") })
      n:snapshot(nil, function(rev, err) revs[#revs + 1] = rev or err end, "kv")
      assert.is_true(H.luv_until(function() return #revs == 2 end, 5000))
      n:append({ odo.kv.put("j", "4") })
      n:snapshot(nil, nil, function(rev, err) revs[#revs + 1] = rev or err end) -- no opts: the policy's reducer
      assert.is_true(H.luv_until(function() return #revs == 3 end, 5000))
      assert.same({ 2, 3 }, { revs[1], revs[2] })
    end)

    it("hands a listener registered with { table = true } one table, others their values", function()
      local n = node()
      local tables, values = {}, {}
      local fn = n:on("snapshot", function(ev) tables[#tables + 1] = ev end, { table = true })
      n:on("snapshot", function(stream, rev) values[#values + 1] = { stream, rev } end)
      n:append({ odo.kv.put("k", "1") })
      local done
      n:snapshot(nil, { reducer = "kv" }, function(rev) done = rev end)
      assert.is_true(H.luv_until(function() return done and #tables == 1 end, 5000))
      assert.same({ event = "snapshot", stream = n.id, rev = 1 }, tables[1])
      assert.same({ { n.id, 1 } }, values)
      -- off() takes the function as it was given to on()
      n:off("snapshot", fn)
      assert.equal(1, #n:listeners("snapshot"))
      n:emit("snapshot", n.id, 2)
      assert.equal(1, #tables)
      assert.same({ { n.id, 1 }, { n.id, 2 } }, values)
      -- an event with no field names listed: its values as the array part
      n:on("custom", function(ev) tables[#tables + 1] = ev end, { table = true })
      n:emit("custom", "x", 2)
      assert.same({ event = "custom", "x", 2 }, tables[2])
    end)

    it("hands peer transitions to a table listener with named fields", function()
      local a = node { tls = pki.a, listen = "127.0.0.1:0" }
      local b = node { tls = pki.b, peers = { "127.0.0.1:" .. a.listen.port } }
      local seen
      b:on("peer", function(ev) if ev.new == "active" then seen = ev end end, { table = true })
      assert.is_true(H.luv_until(function() return seen ~= nil end, 10000))
      assert.equal("peer", seen.event)
      assert.equal(a.id, seen.peer.id)
      assert.is_string(seen.old)
    end)
  end)

  describe("the allocator", function()
    local real
    before_each(function() real = core.tune_allocator end)
    after_each(function() core.tune_allocator = real end)

    it("is left alone by a node with a network unless it asks (odo run does)", function()
      local calls = 0
      core.tune_allocator = function() calls = calls + 1 return true end
      node { tls = pki.a, listen = "127.0.0.1:0" }
      assert.equal(0, calls)
      node { tls = pki.b, listen = "127.0.0.1:0", tune_allocator = true }
      assert.equal(1, calls)
      local opts = require("odo.cli.run").node_options({ dir = "d", ca = "c", cert = "c", key = "k" }, {})
      assert.is_true(opts.tune_allocator)
      assert.has_error(function() odo.node { dir = H.tmpdir(), node_id = "x", tune_allocator = "yes" } end)
    end)
  end)
end)
