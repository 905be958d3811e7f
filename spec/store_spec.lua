-- The event store: LevelDB on disk, revisions, chain hashes, catalogue,
-- snapshots, compaction, heads, peers, limits and damage.
local H = require "helper"
local Store = require "odo.store"

local NODE = "node-a"

local function open(dir, opts)
  opts = opts or {}
  if opts.node_id == nil then opts.node_id = NODE end
  return assert(Store.open(dir .. "/store", opts))
end

local function events(n, prefix)
  local t = {}
  for i = 1, n do t[i] = { type = "t", data = (prefix or "e") .. i } end
  return t
end

describe("store", function()
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(H.cleanup)

  describe("opening", function()
    it("creates a store bound to a node id and keeps it across reopen", function()
      local s = open(dir)
      assert.equal(NODE, s.node_id)
      local info = s:info()
      assert.equal(2, info.format)
      assert.is_true(info.created > 0)
      s:close()
      local s2 = assert(Store.open(dir .. "/store"))
      assert.equal(NODE, s2.node_id)
      assert.equal(info.created, s2:info().created)
      s2:close()
    end)

    it("refuses to open under another node id", function()
      open(dir):close()
      local s, err, name = Store.open(dir .. "/store", { node_id = "node-b" })
      assert.is_nil(s)
      assert.equal("EIDENTITY", name)
      assert.matches("belongs to node node%-a, not node%-b", err)
    end)

    it("fails clearly on a second open of a store in use", function()
      local s = open(dir)
      local s2, err, name = Store.open(dir .. "/store", { node_id = NODE })
      assert.is_nil(s2)
      assert.equal("EBUSY", name)
      assert.matches("already open", err)
      s:close()
      -- once closed, it opens again
      open(dir):close()
    end)

    it("fails a second open from another process", function()
      local s = open(dir)
      local script = ("package.path='%s/lua/?.lua;'..package.path; package.cpath='%s;'..package.cpath;"
        .. "local S=require'odo.store'; local s,e,n=S.open('%s/store'); print(n)")
        :format(H.root, os.getenv("ODO_CPATH") or (H.root .. "/build/?.so"), dir)
      local out = H.run("lua5.4 -e \"" .. script .. "\"")
      assert.matches("EBUSY", out)
      s:close()
    end)

    it("says there is no store when no node id is given to create one", function()
      local s, err, name = Store.open(dir .. "/nothing")
      assert.is_nil(s)
      assert.equal("ENOENT", name)
      assert.matches("odo run", err)
    end)

    it("refuses a store from a newer format version", function()
      open(dir):close()
      -- meta "format" := 3
      local out, ok = H.ldb("putframed", dir .. "/store", H.hex("mformat"), "00000003")
      assert(ok, out)
      local s, err, name = Store.open(dir .. "/store")
      assert.is_nil(s)
      assert.equal("EFORMAT", name)
      assert.matches("newer than this odo%-journal reads", err)
    end)

    it("refuses a LevelDB database that is not a store", function()
      local out, ok = H.ldb("put", dir .. "/other", H.hex("hello"), H.hex("world"))
      assert(ok, out)
      local s, err, name = Store.open(dir .. "/other", { node_id = NODE })
      assert.is_nil(s)
      assert.equal("EFORMAT", name)
      assert.matches("not an odo%-journal store", err)
    end)

    it("raises on misuse and after close", function()
      local s = open(dir)
      assert.has_error(function() s:append(nil, "not a table") end)
      assert.has_error(function() s:append(nil, { { type = 1 } }) end)
      assert.has_error(function() Store.open(dir .. "/x", { node_id = "a/b" }) end)
      s:close()
      s:close() -- idempotent
      assert.has_error(function() s:read(NODE) end, "attempt to use a closed store")
    end)

    it("raises on options of the wrong type, and on numbers it cannot hold", function()
      local s = open(dir)
      s:append(nil, events(1))
      assert.has_error(function() s:append(nil, events(1), "sync") end)
      assert.has_error(function() s:append(nil, events(1), { sync = "false" }) end,
        "option sync must be a boolean, got string")
      assert.has_error(function() s:append(nil, events(1), { expected = 2 ^ 64 }) end)
      assert.has_error(function() s:append(nil, events(1), { expected = 0 / 0 }) end)
      assert.has_error(function() s:read(NODE, 2 ^ 64) end)
      assert.has_error(function() Store.open(dir .. "/y", { node_id = "n", sync = 1 }) end)
      assert.equal(1, s:stream(NODE).last) -- nothing was written by any of them
      s:close()
    end)

    it("closes at the end of a to-be-closed scope", function()
      do
        local s <close> = open(dir)
        s:append(nil, { type = "t", data = "x" })
      end
      open(dir):close() -- would be EBUSY if the first were still open
    end)
  end)

  describe("appending", function()
    it("numbers revisions from 1 without gaps and returns the last", function()
      local s = open(dir)
      assert.equal(3, s:append(nil, events(3)))
      assert.equal(4, s:append(nil, { type = "t", data = "one" }))
      local got = s:read(NODE)
      assert.equal(4, #got)
      for i, ev in ipairs(got) do assert.equal(i, ev.rev) end
      assert.equal("one", got[4].data)
      s:close()
    end)

    it("keeps a given timestamp and stamps the others with the clock", function()
      local s = open(dir)
      local before = os.time() * 1000
      s:append(nil, { { type = "t", data = "a", ts = 42 }, { type = "t" } })
      local got = s:read(NODE)
      assert.equal(42, got[1].ts)
      assert.is_true(got[2].ts >= before - 1000)
      assert.equal("", got[2].data)
      s:close()
    end)

    it("writes nothing on an expected-revision conflict", function()
      local s = open(dir)
      s:append(nil, events(2))
      local r, err, name = s:append(nil, events(5), { expected = 1 })
      assert.is_nil(r)
      assert.equal("ECONFLICT", name)
      assert.matches("is at revision 2, not the expected 1", err)
      assert.equal(2, s:stream(NODE).last)
      assert.equal(2, #s:read(NODE))
      assert.equal(3, s:append(nil, events(1), { expected = 2 }))
      -- expected = 0: the stream must not exist yet
      local id = s:stream_id("fresh")
      assert.equal(1, s:append(id, events(1), { expected = 0 }))
      assert.is_nil((s:append(id, events(1), { expected = 0 })))
      s:close()
      s = open(dir)
      assert.equal(3, #s:read(NODE))
      s:close()
    end)

    it("refuses appends to a stream this node is not the source of", function()
      local s = open(dir)
      local r, err, name = s:append("node-b", events(1))
      assert.is_nil(r)
      assert.equal("ENOTSOURCE", name)
      assert.matches("not the source of stream node%-b", err)
      assert.is_nil(s:stream("node-b"))
      s:close()
    end)

    it("appends to named streams of the node", function()
      local s = open(dir)
      local id = s:stream_id("chat")
      assert.equal(NODE .. "/chat", id)
      assert.equal(2, s:append(id, events(2)))
      local st = s:stream(id)
      assert.equal(NODE, st.source)
      assert.is_true(st.own)
      s:close()
    end)

    it("rejects bad stream ids with a clear error", function()
      local s = open(dir)
      local _, _, name = s:append(NODE .. "/", events(1))
      assert.equal("EINVAL", name)
      _, _, name = s:append(NODE .. "/" .. ("x"):rep(300), events(1))
      assert.equal("EINVAL", name)
      _, _, name = s:append(NODE .. "/a\nb", events(1))
      assert.equal("EINVAL", name)
      s:close()
    end)

    it("enforces limits on type, data and batch size", function()
      local s = open(dir)
      local _, err, name = s:append(nil, { type = ("t"):rep(256), data = "x" })
      assert.equal("ETOOBIG", name)
      assert.matches("type is 256 bytes", err)
      _, err, name = s:append(nil, { type = "t", data = ("x"):rep(4 * 1024 * 1024 + 1) })
      assert.equal("ETOOBIG", name)
      assert.matches("data is 4194305 bytes", err)
      _, _, name = s:append(nil, { type = "", data = "x" })
      assert.equal("EINVAL", name)
      local many = {}
      for i = 1, 100001 do many[i] = { type = "t" } end
      _, err, name = s:append(nil, many)
      assert.equal("ETOOBIG", name)
      assert.matches("100001 events", err)
      assert.is_nil(s:stream(NODE))
      -- at the limits it works
      assert.equal(1, s:append(nil, { type = ("t"):rep(255), data = ("x"):rep(4 * 1024 * 1024) }))
      s:close()
    end)

    it("group commit writes every accepted group and skips refused ones", function()
      local s = open(dir)
      local a, b = s:stream_id("a"), s:stream_id("b")
      s:append(a, events(1))
      local res = s:append_many({
        { stream = a, events = events(2) },
        { stream = b, events = events(3), expected = 7 },
        { stream = a, events = { type = "t", data = "x" }, expected = 3 },
        { stream = "other", events = events(1) },
        { events = events(1) },
      })
      assert.equal(3, res[1])
      assert.matches("^ECONFLICT", res[2])
      assert.equal(4, res[3])
      assert.matches("^ENOTSOURCE", res[4])
      assert.equal(1, res[5])
      assert.is_nil(s:stream(b))
      assert.is_nil(s:stream("other"))
      s:close()
      s = open(dir)
      assert.equal(4, s:stream(a).last)
      assert.equal(1, s:stream(NODE).last)
      assert.equal(2, #s:streams())
      s:close()
    end)

    it("group commit raises on a malformed group before anything is staged", function()
      local s = open(dir)
      local a, b = s:stream_id("a"), s:stream_id("b")
      assert.has_error(function()
        s:append_many({ { stream = a, events = events(2) }, { stream = b, events = { { type = 1 } } } })
      end)
      assert.has_error(function() s:append_many({ { stream = a, events = events(1) }, "x" }) end)
      -- the first group of each was not staged: no stream appeared, in memory or on disk
      assert.is_nil(s:stream(a))
      assert.same({}, s:streams())
      assert.equal(1, s:append(a, events(1)))
      s:close()
    end)
  end)

  describe("chain hashes", function()
    it("follow h(n) = SHA-256(h(n-1) | encoded event n) from h(0) of the stream id", function()
      local s = open(dir)
      s:append(nil, { { type = "put", data = "hello", ts = 1000 }, { type = "x", data = "", ts = 1001 } })
      local got = s:read(NODE)
      local h0 = H.sha256("odo-journal chain v1\0" .. NODE)
      local h1 = H.sha256(h0 .. H.encode_event(1, 1000, "put", "hello"))
      local h2 = H.sha256(h1 .. H.encode_event(2, 1001, "x", ""))
      assert.equal(H.hex(h1), H.hex(got[1].hash))
      assert.equal(H.hex(h2), H.hex(got[2].hash))
      assert.equal(H.hex(h2), H.hex(s:stream(NODE).hash))
      assert.is_true(s:verify(NODE))
      s:close()
    end)

    it("verify reports the first event that no longer matches", function()
      local s = open(dir)
      s:append(nil, events(10))
      s:close()
      -- rewrite event 6 with other data but a valid checksum
      local key = "z" .. string.pack(">I8I8", 1, 6)
      local raw
      for _, r in ipairs(H.records(dir .. "/store")) do
        if r.key == key then raw = r.value end
      end
      local payload = raw:sub(5):gsub("e6$", "X6")
      local out, ok = H.ldb("putframed", dir .. "/store", H.hex(key), H.hex(payload))
      assert(ok, out)
      s = open(dir)
      local got = s:read(NODE, 6, 6)
      assert.equal("X6", got[1].data) -- the checksum is valid, the chain is not
      local v, err, name, bad = s:verify(NODE)
      assert.is_nil(v)
      assert.equal("ECORRUPT", name)
      assert.equal(6, bad)
      assert.matches("event 6 does not match its chain hash", err)
      s:close()
    end)
  end)

  describe("replica appends", function()
    local function source_events(n)
      local src = assert(Store.open(dir .. "/src", { node_id = "node-s" }))
      src:append(nil, events(n, "s"))
      local evs = src:read("node-s")
      src:close()
      return evs
    end

    it("accept events that continue the chain", function()
      local evs = source_events(5)
      local s = open(dir)
      assert.equal(2, s:append_replica("node-s", { evs[1], evs[2] }))
      assert.equal(5, s:append_replica("node-s", { evs[3], evs[4], evs[5] }))
      local st = s:stream("node-s")
      assert.is_false(st.own)
      assert.equal("node-s", st.source)
      assert.equal(H.hex(evs[5].hash), H.hex(st.hash))
      assert.is_true(s:verify("node-s"))
      s:close()
    end)

    it("refuse a gap, a repeat and a wrong chain hash, writing nothing", function()
      local evs = source_events(5)
      local s = open(dir)
      s:append_replica("node-s", { evs[1], evs[2] })
      local r, err, name = s:append_replica("node-s", { evs[4] })
      assert.is_nil(r)
      assert.equal("EGAP", name)
      assert.matches("expected 3", err)
      local _
      r, _, name = s:append_replica("node-s", { evs[2] })
      assert.is_nil(r)
      assert.equal("EGAP", name)
      local function forge(ev)
        local f = {}
        for k, v in pairs(ev) do f[k] = v end
        f.data = "forged"
        return f
      end
      r, err, name = s:append_replica("node-s", { forge(evs[3]), evs[4] })
      assert.is_nil(r)
      assert.equal("ECHAIN", name)
      assert.matches("event 3 of stream node%-s does not match", err)
      -- a good event followed by a forged one: the whole batch is refused
      r, err, name = s:append_replica("node-s", { evs[3], forge(evs[4]) })
      assert.is_nil(r)
      assert.equal("ECHAIN", name)
      assert.matches("event 4", err)
      assert.equal(2, s:stream("node-s").last)
      assert.equal(2, #s:read("node-s"))
      s:close()
    end)

    it("never accepts events of a stream this node is the source of", function()
      local s = open(dir)
      s:append(nil, events(1))
      local evs = s:read(NODE)
      evs[1].rev = 2
      local r, _, name = s:append_replica(NODE, evs)
      assert.is_nil(r)
      assert.equal("ESOURCE", name)
      s:close()
    end)

    it("refuses a first event that is not revision 1", function()
      local evs = source_events(3)
      local s = open(dir)
      local _, _, name = s:append_replica("node-s", { evs[2] })
      assert.equal("EGAP", name)
      assert.is_nil(s:stream("node-s"))
      s:close()
    end)
  end)

  describe("reading", function()
    it("reads ranges with from, to and limit", function()
      local s = open(dir)
      s:append(nil, events(20))
      local got = s:read(NODE, 5, 9)
      assert.equal(5, #got)
      assert.equal(5, got[1].rev)
      assert.equal(9, got[5].rev)
      got = s:read(NODE, 15, nil, 3)
      assert.same({ 15, 16, 17 }, { got[1].rev, got[2].rev, got[3].rev })
      assert.equal(0, #s:read(NODE, 21))
      assert.equal(0, #s:read("unknown"))
      s:close()
    end)

    it("iterates over a large range a slice at a time", function()
      local s = open(dir)
      for _ = 1, 10 do s:append(nil, events(1000)) end
      local n, last = 0, 0
      for ev in s:events(NODE, 1) do
        n = n + 1
        assert.equal(last + 1, ev.rev)
        last = ev.rev
      end
      assert.equal(10000, n)
      local sizes = {}
      for batch in s:batches(NODE, 101, 2600, 1000) do sizes[#sizes + 1] = #batch end
      assert.same({ 1000, 1000, 500 }, sizes)
      -- an iterator sees the range as it was when it started
      local it = s.core:iter(NODE, 9990)
      s:append(nil, events(5))
      local b = it:next(100)
      assert.equal(11, #b)
      assert.is_nil(it:next())
      s:close()
      assert.has_error(function() it:next() end)
    end)

    it("an iterator keeps the store open after its wrapper is collected", function()
      local next_batch = (function()
        local s = open(dir)
        s:append(nil, events(10))
        return s:batches(NODE, 1, nil, 4)
      end)()
      collectgarbage()
      collectgarbage()
      assert.equal(4, #next_batch())
      assert.equal(4, #next_batch())
      assert.equal(2, #next_batch())
      assert.is_nil(next_batch())
    end)

    it("leaving a loop early releases its iterator at once (Lua 5.4 closing value)", function()
      local s = open(dir)
      s:append(nil, events(10))
      for _, loop in ipairs({ s.batches, s.events }) do
        local f, st, ctl, it = loop(s, NODE, 1)
        for _ in f, st, ctl, it do -- luacheck: ignore 512 (the loop is left on purpose at once)
          break
        end
        assert.has_error(function() it:next(2) end, "attempt to use a closed iterator")
      end
      s:close()
    end)

    it("closing the store closes its iterators", function()
      local s = open(dir)
      s:append(nil, events(10))
      local it = s.core:iter(NODE, 1)
      assert.equal(2, #it:next(2))
      s:close()
      assert.has_error(function() it:next() end, "attempt to use a closed iterator")
    end)
  end)

  describe("catalogue", function()
    it("is identical after reopening", function()
      local s = open(dir)
      s:append(nil, events(3))
      s:append(s:stream_id("b"), events(7))
      local src = assert(Store.open(dir .. "/src", { node_id = "node-s" }))
      src:append(nil, events(4))
      local evs = src:read("node-s")
      src:close()
      s:append_replica("node-s", evs)
      s:snapshot_put(NODE, 2, "snap")
      local before = s:streams()
      s:close()
      s = open(dir)
      assert.same(before, s:streams())
      assert.equal(3, #before)
      assert.same({ NODE, NODE .. "/b", "node-s" }, { before[1].id, before[2].id, before[3].id })
      assert.equal(2, before[1].snapshot)
      assert.is_false(before[3].own)
      -- stream_state: what stream() says of last, snapshot and own
      for _, st in ipairs(before) do
        assert.same({ st.last, st.snapshot, st.own }, { s:stream_state(st.id) })
      end
      assert.same({ 3, 2, true }, { s:stream_state() })
      assert.same({ 4, 0, false }, { s:stream_state("node-s") })
      assert.equal(0, select("#", s:stream_state("node-none")))
      s:close()
      assert.has_error(function() s:stream_state() end)
    end)

    it("reports which streams changed", function()
      local s = open(dir)
      s:append(nil, events(1))
      s:append(s:stream_id("x"), events(1))
      s:append(nil, events(1))
      assert.same({ NODE, NODE .. "/x" }, s:changes())
      assert.same({}, s:changes())
      s:close()
    end)
  end)

  describe("snapshots and compaction", function()
    it("stores a snapshot with h(rev) and returns the latest", function()
      local s = open(dir)
      s:append(nil, events(10))
      assert.is_true(s:snapshot_put(NODE, 4, "state@4", { format = "test" }))
      assert.is_true(s:snapshot_put(NODE, 7, "state@7", { format = "test" }))
      local snap = s:snapshot_get(NODE)
      assert.equal(7, snap.rev)
      assert.equal("state@7", snap.data)
      assert.equal("source", snap.origin)
      assert.equal("test", snap.format)
      assert.equal(H.hex(s:read(NODE, 7, 7)[1].hash), H.hex(snap.hash))
      local _, _, name = s:snapshot_put(NODE, 5, "older")
      assert.equal("ESTALE", name)
      _, _, name = s:snapshot_put(NODE, 11, "future")
      assert.equal("ERANGE", name)
      s:close()
    end)

    it("compacts in one write, then purges in slices, and reads say 'compacted'", function()
      local s = open(dir)
      s:append(nil, events(100))
      local _, _, name = s:compact(NODE, 10)
      assert.equal("ERANGE", name) -- no snapshot yet
      s:snapshot_put(NODE, 60, "state@60")
      assert.equal(51, s:compact(NODE, 50))
      assert.equal(61, s:compact(NODE))
      local st = s:stream(NODE)
      assert.equal(61, st.first)
      assert.equal(100, st.last)
      local r, err
      r, err, name = s:read(NODE, 30)
      assert.is_nil(r)
      assert.equal("ECOMPACTED", name)
      assert.matches("events are held from 61, and the snapshot at 60", err)
      assert.equal(40, #s:read(NODE))
      assert.equal(35, s:purge(NODE, 25))
      assert.equal(0, s:purge(NODE, 1000))
      assert.is_true(s:verify(NODE))
      -- appends after compaction continue the chain
      assert.equal(101, s:append(nil, events(1)))
      assert.is_true(s:verify(NODE))
      s:close()
      -- the deleted events are gone from disk: the append of 100 is one
      -- segment, rewritten by the purge without events 1..60; event 101
      -- (an append of one) is a record of its own
      local singles, segments = {}, {}
      for _, rec in ipairs(H.records(dir .. "/store")) do
        local k = rec.key
        if k:sub(1, 1) == "z" and #k == 17 then singles[#singles + 1] = string.unpack(">I8", k, 10) end
        if k:sub(1, 1) == "z" and #k == 18 and k:byte(18) == 0 then
          segments[#segments + 1] = { string.unpack(">I8", k, 10), (string.unpack(">I4", rec.value, 6)) }
        end
      end
      assert.same({ 101 }, singles)
      assert.same({ { 100, 40 } }, segments)
    end)

    it("a replica installs a source snapshot and compacts in one write", function()
      local src = assert(Store.open(dir .. "/src", { node_id = "node-s" }))
      src:append(nil, events(30))
      src:snapshot_put("node-s", 20, "state@20", { format = "test", sig = "signature" })
      local snap = src:snapshot_get("node-s")
      local tail = src:read("node-s", 21)
      src:close()
      local s = open(dir)
      assert.equal(21, s:snapshot_install("node-s", snap))
      local st = s:stream("node-s")
      assert.same({ 21, 20, 20 }, { st.first, st.last, st.snapshot })
      assert.equal(30, s:append_replica("node-s", tail))
      assert.is_true(s:verify("node-s"))
      local got = s:snapshot_get("node-s")
      assert.equal("signature", got.sig)
      assert.equal("source", got.origin)
      local _, _, name = s:read("node-s", 5)
      assert.equal("ECOMPACTED", name)
      -- a snapshot whose hash does not match the events held is refused
      local bad = { rev = 25, hash = ("\0"):rep(32), data = "x" }
      _, _, name = s:snapshot_install("node-s", bad)
      assert.equal("ECHAIN", name)
      -- nor one past the revision limit (2^53): it would wrap the catalogue
      _, _, name = s:snapshot_install("node-x", { rev = 2 ^ 53 + 2, hash = ("\0"):rep(32), data = "x" })
      assert.equal("ETOOBIG", name)
      assert.is_nil(s:stream("node-x"))
      s:close()
    end)

    it("a replica compacts only against the source's snapshot", function()
      local src = assert(Store.open(dir .. "/src", { node_id = "node-s" }))
      src:append(nil, events(30))
      local evs = src:read("node-s")
      src:close()
      local s = open(dir)
      s:append_replica("node-s", evs)
      assert.is_true(s:snapshot_put("node-s", 25, "mine"))
      assert.equal("local", s:snapshot_get("node-s").origin)
      local _, _, name = s:compact("node-s", 20)
      assert.equal("ERANGE", name)
      -- a replica cannot record an (unsigned) source snapshot of its own making
      assert.has_error(function() s:snapshot_put("node-s", 25, "forged", { origin = "source" }) end,
        "stream node-s is a replica: its source snapshots are installed with snapshot_install")
      _, _, name = s:compact("node-s", 20)
      assert.equal("ERANGE", name)
      s:close()
    end)
  end)

  describe("signed heads", function()
    it("are stored by revision and found at or after one", function()
      local s = open(dir)
      s:append(nil, events(3000))
      for _, rev in ipairs({ 1000, 2000, 3000 }) do
        local h = s:read(NODE, rev, rev)[1].hash
        assert.is_true(s:head_put(NODE, rev, h, "sig" .. rev))
      end
      assert.equal(1000, s:head_find(NODE, 1).rev)
      assert.equal(2000, s:head_find(NODE, 1001).rev)
      assert.equal("sig2000", s:head_find(NODE, 2000).sig)
      assert.is_nil(s:head_find(NODE, 3001))
      assert.equal(3000, s:head_last(NODE).rev)
      local _, _, name = s:head_put(NODE, 5, ("\1"):rep(32), "x")
      assert.equal("ECHAIN", name)
      s:close()
    end)
  end)

  describe("peer history", function()
    it("puts, lists and deletes peers", function()
      local s = open(dir)
      s:peer_put({ id = "p2", host = "127.0.0.1", port = 4001, last_seen = 5, reason = "ok" })
      s:peer_put({ id = "p1", host = "::1", port = 4000 })
      local peers = s:peers()
      assert.equal(2, #peers)
      assert.same({ id = "p2", host = "127.0.0.1", port = 4001, last_seen = 5, reason = "ok" }, peers[2])
      assert.equal("p1", peers[1].id)
      s:close()
      s = open(dir)
      assert.equal(2, #s:peers())
      s:peer_delete("p1")
      assert.equal(1, #s:peers())
      assert.has_error(function() s:peer_put({ id = "x", host = "h", port = 0 }) end)
      s:close()
    end)
  end)

  describe("point lookups", function()
    -- the store's bloom filter leaves out event keys ('z': read by
    -- iterators only); every other key is found, and an absent one is not
    it("finds every key and no absent one once the memtables are tables", function()
      local s = open(dir)
      for _ = 1, 30 do assert(s:append(nil, events(1000))) end
      for i = 1, 600 do assert(s:key_put(("src%04d"):format(i), "der" .. i)) end
      s:close()
      s = open(dir) -- the log goes into a table on open
      for i = 1, 600 do assert.equal("der" .. i, s:key_get(("src%04d"):format(i))) end
      for i = 601, 1800 do assert.is_nil(s:key_get(("src%04d"):format(i))) end
      assert.equal(30000, s:stream().last)
      assert.equal("e17", s:read(nil, 17017, 17017)[1].data)
      assert.equal(NODE, s.node_id)
      s:close()
      -- the tables carry this filter, by its name
      local named = 0
      for f in io.popen("ls " .. dir .. "/store"):lines() do
        if f:match("%.ldb$") then
          local h = assert(io.open(dir .. "/store/" .. f, "rb"))
          if h:read("a"):find("filter.odo.bloom-except-events.v1", 1, true) then named = named + 1 end
          h:close()
        end
      end
      assert.is_true(named >= 1, "no table names the filter")
    end)
  end)

  describe("damage", function()
    it("reports a value with a bad checksum as ECORRUPT, never as data", function()
      local s = open(dir)
      s:append(nil, events(5))
      s:close()
      local key = "z" .. string.pack(">I8I8", 1, 3)
      local out, ok = H.ldb("put", dir .. "/store", H.hex(key), "deadbeef" .. H.hex(("z"):rep(50)))
      assert(ok, out)
      s = open(dir)
      local r, err, name = s:read(NODE)
      assert.is_nil(r)
      assert.equal("ECORRUPT", name)
      assert.matches("event 3 of stream node%-a is damaged", err)
      local _, _, vname, bad = s:verify(NODE)
      assert.equal("ECORRUPT", vname)
      assert.equal(3, bad)
      s:close()
    end)

    it("refuses to open when a stream's last event is damaged, saying which", function()
      local s = open(dir)
      s:append(nil, events(5))
      s:close()
      local key = "z" .. string.pack(">I8I8", 1, 5)
      H.ldb("put", dir .. "/store", H.hex(key), "00000000" .. H.hex(("z"):rep(50)))
      local s2, err, name = Store.open(dir .. "/store")
      assert.is_nil(s2)
      assert.equal("ECORRUPT", name)
      assert.matches("the last event %(5%) of stream node%-a is damaged", err)
    end)

    it("reports a missing event as ECORRUPT", function()
      local s = open(dir)
      s:append(nil, events(5))
      s:close()
      H.ldb("del", dir .. "/store", H.hex("z" .. string.pack(">I8I8", 1, 2)))
      s = open(dir)
      local _, err, name = s:read(NODE)
      assert.equal("ECORRUPT", name)
      assert.matches("event 2 of stream node%-a is missing", err)
      s:close()
    end)

    it("detects flipped bytes in LevelDB's own files", function()
      local s = open(dir)
      for _ = 1, 20 do s:append(nil, events(500, ("p"):rep(80))) end
      s:close()
      -- reopening moves the log into a table file
      open(dir):close()
      local out = H.run("ls " .. dir .. "/store/*.ldb")
      local file = out:match("(%S+%.ldb)")
      assert.is_truthy(file, out)
      local fh = assert(io.open(file, "r+b"))
      local size = fh:seek("end")
      for off = 1000, size // 2, 4096 do
        fh:seek("set", off)
        fh:write("\255\0\255\0")
      end
      fh:close()
      local s2, err, name = Store.open(dir .. "/store")
      if s2 then
        local r
        r, err, name = s2:read(NODE)
        assert.is_nil(r)
        s2:close()
      end
      assert.equal("ECORRUPT", name, err)
    end)

    it("refuses to open when the table block holding the last events is damaged, never shortening it", function()
      local s = open(dir)
      s:append(nil, events(400, ("r"):rep(100)))
      s:close()
      open(dir):close() -- the log moves into a table file
      local file = H.run("ls " .. dir .. "/store/*.ldb"):match("(%S+%.ldb)")
      local fh = assert(io.open(file, "r+b"))
      -- the last data block sits just before the table's index and footer
      fh:seek("set", fh:seek("end") - 1500)
      fh:write("\255\255\255\255")
      fh:close()
      local s2, err, name = Store.open(dir .. "/store")
      if s2 then
        -- had it opened, the stream would have looked shorter and the
        -- next append would have rewritten revisions already written
        local last = s2:stream(NODE).last
        s2:close()
        error("opened with last = " .. tostring(last))
      end
      assert.equal("ECORRUPT", name)
      assert.matches("checksum mismatch", err)
    end)

    it("detects a damaged write-ahead log at open", function()
      local s = open(dir)
      for _ = 1, 5 do s:append(nil, events(200, ("q"):rep(80))) end
      s:close()
      local out = H.run("ls " .. dir .. "/store/*.log")
      local file = out:match("(%S+%.log)")
      local fh = assert(io.open(file, "r+b"))
      fh:seek("set", 5000)
      fh:write("\1\2\3\4\5\6\7\8")
      fh:close()
      local s2, err, name = Store.open(dir .. "/store")
      assert.is_nil(s2)
      assert.equal("ECORRUPT", name)
      assert.matches("Corruption", err)
    end)
  end)

  describe("crashes", function()
    it("survives a writer killed with SIGKILL 10 times at random moments", function()
      local script = dir .. "/writer.lua"
      local fh = assert(io.open(script, "w"))
      fh:write(([[
package.path = %q .. "/lua/?.lua;" .. package.path
package.cpath = %q .. ";" .. package.cpath
local Store = require "odo.store"
local s = assert(Store.open(%q, { node_id = "node-a" }))
local a, b = s:stream_id("a"), s:stream_id("b")
local i = 0
while true do
  i = i + 1
  local n = i %% 37 + 1
  local evs = {}
  for k = 1, n do evs[k] = { type = "t", data = ("x"):rep(k * 10) } end
  if i %% 3 == 0 then
    s:append_many({ { stream = a, events = evs }, { stream = b, events = evs } })
  else
    s:append(nil, evs, { sync = (i %% 2 == 0) })
  end
end
]]):format(H.root, os.getenv("ODO_CPATH") or (H.root .. "/build/?.so"), dir .. "/store"))
      fh:close()
      math.randomseed(os.time())
      local last = 0
      for round = 1, 10 do
        local pid = H.run("lua5.4 " .. script .. " >/dev/null 2>&1 & echo $!"):match("%d+")
        H.run(("sleep %.3f; kill -9 %s; while kill -0 %s 2>/dev/null; do sleep 0.01; done")
          :format(0.15 + math.random() * 0.35, pid, pid))
        local s, err = Store.open(dir .. "/store")
        assert(s, err)
        local streams = s:streams()
        for _, st in ipairs(streams) do
          assert.is_true(s:verify(st.id))
          local n = 0
          for ev in s:events(st.id) do
            n = n + 1
            assert.equal(n, ev.rev)
          end
          assert.equal(st.last, n)
        end
        local a, b = s:stream(s:stream_id("a")), s:stream(s:stream_id("b"))
        if a or b then
          -- group commits are atomic: both streams or neither
          assert.equal(a.last, b.last)
        end
        local own = s:stream(NODE)
        assert.is_true(own ~= nil and own.last >= last, "round " .. round)
        last = own.last
        s:close()
      end
      assert.is_true(last > 0)
    end)
  end)
end)
