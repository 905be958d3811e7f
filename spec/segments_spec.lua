-- Segments: a replica stores each received batch as one record of the
-- log (docs/STORAGE.md, "Segment"), keyed by its last revision. Every
-- read of the store must see the same events and chain hashes as the
-- source's one record per event: any range, from inside a segment, up to
-- inside one; after a compaction point inside a segment and the purge
-- that cuts it; after reopening the store; and through a relay that
-- serves its segments as they are. In memory (real TLS, real stores).
local H = require "helper"
local Store = require "odo.store"

-- batches of 1000 events, each ending at its signed head
local FAST = H.merge(H.FAST, { purgatory_ms = 600000, sync_bulk_batch_bytes = 0 })
local N = 5000

-- The log's records of a stream in a closed store, by kind.
local function log_records(dir, num)
  local prefix = "z" .. string.pack(">I8", num)
  local out = { events = {}, segments = {}, heads = {} }
  for _, rec in ipairs(H.records(dir .. "/store")) do
    local k = rec.key
    if k:sub(1, 9) == prefix then
      local rev = string.unpack(">I8", k, 10)
      if #k == 17 then
        out.events[#out.events + 1] = rev
      elseif k:byte(18) == 1 then
        out.heads[#out.heads + 1] = rev
      elseif k:byte(18) == 0 then
        out.segments[#out.segments + 1] = { last = rev, count = string.unpack(">I4", rec.value, 6) }
      end
    end
  end
  return out
end

local function stream_num(dir, id)
  for _, rec in ipairs(H.records(dir .. "/store")) do
    if rec.key == "c" .. id then return (string.unpack(">I8", rec.value, 6)) end
  end
end

describe("segments", function()
  local env = H.memory_world("g", 3)
  local net, nodes
  setup(function() env.setup() end)
  teardown(H.cleanup)
  before_each(function() env.before_each(); net, nodes = env.net, env.nodes end)
  after_each(env.after_each_checked)

  local function node(i, peers) return env.node(i, { peers = peers }, FAST) end
  local last = H.node_last
  -- n's events from..to with their hashes equal the source's
  local function same_reads(src, n, id, ranges)
    for _, r in ipairs(ranges) do
      local want = assert(src.store:read(id, r[1], r[2]))
      local got, err = n.store:read(id, r[1], r[2])
      assert(got, err)
      assert.equal(r[2] - r[1] + 1, #got)
      for i = 1, #want do
        assert.same(want[i], got[i], ("revision %d"):format(want[i].rev))
      end
    end
  end

  it("hold a replica's batches, read back like the source's events, through a relay too", function()
    local a = node(1)
    a:append(nil, H.events(N))
    local b = node(2, { "10.0.0.1:4000" })
    assert.is_true(net.run_until(function() return last(b, a.id) == N end, 20000))
    local ranges = { { 1, N }, { 1, 1 }, { 999, 1001 }, { 1000, 1000 }, { 1001, 1001 },
      { 1500, 2500 }, { 4321, 4321 }, { 4999, N } }
    same_reads(a, b, a.id, ranges)
    assert.is_true(b.store:verify(a.id))
    -- an iterator from inside a segment, a slice at a time
    local seen = 1233
    for ev in b.store:events(a.id, 1234) do
      seen = seen + 1
      assert.equal(seen, ev.rev)
      assert.equal("e" .. seen, ev.data)
    end
    assert.equal(N, seen)
    -- a third node that can only reach the replica gets it, verified
    -- with the source's heads, from the replica's segments as they are
    a:close()
    local c = node(3, { "10.0.0.2:4000" })
    assert.is_true(net.run_until(function() return last(c, a.id) == N end, 20000))
    same_reads(b, c, a.id, ranges)
    assert.is_true(c.store:verify(a.id))
    local bdir, cdir = b.dir, c.dir
    b:close()
    c:close()
    net.drain()
    for _, dir in ipairs({ bdir, cdir }) do
      local log = log_records(dir, stream_num(dir, a.id))
      assert.same({}, log.events)
      local total, lasts = 0, {}
      for _, s in ipairs(log.segments) do
        total, lasts[#lasts + 1] = total + s.count, s.last
      end
      assert.equal(N, total)
      assert.same({ 1000, 2000, 3000, 4000, 5000 }, lasts)
      assert.same(lasts, log.heads)
    end
  end)

  it("of a source end where its heads go: at multiples of 1000, never inside one, whatever the budget", function()
    for _, budget in ipairs({ 100000, 300 }) do
      -- (packing off: it would merge 2001..3000 into one segment, spec/pack_node_spec.lua)
      local a = env.node(1, { policy = { sign_budget = budget, pack_slice = 0 } }, FAST)
      a:append(nil, H.events(2500))     -- 1..1000, 1001..2000, 2001..2500
      a:append(nil, H.events(30, "f"))  -- 2501..2530, in the same loop turn
      a:append(nil, H.events(5, "g"))   -- 2531..2535, one record each
      a:append(nil, H.events(1700, "h")) -- 2536..3000, 3001..4000, 4001..4235
      assert.is_true(net.run_until(function()
        local h = a.store:head_last(a.id)
        return h and h.rev == 4235
      end, 20000))
      local dir = a.dir
      a:close()
      net.drain()
      local log = log_records(dir, stream_num(dir, a.id))
      local segs = {}
      for _, sg in ipairs(log.segments) do segs[#segs + 1] = { sg.last - sg.count + 1, sg.last } end
      assert.same({ { 1, 1000 }, { 1001, 2000 }, { 2001, 2500 }, { 2501, 2530 }, { 2536, 3000 },
        { 3001, 4000 }, { 4001, 4235 } }, segs)
      assert.same({ 2531, 2532, 2533, 2534, 2535 }, log.events)
      -- every head at the end of a record, at most 1000 revisions apart,
      -- one at each multiple of 1000
      local ends = {}
      for _, sg in ipairs(segs) do ends[sg[2]] = true end
      for _, rev in ipairs(log.events) do ends[rev] = true end
      local prev, at = 0, {}
      for _, rev in ipairs(log.heads) do
        assert.is_true(ends[rev], ("budget %d: a head inside a segment, at %d"):format(budget, rev))
        assert.is_true(rev - prev <= 1000)
        prev, at[rev] = rev, true
      end
      for _, m in ipairs({ 1000, 2000, 3000, 4000, 4235 }) do assert.is_true(at[m], "no head at " .. m) end
      nodes = {}
      env.nodes = nodes
    end
  end)

  it("keep the chain across a compaction point inside a segment, its purge and a reopen", function()
    local a = node(1)
    a:append(nil, H.events(N))
    local b = node(2, { "10.0.0.1:4000" })
    assert.is_true(net.run_until(function() return last(b, a.id) == N end, 20000))
    local want = assert(a.store:read(a.id, 2501, N))
    local h2500 = assert(a.store:read(a.id, 2500, 2500))[1].hash
    local dir = b.dir
    b:close()
    net.drain()
    local s = assert(Store.open(dir .. "/store"))
    -- the source's snapshot at 2500, inside the segment 2001..3000
    assert.equal(2501, s:snapshot_install(a.id, { rev = 2500, hash = h2500, data = "state", format = "x" }))
    while assert(s:purge(a.id, 700)) > 0 do end
    local function check(store)
      local st = store:stream(a.id)
      assert.same({ 2501, N }, { st.first, st.last })
      local got = assert(store:read(a.id, 2501, N))
      assert.same(want, got)
      assert.is_true(store:verify(a.id))
      local one = assert(store:read(a.id, 2600, 2600))
      assert.same(want[100], one[1])
      local _, err, name = store:read(a.id, 2500, 2500)
      assert.equal("ECOMPACTED", name, err)
    end
    check(s)
    s:close()
    local log = log_records(dir, stream_num(dir, a.id))
    assert.same({}, log.events)
    assert.same({ { last = 3000, count = 500 }, { last = 4000, count = 1000 }, { last = 5000, count = 1000 } },
      log.segments)
    s = assert(Store.open(dir .. "/store"))
    check(s)
    -- appends to a replicated stream still go through the sync engine only
    s:close()
  end)

  it("that were altered are reported for their whole range, never returned", function()
    local a = node(1)
    a:append(nil, H.events(3000))
    local b = node(2, { "10.0.0.1:4000" })
    assert.is_true(net.run_until(function() return last(b, a.id) == 3000 end, 20000))
    local dir = b.dir
    b:close()
    net.drain()
    local num = stream_num(dir, a.id)
    local key = "z" .. string.pack(">I8I8", num, 2000) .. "\0"
    local raw
    for _, rec in ipairs(H.records(dir .. "/store")) do
      if rec.key == key then raw = rec.value end
    end
    assert(raw, "no segment ends at 2000")
    -- the last byte of event 2000's data, checksum made valid again
    local payload = raw:sub(5, -2) .. string.char((raw:byte(-1) + 1) % 256)
    local out, ok = H.ldb("putframed", dir .. "/store", H.hex(key), H.hex(payload))
    assert(ok, out)
    local s = assert(Store.open(dir .. "/store"))
    -- before the segment, and after it: as they were
    assert.equal(1000, #assert(s:read(a.id, 1, 1000)))
    assert.equal(1000, #assert(s:read(a.id, 2001, 3000)))
    -- through it: its last event does not chain to its stored hash
    local got, err, name = s:read(a.id, 1500, 2000)
    assert.is_nil(got)
    assert.equal("ECORRUPT", name)
    assert.matches("events 1001 to 2000 of stream " .. a.id, err, 1, true)
    local ok2, verr, vname, bad = s:verify(a.id)
    assert.is_nil(ok2)
    assert.equal("ECORRUPT", vname, verr)
    assert.equal(1001, bad)
    s:close()
    -- a record put under the segment's key: no event of it is read
    local function unreadable(op, value)
      out, ok = H.ldb(op, dir .. "/store", H.hex(key), H.hex(value))
      assert(ok, out)
      s = assert(Store.open(dir .. "/store"))
      got, err, name = s:read(a.id, 1500, 1500)
      assert.is_nil(got)
      assert.equal("ECORRUPT", name, err)
      s:close()
    end
    -- a byte changed behind the checksum's back
    unreadable("put", raw:sub(1, 200) .. string.char(raw:byte(201) ~ 1) .. raw:sub(202))
    -- a count that does not fit its key
    unreadable("putframed", raw:sub(5, 5) .. string.pack(">I4", 2001) .. raw:sub(10))
  end)
end)
