-- The C snapshot builder: slices, built-in reducers, incremental builds,
-- finishing on a worker thread, and bad input.
local H = require "helper"
local core = require "odo.core"
local odo = require "odo"
local Store = require "odo.store"

local NODE = "node-a"

describe("snapshot builder", function()
  local dir, s
  before_each(function()
    dir = H.tmpdir()
    s = assert(Store.open(dir .. "/store", { node_id = NODE }))
  end)
  after_each(function()
    s:close()
    H.cleanup()
  end)

  local function puts(n, keys)
    local evs = {}
    for i = 1, n do evs[i] = odo.kv.put("k" .. (i % keys), "v" .. i) end
    return evs
  end

  it("folds in slices of the size asked", function()
    s:append(nil, puts(2500, 10))
    local b = assert(core.snapshot_builder(s.core, NODE, "kv"))
    local steps = 0
    repeat steps = steps + 1 until b:step(1000)
    assert.equal(3, steps)
    local p = b:progress()
    assert.same({ 0, 2500, 2500, true }, { p.base, p.upto, p.events, p.folded })
    assert.equal(2500, b:finish())
    assert.equal(2500, s:stream(NODE).snapshot)
  end)

  it("builds up to a given revision and starts the next build from it", function()
    s:append(nil, puts(100, 5))
    local b = assert(core.snapshot_builder(s.core, NODE, "kv", { upto = 60 }))
    assert.is_true(b:step())
    assert.equal(60, b:finish())
    local b2 = assert(core.snapshot_builder(s.core, NODE, "kv"))
    assert.equal(60, b2:progress().base)
    assert.is_true(b2:step())
    assert.equal(40, b2:progress().events)
    b2:finish()
    local state = odo.kv.decode(s:snapshot_get(NODE).data)
    assert.equal("v100", state.k0)
    assert.equal("v99", state.k4)
  end)

  it("skips malformed put events and counts them", function()
    s:append(nil, { { type = "put", data = "\0\0\0\9short" }, odo.kv.put("a", "1"), { type = "put", data = "x" } })
    local b = assert(core.snapshot_builder(s.core, NODE, "kv"))
    b:step()
    assert.equal(2, b:progress().skipped)
    assert.same({ a = "1" }, odo.kv.decode(b:result()))
  end)

  it("refuses a kv build when the events before the first held are gone without a kv snapshot", function()
    s:append(nil, puts(30, 3))
    s:snapshot_put(NODE, 20, "opaque", { format = "other" })
    s:compact(NODE)
    local b, err, name = core.snapshot_builder(s.core, NODE, "kv")
    assert.is_nil(b)
    assert.equal("ESTALE", name)
    assert.matches("before 21 are compacted", err)
    -- the last reducer needs no history
    local l = assert(core.snapshot_builder(s.core, NODE, "last"))
    l:step()
    assert.equal(30, core.event_decode(l:result()).rev)
  end)

  it("finishes on a worker thread and signals a descriptor", function()
    s:append(nil, puts(20000, 5000))
    local b = assert(core.snapshot_builder(s.core, NODE, "kv"))
    while not b:step() do end
    local fd = assert(b:finish_async())
    assert.is_true(fd >= 0)
    assert.has_error(function() b:result() end, "the snapshot is being finished by a worker")
    assert.equal(20000, b:collect())
    assert.equal(20000, s:stream(NODE).snapshot)
    local state = odo.kv.decode(s:snapshot_get(NODE).data)
    assert.equal("v20000", state.k0)
  end)

  it("with a sync engine over the store, the worker signs a source snapshot before it writes it", function()
    local tls = assert(core.tls_context(H.pki(H.tmpdir()).node("a")))
    local id = tls:id()
    local own = assert(Store.open(H.tmpdir() .. "/own", { node_id = id }))
    local engine = core.sync(own.core, tls)
    own:append(nil, puts(20000, 5000))
    local b = assert(core.snapshot_builder(own.core, id, "kv"))
    while not b:step() do end
    assert(b:finish_async())
    -- the record as the worker wrote it, before collect(): never unsigned,
    -- so a peer served in between gets a snapshot it can verify
    local snap
    assert.is_true(H.wait(function()
      snap = own:snapshot_get(id, "source")
      return snap and snap.rev == 20000
    end, 10000))
    assert.is_true(core.verify(tls:public_key(),
      core.snapshot_message(id, 20000, snap.hash, snap.data, "kv"), snap.sig))
    assert.equal(20000, b:collect())
    assert.is_false(engine:sign_snapshot(id))
    engine:close()
    own:close()
  end)

  it("finishing on the worker refuses a snapshot older than the one stored, as finish() does", function()
    s:append(nil, puts(40, 4))
    local b = assert(core.snapshot_builder(s.core, NODE, "kv", { upto = 20 }))
    assert.is_true(b:step())
    local b2 = assert(core.snapshot_builder(s.core, NODE, "kv", { upto = 20 }))
    assert.is_true(b2:step())
    assert(s:snapshot_put(NODE, 30, "newer", { format = "other" }))
    local fd, err, name = b:finish_async()
    assert.is_nil(fd)
    assert.equal("ESTALE", name)
    assert.matches("already has a source snapshot at 30, newer than 20", err)
    local rev
    rev, err, name = b2:finish()
    assert.matches("newer than 20", err)
    assert.is_nil(rev)
    assert.equal("ESTALE", name)
    assert.equal("newer", s:snapshot_get(NODE).data)
  end)

  it("a sync engine refuses a store of another node", function()
    local tls = assert(core.tls_context(H.pki(H.tmpdir()).node("a")))
    assert.has_error(function() core.sync(s.core, tls) end,
      "bad argument #2 to 'sync' (the store belongs to another node than this TLS context's key)")
  end)

  it("closing the store waits for a running worker, and the snapshot counts after reopening", function()
    s:append(nil, puts(50000, 20000))
    local b = assert(core.snapshot_builder(s.core, NODE, "kv"))
    while not b:step() do end
    assert(b:finish_async())
    s:close() -- joins the worker; collect() never ran
    assert.has_error(function() b:collect() end)
    s = assert(Store.open(dir .. "/store"))
    local st = s:stream(NODE)
    assert.equal(50000, st.snapshot)
    assert.equal(50000, s:snapshot_get(NODE).rev)
    assert.equal(st.first, 1)
    assert.equal(51, s:compact(NODE, 50))
  end)

  it("a builder collected by the garbage collector while its worker runs is safe", function()
    s:append(nil, puts(20000, 20000))
    do
      local b = assert(core.snapshot_builder(s.core, NODE, "kv"))
      while not b:step() do end
      assert(b:finish_async())
    end
    collectgarbage()
    collectgarbage()
    assert.is_truthy(s:stream(NODE))
  end)

  it("rejects bad input clearly", function()
    s:append(nil, puts(3, 3))
    assert.has_error(function() core.snapshot_builder(s.core, NODE, "sum") end, "unknown reducer 'sum' (kv or last)")
    local b, _, name = core.snapshot_builder(s.core, "nobody", "kv")
    assert.is_nil(b)
    assert.equal("ENOENT", name)
    b, _, name = core.snapshot_builder(s.core, NODE, "kv", { upto = 9 })
    assert.is_nil(b)
    assert.equal("ERANGE", name)
    local _, err
    _, err, name = core.kv_decode("\0\0\0\2\0\0\0\1a")
    assert.equal("EINVAL", name)
    assert.matches("not a kv snapshot", err)
    _, _, name = core.event_decode("short")
    assert.equal("EINVAL", name)
    local fresh = assert(core.snapshot_builder(s.core, NODE, "kv"))
    assert.has_error(function() fresh:finish() end, "the snapshot is not folded yet: call step()")
  end)
end)
