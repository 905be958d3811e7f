-- Packing (store:pack): runs of single-event records become one segment
-- per range k*1000+1 .. (k+1)*1000, only once a signed head is stored at
-- the range's end and the range is settled; heads inside a packed range
-- are dropped, the one at its end kept; every event reads back the same
-- (type, data, ts, rev, hash); a damaged record stops it with nothing
-- written; a compacted stream packs only above its compaction point;
-- small budgets pack in parts, each leaving a valid store. Real LevelDB
-- stores on disk, read raw with build/tools/ldb.
local H = require "helper"
local Store = require "odo.store"
local pack_log = require "pack_log"

local ID = "node-a"

local function open(dir) return assert(Store.open(dir .. "/store", { node_id = ID, sync = false })) end

-- A store whose stream was written by n appends of one event each.
local function single_appends(n)
  local dir = H.tmpdir()
  local s = open(dir)
  for i = 1, n do assert(s:append(nil, { { type = "t" .. i % 3, data = ("e%d"):format(i), ts = 1000 + i } })) end
  return dir, s
end

local function log_records(dir) return pack_log.records(dir, 1) end

local function range(a, b)
  local t = {}
  for i = a, b do t[#t + 1] = i end
  return t
end

local same_events = pack_log.same_events

-- One call's {events packed, more left}, raising on a failure.
local function pack(s, max)
  local n, more = s:pack(ID, max)
  assert(n, more)
  return { n, more }
end

local function heads_at(s, revs, evs)
  for _, r in ipairs(revs) do assert(s:head_put(ID, r, evs[r].hash, "sig" .. r)) end
end

describe("pack", function()
  teardown(H.cleanup)

  it("packs 1..1000 and 1001..2000 only once heads are stored there, never 2001..2500", function()
    local dir, s = single_appends(2500)
    local before = assert(s:read(ID, 1, 2500))
    -- no head yet: nothing to pack
    assert.same({ 0, false }, pack(s, 5000))
    -- heads inside the ranges, at their ends, and at the stream's end
    heads_at(s, { 1, 500, 999, 1000, 1001, 1500, 2000, 2001, 2400, 2500 }, before)
    assert.same({ 1000, true }, pack(s, 5000))
    assert.same({ 1000, false }, pack(s, 5000))
    assert.same({ 0, false }, pack(s, 5000))
    same_events(before, assert(s:read(ID, 1, 2500)))
    -- an iterator from inside a packed range reads the same too
    local it, k = {}, 0
    for ev in s:events(ID, 777) do
      k = k + 1
      it[k] = ev
    end
    same_events({ table.unpack(before, 777) }, it)
    assert.is_true(s:verify(ID))
    s:close()
    local log = log_records(dir)
    assert.same({ { 1, 1000 }, { 1001, 2000 } }, log.segments)
    assert.same(range(2001, 2500), log.events)
    -- heads strictly inside a packed range are gone; its end's is kept
    assert.same({ 1000, 2000, 2001, 2400, 2500 }, log.heads)
    -- and a reopened store reads the same, and knows how far it is
    -- packed without looking at the ranges again (stored: a look at a
    -- range that is one segment reads its whole block)
    s = open(dir)
    same_events(before, assert(s:read(ID, 1, 2500)))
    assert.same({ 0, false, 2000 }, { s:pack(ID, 1) })
    assert.same({ 0, false }, pack(s, 5000))
    s:close()
  end)

  it("waits for a range end at or below the newest head, and skips ranges with no head at their end", function()
    local dir, s = single_appends(3000)
    local evs = assert(s:read(ID, 1, 3000))
    -- 1000 has no head, 2000 has: 1..1000 is never packed, 1001..2000 is
    heads_at(s, { 999, 2000 }, evs)
    assert.same({ 1000, false }, pack(s, 5000))
    -- 3000 is at the stream's end, but the newest head is 2000: wait
    assert.same({ 0, false }, pack(s, 5000))
    heads_at(s, { 3000 }, evs)
    assert.same({ 1000, false }, pack(s, 5000))
    s:close()
    local log = log_records(dir)
    assert.same({ { 1001, 2000 }, { 2001, 3000 } }, log.segments)
    assert.same(range(1, 1000), log.events)
    assert.same({ 999, 2000, 3000 }, log.heads)
  end)

  it("cuts a range into segments before 1 MiB of data, and steps over it afterwards", function()
    local dir = H.tmpdir()
    local s = open(dir)
    local big = ("x"):rep(300 * 1024)
    for i = 1, 1000 do
      assert(s:append(nil, { { type = "t", data = i % 100 == 0 and big .. i or "e" .. i } }))
    end
    local before = assert(s:read(ID, 1, 1000))
    heads_at(s, { 500, 1000 }, before)
    assert.same({ 1000, false }, pack(s, 5000))
    same_events(before, assert(s:read(ID, 1, 1000)))
    assert.is_true(s:verify(ID))
    s:close()
    local log = log_records(dir)
    -- three 300 KiB events a segment at most: cut after 300, 600, 900
    assert.same({ { 1, 399 }, { 400, 699 }, { 700, 999 } }, log.segments)
    assert.same({ 1000 }, log.events)
    assert.same({ 1000 }, log.heads)
    -- already packed as far as it goes: a new open store writes nothing
    s = open(dir)
    assert.same({ 0, false }, pack(s, 5000))
    s:close()
    assert.same(log.raw, log_records(dir).raw)
  end)

  it("merges an append's segments and single events of one range, checking the chain", function()
    local dir = H.tmpdir()
    local s = open(dir)
    assert(s:append(nil, H.events(600)))           -- one segment 1..600
    for i = 601, 700 do assert(s:append(nil, { { type = "t", data = "s" .. i } })) end
    assert(s:append(nil, H.events(300, "f")))      -- 701..1000, a segment
    local before = assert(s:read(ID, 1, 1000))
    heads_at(s, { 600, 700, 1000 }, before)
    assert.same({ 1000, false }, pack(s, 5000))
    same_events(before, assert(s:read(ID, 1, 1000)))
    s:close()
    local log = log_records(dir)
    assert.same({ { 1, 1000 } }, log.segments)
    assert.same({}, log.events)
    assert.same({ 1000 }, log.heads)
  end)

  local function corrupt(how)
    local dir, s = single_appends(2000)
    local evs = assert(s:read(ID, 1, 2000))
    heads_at(s, { 1000, 2000 }, evs)
    assert.same({ 1000, true }, pack(s, 1000))
    s:close()
    local key = "z" .. string.pack(">I8I8", 1, 1500)
    local raw
    for _, rec in ipairs(H.records(dir .. "/store")) do
      if rec.key == key then raw = rec.value end
    end
    assert(raw, "no record of event 1500")
    local out, ok
    if how == "chain" then
      -- its data altered, the checksum made valid again: only the chain tells
      out, ok = H.ldb("putframed", dir .. "/store", H.hex(key), H.hex(raw:sub(5, -2) .. "X"))
    else
      out, ok = H.ldb("put", dir .. "/store", H.hex(key), H.hex(raw:sub(1, -2) .. "X"))
    end
    assert(ok, out)
    local was = log_records(dir).raw
    s = open(dir)
    local n, err, name = s:pack(ID, 5000)
    assert.is_nil(n)
    assert.equal("ECORRUPT", name)
    assert.truthy(err:find("1500", 1, true), err)
    s:close()
    assert.same(was, log_records(dir).raw)
  end

  it("stops at a record whose chain does not hold: ECORRUPT naming it, nothing written", function()
    corrupt("chain")
  end)

  it("stops at a record that fails its checksum: ECORRUPT naming it, nothing written", function()
    corrupt("checksum")
  end)

  it("packs a compacted stream only above its compaction point, before and after the purge", function()
    for _, purge in ipairs({ false, true }) do
      local dir, s = single_appends(3000)
      local evs = assert(s:read(ID, 1, 3000))
      heads_at(s, { 500, 1000, 1700, 2000, 3000 }, evs)
      assert(s:snapshot_put(ID, 1500, "state", { format = "x" }))
      assert.equal(1501, s:compact(ID, 1500))
      if purge then while assert(s:purge(ID, 700)) > 0 do end end
      assert.same({ 500, true }, pack(s, 5000))
      assert.same({ 1000, false }, pack(s, 5000))
      same_events({ table.unpack(evs, 1501) }, assert(s:read(ID, 1501, 3000)))
      assert.is_true(s:verify(ID))
      if not purge then while assert(s:purge(ID, 700)) > 0 do end end
      same_events({ table.unpack(evs, 1501) }, assert(s:read(ID, 1501, 3000)))
      s:close()
      local log = log_records(dir)
      assert.same({ { 1501, 2000 }, { 2001, 3000 } }, log.segments)
      assert.same({}, log.events)
      assert.same({ 2000, 3000 }, log.heads)
    end
  end)

  it("in parts of a small budget leaves a valid store after every call, and ends as one call would", function()
    local dir, s = single_appends(2000)
    local evs = assert(s:read(ID, 1, 2000))
    heads_at(s, range(1, 2000), evs) -- a head at every revision (a live stream)
    local calls, total = 0, 0
    repeat
      local n, more = s:pack(ID, 150)
      assert(n, more)
      calls, total = calls + 1, total + n
      -- another open of it, as after a crash between calls
      s:close()
      s = open(dir)
      same_events(evs, assert(s:read(ID, 1, 2000)))
      assert.is_true(s:verify(ID))
      assert.equal(2000, s:head_last(ID).rev)
    until not more
    assert.is_true(calls > 10, "packed in " .. calls .. " calls")
    s:close()
    local log = log_records(dir)
    assert.same({ { 1, 1000 }, { 1001, 2000 } }, log.segments)
    assert.same({}, log.events)
    assert.same({ 1000, 2000 }, log.heads)
  end)

  it("packs beside writes in flight on the commit queue, losing and reordering nothing", function()
    local core = require "odo.core"
    local dir, s = single_appends(2000)
    local evs = assert(s:read(ID, 1, 2000))
    heads_at(s, { 500, 1000, 2000 }, evs)
    local q = core.commit_queue(s.core)
    local groups = {}
    for i = 1, 300 do groups[i] = { events = { { type = "q", data = "q" .. i } } } end
    q:submit(groups)
    q:submit({ { events = H.events(40, "r") } })
    assert.equal(2, q:pending())
    -- the writes in flight are past the settled last revision: packing
    -- neither waits for them nor touches what they write
    assert.same({ 1000, true }, pack(s, 5000))
    assert.same({ 1000, false }, pack(s, 5000))
    q:wait()
    assert.equal(2, #q:collect())
    assert.equal(2340, s:stream(ID).last)
    local all = assert(s:read(ID, 1, 2340))
    same_events(evs, { table.unpack(all, 1, 2000) })
    for i = 1, 300 do assert.equal("q" .. i, all[2000 + i].data) end
    for i = 1, 40 do assert.equal("r" .. i, all[2300 + i].data) end
    assert.is_true(s:verify(ID))
    q:close()
    s:close()
    local log = log_records(dir)
    assert.same({ { 1, 1000 }, { 1001, 2000 }, { 2301, 2340 } }, log.segments)
    assert.same(range(2001, 2300), log.events)
    assert.same({ 1000, 2000 }, log.heads)
  end)

  it("has LevelDB compact a packed span on a thread of its own, which the close waits for", function()
    local dir, s = single_appends(3000)
    local evs = assert(s:read(ID, 1, 3000))
    heads_at(s, { 1000, 2000, 3000 }, evs)
    while pack(s, 5000)[2] do end
    local started = s:compact_packed(ID, 1, 3000)
    assert.is_true(started)
    -- one at a time: a second waits while the first runs, or starts
    assert.is_boolean(s:compact_packed(ID, 1, 3000))
    same_events(evs, assert(s:read(ID, 1, 3000)))
    s:close()
    s = open(dir)
    same_events(evs, assert(s:read(ID, 1, 3000)))
    assert.is_true(s:verify(ID))
    assert.same({ nil, "ENOENT: no stream nobody", "ENOENT" }, { s:compact_packed("nobody", 1, 2) })
    assert.has_error(function() s:compact_packed(ID, 5, 2) end)
    s:close()
    assert.same({ { 1, 1000 }, { 1001, 2000 }, { 2001, 3000 } }, log_records(dir).segments)
  end)

  it("raises on wrong arguments, and packs nothing of a stream it does not hold", function()
    local _, s = single_appends(3)
    assert.has_error(function() s:pack(ID, 0) end)
    assert.has_error(function() s:pack(ID, "x") end)
    assert.has_error(function() s.core:pack(nil, 10) end)
    assert.same({ 0, false, 0 }, { s:pack("nobody", 10) })
    assert.same({ 0, false }, pack(s, 10))
    s:close()
  end)
end)
