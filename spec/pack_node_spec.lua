-- Packing in a node (odo.packer): a source appending one event at a
-- time, and a replica storing live batches of one event, both end with a
-- segment per 1000 revisions once the heads there are stored, announce
-- it ("packed"), serve the same events and heads to a node catching up
-- (which verifies them), and `odo verify` finds the stores clean. On the
-- in-memory adapter with real TLS and real stores.
local H = require "helper"
local pack_log = require "pack_log"

local FAST = H.merge(H.FAST, { purgatory_ms = 600000 })

local function log_records(dir, id) return pack_log.records(dir, nil, id) end

-- No signed head strictly inside a packed range's segment.
local function no_head_inside(log)
  for _, h in ipairs(log.heads) do
    for _, sg in ipairs(log.segments) do
      assert.is_false(h >= sg[1] and h < sg[2], ("a head at %d inside %d..%d"):format(h, sg[1], sg[2]))
    end
  end
end

local same_reads = pack_log.same_events

local function verify_dir(dir)
  local out, ok = H.odo_cmd("verify", "--dir", dir)
  assert(ok, out)
end

describe("packing in a node", function()
  local env = H.memory_world("pk", 3)
  setup(env.setup)
  teardown(H.cleanup)
  before_each(env.before_each)
  after_each(env.after_each_checked)

  local function last(n, id) return H.node_last(n, id) end

  -- n appends of one event to a's stream, the network running every
  -- `every` of them (its heads signed as a live source's are), until
  -- its head at n is stored.
  local function single_appends(a, n, every)
    for i = 1, n do
      assert(a:append(nil, { { type = "t", data = "e" .. i } }, { sync = false }))
      if i % every == 0 then env.net.run_until(function() return false end, 5) end
    end
    assert.is_true(env.net.run_until(function()
      local h = a.store:head_last(a.id)
      return h and h.rev == n
    end, 20000))
  end

  it("packs a source's appends of one event once its heads are signed, and serves them", function()
    local net = env.net
    local a = env.node(1, nil, FAST)
    local packed = {}
    a:on("packed", function(stream, upto, count) packed[#packed + 1] = { stream, upto, count } end)
    local metrics = require("odo.metrics").new(a)
    single_appends(a, 2500, 100)
    assert.is_true(net.run_until(function()
      return #packed > 0 and packed[#packed][2] == 2000
    end, 20000))
    local total = 0
    for _, p in ipairs(packed) do
      assert.equal(a.id, p[1])
      total = total + p[3]
    end
    assert.equal(2000, total)
    assert.truthy(metrics:text():find("\nodo_events_packed_total 2000\n", 1, true))
    metrics:close()
    local want = assert(a.store:read(a.id, 1, 2500))
    assert.is_true(a.store:verify(a.id))
    -- a node catching up gets the packed ranges, verified with a's heads
    local b = env.node(2, { peers = { "10.0.0.1:4000" } }, FAST)
    assert.is_true(net.run_until(function() return last(b, a.id) == 2500 end, 20000))
    same_reads(want, assert(b.store:read(a.id, 1, 2500)))
    local adir = a.dir
    a:close()
    net.drain()
    local log = log_records(adir, a.id)
    assert.same({ { 1, 1000 }, { 1001, 2000 } }, log.segments)
    assert.equal(500, #log.events)
    no_head_inside(log)
    verify_dir(adir)
  end)

  it("packs a replica's live batches of one event, which then serves a third node that verifies them", function()
    local net = env.net
    local a = env.node(1, nil, FAST)
    assert(a:append(nil, { { type = "t", data = "first" } }))
    local b = env.node(2, { peers = { "10.0.0.1:4000" } }, FAST)
    local packed = {}
    b:on("packed", function(stream, upto) packed[#packed + 1] = { stream, upto } end)
    assert.is_true(net.run_until(function() return last(b, a.id) == 1 end, 20000))
    -- live: each event goes to b as a batch of its own
    for i = 2, 2100 do
      assert(a:append(nil, { { type = "t", data = "e" .. i } }, { sync = false }))
      assert.is_true(net.run_until(function() return last(b, a.id) == i end, 20000))
    end
    assert.is_true(net.run_until(function()
      return #packed > 0 and packed[#packed][2] == 2000
    end, 20000))
    local want = assert(a.store:read(a.id, 1, 2100))
    same_reads(want, assert(b.store:read(a.id, 1, 2100)))
    assert.is_true(b.store:verify(a.id))
    a:close()
    local c = env.node(3, { peers = { "10.0.0.2:4000" } }, FAST)
    assert.is_true(net.run_until(function() return last(c, a.id) == 2100 end, 20000))
    same_reads(want, assert(c.store:read(a.id, 1, 2100)))
    assert.is_true(c.store:verify(a.id))
    local bdir, cdir = b.dir, c.dir
    b:close()
    c:close()
    net.drain()
    local log = log_records(bdir, a.id)
    assert.same({ { 1, 1000 }, { 1001, 2000 } }, log.segments)
    no_head_inside(log)
    verify_dir(bdir)
    verify_dir(cdir)
  end)

  -- a catch-up's batch, stored as one segment, spans several ranges:
  -- one look at its key steps over all of them (each range's own look
  -- would read that segment's block again)
  it("steps over every range a received segment spans in one look", function()
    local net = env.net
    local a = env.node(1, nil, FAST)
    assert(a:append(nil, H.events(5000)))
    assert.is_true(net.run_until(function()
      local h = a.store:head_last(a.id)
      return h and h.rev == 5000
    end, 20000))
    local b = env.node(2, { peers = { "10.0.0.1:4000" }, policy = { pack_slice = 0 } }, FAST)
    assert.is_true(net.run_until(function() return last(b, a.id) == 5000 end, 20000))
    local bdir = b.dir
    b:close()
    net.drain()
    assert.same({ { 1, 5000 } }, log_records(bdir, a.id).segments)
    local s = assert(require("odo.store").open(bdir .. "/store", { sync = false, create = false }))
    assert.same({ 0, false, 5000 }, { s:pack(a.id, 1) })
    s:close()
  end)

  it("serves a node that resumes from inside a range packed since (its heads inside gone)", function()
    local net = env.net
    local a = env.node(1, nil, FAST)
    assert(a:append(nil, { { type = "t", data = "first" } }))
    local b = env.node(2, { peers = { "10.0.0.1:4000" } }, FAST)
    local packed = {}
    b:on("packed", function(_, upto) packed[#packed + 1] = upto end)
    local function live(from, to)
      for i = from, to do
        assert(a:append(nil, { { type = "t", data = "e" .. i } }, { sync = false }))
        assert.is_true(net.run_until(function() return last(b, a.id) == i end, 20000))
      end
    end
    assert.is_true(net.run_until(function() return last(b, a.id) == 1 end, 20000))
    live(2, 1500)
    local c = env.node(3, { peers = { "10.0.0.2:4000" } }, FAST)
    assert.is_true(net.run_until(function() return last(c, a.id) == 1500 end, 20000))
    local cdir = c.dir
    c:close()
    live(1501, 2100)
    assert.is_true(net.run_until(function() return packed[#packed] == 2000 end, 20000))
    assert.equal(2000, b.store:head_find(a.id, 1500).rev)
    c = env.node(3, { dir = cdir, peers = { "10.0.0.2:4000" } }, FAST)
    assert.is_true(net.run_until(function() return last(c, a.id) == 2100 end, 20000))
    same_reads(assert(a.store:read(a.id, 1, 2100)), assert(c.store:read(a.id, 1, 2100)))
    assert.is_true(c.store:verify(a.id))
  end)

  it("packs a store written before once it opens, and has LevelDB compact it", function()
    local net = env.net
    local a = env.node(1, { policy = { pack_slice = 0 } }, FAST)
    single_appends(a, 12000, 500)
    local want = assert(a.store:read(a.id, 1, 12000))
    local dir = a.dir
    a:close()
    net.drain()
    env.nodes = {}
    -- opened again with packing on: it packs everything at once
    a = env.node(1, { dir = dir }, FAST)
    local packed = {}
    a:on("packed", function(_, upto, count) packed[#packed + 1] = { upto, count } end)
    assert.is_true(net.run_until(function() return #packed > 0 end, 20000))
    assert.same({ { 12000, 12000 } }, packed)
    same_reads(want, assert(a.store:read(a.id, 1, 12000)))
    a:close()
    net.drain()
    local log = log_records(dir, a.id)
    assert.equal(12, #log.segments)
    assert.same({}, log.events)
    no_head_inside(log)
    verify_dir(dir)
  end)

  it("works the streams to pack in one queue, one after the other, a slice a loop turn", function()
    local net = env.net
    local a = env.node(1, { policy = { pack_slice = 0 } }, FAST)
    local ids = { a:stream_id("s1"), a:stream_id("s2"), a:stream_id("s3") }
    for i = 1, 2500 do
      for _, id in ipairs(ids) do assert(a:append(id, { { type = "t", data = "e" .. i } }, { sync = false })) end
      if i % 100 == 0 then net.run_until(function() return false end, 5) end
    end
    assert.is_true(net.run_until(function()
      for _, id in ipairs(ids) do
        local h = a.store:head_last(id)
        if not (h and h.rev == 2500) then return false end
      end
      return true
    end, 20000))
    local dir = a.dir
    a:close()
    net.drain()
    env.nodes = {}
    a = env.node(1, { dir = dir, policy = { pack_slice = 700 } }, FAST)
    -- the store's pack calls, in order: {stream, budget}
    local calls, packed = {}, {}
    local pack = a.store.pack
    a.store.pack = function(store, id, max)
      calls[#calls + 1] = { id, max }
      return pack(store, id, max)
    end
    a:on("packed", function(id, upto) packed[id] = upto end)
    assert.is_true(net.run_until(function()
      return packed[ids[1]] == 2000 and packed[ids[2]] == 2000 and packed[ids[3]] == 2000
    end, 20000))
    -- one stream after the other, never more than the slice asked for
    local left = {}
    for i, c in ipairs(calls) do
      assert.is_true(c[2] <= 700)
      if i > 1 and calls[i - 1][1] ~= c[1] then
        assert.is_nil(left[c[1]], "stream " .. c[1] .. " taken up again")
        left[calls[i - 1][1]] = true
      end
    end
    assert.is_true(#calls >= 9, #calls .. " calls")
  end)

  it("never packs a stream while a snapshot build or a purge holds it, and packs it after", function()
    local net = env.net
    local a = env.node(1, nil, FAST)
    local packed = {}
    a:on("packed", function(_, upto) packed[#packed + 1] = upto end)
    -- what a purge job of odo.snapshots holds while it runs
    a.snapshots.busy[a.id] = { kind = "purge" }
    single_appends(a, 2500, 100)
    net.run_until(function() return false end, 3000) -- ticks go by
    assert.same({}, packed)
    a.snapshots.busy[a.id] = nil
    assert.is_true(net.run_until(function() return packed[#packed] == 2000 end, 20000))
  end)

  it("packs nothing with pack_slice 0", function()
    local net = env.net
    local a = env.node(1, { policy = { pack_slice = 0 } }, FAST)
    local packed = 0
    a:on("packed", function() packed = packed + 1 end)
    single_appends(a, 1200, 100)
    net.run_until(function() return false end, 3000) -- ticks go by
    assert.equal(0, packed)
    local adir = a.dir
    a:close()
    net.drain()
    assert.same({}, log_records(adir, a.id).segments)
  end)
end)
