-- The local journal: subscriptions (catch-up then live, batches, no gap, no
-- duplicate), coroutine reading, handler errors, group commit, on luv's
-- loop and on the in-memory adapter.
local H = require "helper"
local odo = require "odo"
local memory = require "odo.adapter.memory"
local luv_adapter = require "odo.adapter.luv"

-- Checks that `got` holds revisions 1..n of one stream, in order, once.
local function assert_sequence(got, n)
  assert.equal(n, #got, "delivered " .. #got .. " events, expected " .. n)
  for i = 1, n do
    if got[i] ~= i then
      error(("position %d holds revision %s"):format(i, tostring(got[i])), 2)
    end
  end
end

describe("journal", function()
  local nodes
  local function node(opts)
    local n = H.node(opts)
    nodes[#nodes + 1] = n
    return n
  end

  before_each(function() nodes = {} end)
  after_each(function()
    H.close_checked(nodes)
    luv_adapter.shutdown()
    assert.same({}, H.active_handles())
    H.cleanup()
  end)

  describe("subscriptions on luv", function()
    it("deliver the catch-up in batches, then live appends", function()
      local n = node()
      n:append(nil, H.events(2500))
      local revs, sizes = {}, {}
      n:subscribe(n.id, 1, function(batch)
        assert.equal(n.id, batch.stream)
        sizes[#sizes + 1] = #batch
        for _, ev in ipairs(batch) do revs[#revs + 1] = ev.rev end
      end)
      assert.is_true(H.luv_until(function() return #revs == 2500 end))
      assert.same({ 1000, 1000, 500 }, sizes)
      n:append(nil, H.events(3, "live"))
      assert.is_true(H.luv_until(function() return #revs == 2503 end))
      assert_sequence(revs, 2503)
      assert.equal(4, #sizes) -- the three live events came as one batch
    end)

    it("have no gap and no duplicate when appends race the catch-up", function()
      local n = node()
      n:append(nil, H.events(20000))
      local revs = {}
      local appended_in_handler = 0
      -- a timer appends while the catch-up runs
      local timer_appends = 0
      local ticker = n.adapter.every(1, function()
        if timer_appends < 50 then
          n:append(nil, H.events(7, "timer"))
          timer_appends = timer_appends + 1
        end
      end)
      n:subscribe(nil, 1, function(batch)
        for _, ev in ipairs(batch) do revs[#revs + 1] = ev.rev end
        -- the handler appends to the stream it is reading
        if appended_in_handler < 30 then
          appended_in_handler = appended_in_handler + 1
          n:append(nil, H.events(3, "handler"))
        end
      end)
      local total = function() return n.store:stream(n.id).last end
      assert.is_true(H.luv_until(function()
        return timer_appends == 50 and appended_in_handler == 30 and #revs == total()
      end, 30000))
      ticker.stop()
      assert.equal(20000 + 50 * 7 + 30 * 3, total())
      assert_sequence(revs, total())
    end)

    it("deliver replica appends to subscribers too, in order", function()
      local src = node({ node_id = "node-s" })
      src:append(nil, H.events(3000))
      local evs = src.store:read("node-s")
      local n = node()
      local revs = {}
      n:subscribe("node-s", 1, function(batch)
        for _, ev in ipairs(batch) do revs[#revs + 1] = ev.rev end
      end)
      local i = 1
      local pump = n.adapter.every(1, function()
        if i <= #evs then
          local chunk = {}
          for k = i, math.min(i + 250, #evs) do chunk[#chunk + 1] = evs[k] end
          assert(n.store:append_replica("node-s", chunk))
          n:notify_changes()
          i = i + #chunk
        end
      end)
      assert.is_true(H.luv_until(function() return #revs == 3000 end))
      pump.stop()
      assert_sequence(revs, 3000)
    end)

    it("contain a handler's error and keep delivering to everyone", function()
      local errors = {}
      local n = node({ on_error = function(e) errors[#errors + 1] = e end })
      n:append(nil, H.events(10))
      local good, bad_calls = {}, 0
      n:subscribe(nil, 1, function()
        bad_calls = bad_calls + 1
        error("boom " .. bad_calls)
      end)
      n:subscribe(nil, 1, function(batch)
        for _, ev in ipairs(batch) do good[#good + 1] = ev.rev end
      end)
      assert.is_true(H.luv_until(function() return #good == 10 and bad_calls == 1 end))
      n:append(nil, H.events(5))
      assert.is_true(H.luv_until(function() return #good == 15 and bad_calls == 2 end))
      assert.equal(2, #errors)
      assert.matches("boom 1", errors[1])
      assert.matches("stack traceback", errors[1])
    end)

    it("stop at once when unsubscribed inside the handler", function()
      local n = node()
      n:append(nil, H.events(5000))
      local calls = 0
      local other = 0
      n:subscribe(nil, 1, function(_, sub)
        calls = calls + 1
        sub:close()
      end)
      n:subscribe(nil, 1, function(batch) other = other + #batch end)
      n:append(nil, H.events(10))
      assert.is_true(H.luv_until(function() return other == 5010 end))
      assert.equal(1, calls)
    end)

    it("stop when the node is closed inside a handler", function()
      local n = node()
      n:append(nil, H.events(5000))
      local calls = 0
      n:subscribe(nil, 1, function()
        calls = calls + 1
        n:close()
      end)
      assert.is_true(H.luv_until(function() return n.closed end))
      H.luv_until(function() return false end, 50)
      assert.equal(1, calls)
    end)

    it("signal caught up when switching to live, and again after falling behind", function()
      local n = node()
      n:append(nil, H.events(2500))
      local log = {}
      local sub = n:subscribe(nil, 1, function(batch) log[#log + 1] = #batch end, {
        on_caught_up = function() log[#log + 1] = "live" end,
      })
      assert.is_true(H.luv_until(function() return log[#log] == "live" end))
      assert.same({ 1000, 1000, 500, "live" }, log)
      assert.is_true(sub:caught_up())
      -- a few live events: still live, no new signal
      n:append(nil, H.events(10))
      assert.is_true(H.luv_until(function() return log[#log] == 10 end))
      H.luv_until(function() return false end, 20)
      assert.equal(10, log[#log])
      -- more than a slice at once: behind, then caught up again
      n:append(nil, H.events(1500))
      assert.is_true(H.luv_until(function() return log[#log] == "live" end))
      assert.same({ 1000, 1000, 500, "live", 10, 1000, 500, "live" }, log)
    end)

    it("start at the end with from = 'live'", function()
      local n = node()
      n:append(nil, H.events(100))
      local revs = {}
      n:subscribe(n.id, "live", function(batch)
        for _, ev in ipairs(batch) do revs[#revs + 1] = ev.rev end
      end)
      n:append(nil, H.events(2))
      assert.is_true(H.luv_until(function() return #revs == 2 end))
      assert.same({ 101, 102 }, revs)
    end)

    it("give a late subscriber the snapshot first, then the events after it", function()
      local n = node({ policy = { reducer = "kv" } })
      for i = 1, 100 do n:append(nil, odo.kv.put("k" .. (i % 7), "v" .. i)) end
      local done
      n:snapshot(nil, function(rev) done = rev end)
      assert.is_true(H.luv_until(function() return done end))
      assert.equal(100, done)
      local compacted
      n:compact(nil, nil, function(first) compacted = first end)
      assert.is_true(H.luv_until(function() return compacted end))
      assert.equal(101, compacted)
      n:append(nil, H.events(20))
      local got = {}
      n:subscribe(n.id, 1, function(batch) got[#got + 1] = batch end)
      assert.is_true(H.luv_until(function() return #got == 2 end))
      assert.equal(0, #got[1])
      assert.equal(100, got[1].snapshot.rev)
      assert.equal("kv", got[1].snapshot.format)
      local state = odo.kv.decode(got[1].snapshot.data)
      assert.equal("v98", state.k0)
      assert.equal("v100", state.k2)
      assert.equal(20, #got[2])
      assert.equal(101, got[2][1].rev)
    end)

    it("keeps a 1 ms repeating timer firing during a 200,000-event catch-up", function()
      local n = node({ sync = false })
      local batch = H.events(1000, ("x"):rep(90))
      for _ = 1, 200 do n:append(nil, batch) end
      local trace, delivered = {}, 0
      local timer = n.adapter.every(1, function() trace[#trace + 1] = "T" end)
      n:subscribe(nil, 1, function(b)
        delivered = delivered + #b
        trace[#trace + 1] = "B"
      end)
      assert.is_true(H.luv_until(function() return delivered == 200000 end, 60000))
      timer.stop()
      -- between the first and the last batch, the timer kept firing
      local s = table.concat(trace)
      local middle = s:match("^T*B(.*)B")
      local fires = select(2, middle:gsub("T", ""))
      assert.is_true(fires >= 10, "the timer fired " .. fires .. " times during the catch-up")
      -- and no long run of batches kept it out: never all 200 in one go
      assert.is_nil(s:find(("B"):rep(200)))
    end)
  end)

  describe("coroutines", function()
    it("read a subscription as an iterator of batches that yields to the loop", function()
      local n = node()
      n:append(nil, H.events(1500))
      local sub = n:subscribe(nil, 1, nil)
      local revs, finished = {}, false
      n:spawn(function()
        for batch in sub:batches() do
          for _, ev in ipairs(batch) do revs[#revs + 1] = ev.rev end
          if #revs == 1510 then sub:close() end
        end
        finished = true
      end)
      -- the coroutine read what was there and now waits for more
      assert.is_true(H.luv_until(function() return #revs == 1500 end))
      assert.is_false(finished)
      n.adapter.timer(5, function() n:append(nil, H.events(10)) end)
      assert.is_true(H.luv_until(function() return finished end))
      assert_sequence(revs, 1510)
    end)

    it("append_wait yields until the write is durable", function()
      local n = node()
      local res = {}
      n:spawn(function()
        res[1] = n:append_wait(nil, H.events(2))
        res[2] = n:append_wait(nil, H.events(3))
        local r, err, name = n:append_wait(nil, H.events(1), { expected = 1 })
        res[3] = { r, err, name }
      end)
      assert.is_true(H.luv_until(function() return res[3] end))
      assert.equal(2, res[1])
      assert.equal(5, res[2])
      assert.is_nil(res[3][1])
      assert.equal("ECONFLICT", res[3][3])
    end)

    it("an error inside a spawned coroutine goes to the error handler", function()
      local errors = {}
      local n = node({ on_error = function(e) errors[#errors + 1] = e end })
      n:spawn(function() error("inside") end)
      assert.equal(1, #errors)
      assert.matches("inside", errors[1])
    end)

    it("batches() outside a coroutine is a clear error", function()
      local n = node()
      local sub = n:subscribe(nil, 1, nil)
      assert.has_error(function() sub:batches()() end,
        "batches() must run inside a coroutine (see node:spawn)")
    end)
  end)

  describe("group commit", function()
    it("writes the appends of one loop turn with one write, in order", function()
      local n = node()
      local writes = 0
      -- a durable node queues each group commit as one write on the
      -- core's commit queue
      local orig = n._submit_commits
      n._submit_commits = function(...)
        writes = writes + 1
        return orig(...)
      end
      local results = {}
      local a = n:stream_id("a")
      for i = 1, 5 do
        n:append_async(a, H.events(i), nil, function(last) results[i] = last end)
      end
      n:append_async(a, H.events(1), { expected = 3 }, function(r, err, name)
        results[6] = { r, err, name }
      end)
      assert.is_true(H.luv_until(function() return results[6] end))
      assert.equal(1, writes)
      assert.same({ 1, 3, 6, 10, 15 }, { results[1], results[2], results[3], results[4], results[5] })
      assert.is_nil(results[6][1])
      assert.equal("ECONFLICT", results[6][3])
      assert.equal(15, n.store:stream(a).last)
    end)

    it("writes pending group commits when the node closes", function()
      local dir = H.tmpdir()
      local n = H.node({ dir = dir })
      local got
      n:append_async(nil, H.events(4), nil, function(last) got = last end)
      n:close()
      assert.equal(4, got)
      local n2 = node({ dir = dir })
      assert.equal(4, n2.store:stream(n2.id).last)
    end)
  end)

  describe("snapshots", function()
    it("the kv reducer keeps the latest value per key", function()
      local n = node()
      n:append(nil, { odo.kv.put("a", "1"), odo.kv.put("b", "2"), odo.kv.put("a", "3"),
        odo.kv.del("b"), { type = "note", data = "ignored" }, odo.kv.put("c", "") })
      local rev
      n:snapshot(nil, function(r) rev = r end, "kv")
      assert.is_true(H.luv_until(function() return rev end))
      local snap = n.store:snapshot_get(n.id)
      assert.equal(6, snap.rev)
      assert.same({ a = "3", c = "" }, odo.kv.decode(snap.data))
      -- incremental: the next build starts from this snapshot
      n:append(nil, { odo.kv.put("d", "4"), odo.kv.del("a") })
      rev = nil
      n:snapshot(nil, function(r) rev = r end, "kv")
      assert.is_true(H.luv_until(function() return rev end))
      assert.same({ c = "", d = "4" }, odo.kv.decode(n.store:snapshot_get(n.id).data))
    end)

    it("every snapshot callback is called once: a second ask shares the running build, a bad one hears why", function()
      local n = node()
      n:append(nil, H.events(5000))
      local got = {}
      assert.is_true(n:snapshot(nil, function(r, err) got[#got + 1] = { "first", r, err } end, "last"))
      assert.is_false(n:snapshot(nil, function(r, err) got[#got + 1] = { "second", r, err } end, "last"))
      assert.is_true(H.luv_until(function() return #got == 2 end))
      assert.same({ { "first", 5000 }, { "second", 5000 } }, got)
      local why = {}
      assert.is_false(n:snapshot("nobody/none", function(r, err) why[#why + 1] = { r, err } end, "kv"))
      assert.is_false(n:snapshot(nil, function(r, err) why[#why + 1] = { r, err } end))
      assert.is_true(H.luv_until(function() return #why == 2 end))
      assert.matches("^ENOENT: ", why[1][2])
      assert.matches("^EINVAL: no reducer", why[2][2])
    end)

    it("the last reducer keeps the last event", function()
      local n = node()
      n:append(nil, H.events(50))
      local rev
      n:snapshot(nil, function(r) rev = r end, "last")
      assert.is_true(H.luv_until(function() return rev end))
      local ev = odo.core.event_decode(n.store:snapshot_get(n.id).data)
      assert.equal(50, ev.rev)
      assert.equal("e50", ev.data)
      assert.equal("last", n.store:snapshot_get(n.id).format)
    end)

    it("a Lua reducer folds batches and stores its state as JSON", function()
      local n = node()
      n:append(nil, H.events(2500))
      local calls = 0
      local counter = {
        name = "count",
        init = function() return { n = 0, bytes = 0 } end,
        reduce = function(state, events)
          calls = calls + 1
          state.n = state.n + #events
          for _, ev in ipairs(events) do state.bytes = state.bytes + #ev.data end
          return state
        end,
      }
      local rev
      n:snapshot(nil, function(r) rev = r end, counter)
      assert.is_true(H.luv_until(function() return rev end))
      assert.equal(3, calls)
      local snap = n.store:snapshot_get(n.id)
      assert.equal("lua:count", snap.format)
      local state = require("cjson").decode(snap.data)
      assert.equal(2500, state.n)
      -- the next build starts from the stored state
      n:append(nil, H.events(10))
      rev = nil
      n:snapshot(nil, function(r) rev = r end, counter)
      assert.is_true(H.luv_until(function() return rev end))
      assert.equal(4, calls)
      assert.equal(2510, require("cjson").decode(n.store:snapshot_get(n.id).data).n)
    end)

    it("a failing Lua reducer is reported and stores nothing", function()
      local errors = {}
      local n = node({ on_error = function(e) errors[#errors + 1] = e end })
      n:append(nil, H.events(10))
      local res
      n:snapshot(nil, function(r, err) res = { r, err } end,
        { name = "bad", reduce = function() error("reducer broke") end })
      assert.is_true(H.luv_until(function() return res end))
      assert.is_nil(res[1])
      assert.matches("reducer broke", res[2])
      assert.is_nil(n.store:snapshot_get(n.id))
      assert.equal(1, #errors)
    end)
  end)

  describe("snapshots when things go wrong", function()
    it("stop the worker's watch when the node closes while a snapshot is written", function()
      -- the node closes on the loop turn after the worker's descriptor is
      -- watched, while the worker still writes: closing the store closes
      -- that descriptor, so the watch must be gone first
      local n, watched
      local adapter = setmetatable({
        watch = function(fd, fn)
          if n then watched = true end -- (the commit queue's is watched as n opens)
          return luv_adapter.watch(fd, fn)
        end,
      }, { __index = luv_adapter })
      n = node({ adapter = adapter, policy = { reducer = "kv", snapshot_every_events = 1e9 } })
      local evs = {}
      for i = 1, 50000 do evs[i] = odo.kv.put("k" .. i, ("v"):rep(64)) end
      n:append(nil, evs)
      local res
      n:snapshot(nil, function(r, err) res = { r, err } end)
      assert.is_true(H.luv_until(function() return watched end))
      n:close()
      assert.is_true(H.luv_until(function() return res ~= nil end))
      assert.same({ nil, "ECANCELED: the node closed" }, res)
      -- after_each: no handle left active (the loop can end)
    end)

    it("report a Lua reducer's codec failing, and free the stream", function()
      local clock = memory.new()
      local errors = {}
      local n = node({ adapter = clock, on_error = function(e) errors[#errors + 1] = e end })
      n:append(nil, H.events(3))
      local res
      local function cb(r, err) res = { r, err } end
      -- a state holding a function: JSON cannot encode it
      n:snapshot(nil, cb, { name = "fn", reduce = function(st) st.f = print; return st end })
      clock.drain()
      assert.is_nil(res[1])
      assert.matches("serialise", res[2])
      assert.equal(1, #errors)
      -- a codec that cannot read its own snapshot back
      local broken = { name = "broken", reduce = function(st) return st end,
        codec = { encode = function() return "x" end, decode = function() error("cannot decode") end } }
      n:snapshot(nil, cb, broken)
      clock.drain()
      assert.same({ 3 }, res)
      n:append(nil, H.events(1))
      n:snapshot(nil, cb, broken)
      clock.drain()
      assert.is_nil(res[1])
      assert.matches("cannot decode", res[2])
      assert.equal(2, #errors)
      -- the stream is not left busy: a good reducer builds
      n:snapshot(nil, cb, "last")
      clock.drain()
      assert.same({ 4 }, res)
      assert.equal(1, clock.pending_timers()) -- the node's ticker only
    end)

    it("report a policy function that raises, and the default decides", function()
      local clock = memory.new()
      local errors = {}
      local n = node({ adapter = clock, on_error = function(e) errors[#errors + 1] = e end, policy = {
        reducer = "last", snapshot_every_events = 5,
        snapshot_due = function() error("snapshot_due broke") end,
      } })
      n:append(nil, H.events(5)) -- raised into the caller before
      clock.drain()
      assert.equal(5, n.store:snapshot_get(n.id).rev)
      assert.matches("snapshot_due broke", errors[1])
    end)
  end)

  describe("policy on the in-memory adapter", function()
    it("snapshots after N events and compacts after M more", function()
      local clock = memory.new()
      local n = node({ adapter = clock, policy = {
        reducer = "kv", snapshot_every_events = 100, compact_after_events = 10,
        snapshot_every_ms = 1e9, compact_after_ms = 1e9,
      } })
      local seen = {}
      n:on("snapshot", function(_, rev) seen[#seen + 1] = "snapshot " .. rev end)
      n:on("compact", function(_, first) seen[#seen + 1] = "compact " .. first end)
      for i = 1, 99 do n:append(nil, odo.kv.put("k" .. i, "v")) end
      clock.drain()
      assert.same({}, seen)
      n:append(nil, odo.kv.put("k100", "v"))
      clock.drain()
      assert.same({ "snapshot 100" }, seen)
      for i = 1, 9 do n:append(nil, odo.kv.put("x" .. i, "v")) end
      clock.drain()
      assert.same({ "snapshot 100" }, seen)
      n:append(nil, odo.kv.put("x10", "v"))
      clock.drain()
      assert.same({ "snapshot 100", "compact 101" }, seen)
      local st = n.store:stream(n.id)
      assert.equal(101, st.first)
      assert.equal(100, st.purged)
    end)

    it("snapshots after T ms with new events, and compacts T ms later", function()
      local clock = memory.new()
      local n = node({ adapter = clock, policy = {
        reducer = "last", tick_ms = 100, snapshot_every_events = 1e9, snapshot_every_ms = 5000,
        compact_after_events = 1e9, compact_after_ms = 2000, compact_keep = 3,
      } })
      local seen = {}
      n:on("snapshot", function(_, rev) seen[#seen + 1] = { "snapshot", clock.now(), rev } end)
      n:on("compact", function(_, first) seen[#seen + 1] = { "compact", clock.now(), first } end)
      n:append(nil, H.events(20))
      clock.advance(4900)
      assert.same({}, seen)
      clock.advance(100)
      assert.same({ { "snapshot", 5000, 20 } }, seen)
      clock.advance(1900)
      assert.equal(1, #seen)
      clock.advance(100)
      -- keeps 3 events of history behind the snapshot
      assert.same({ "compact", 7000, 18 }, seen[2])
      -- no new events: no new snapshot, however long
      clock.advance(60000)
      assert.equal(2, #seen)
    end)

    it("takes no snapshot when no reducer is set", function()
      local clock = memory.new()
      local n = node({ adapter = clock, policy = { snapshot_every_events = 1 } })
      n:append(nil, H.events(100))
      clock.advance(3600 * 1000)
      assert.is_nil(n.store:snapshot_get(n.id))
    end)

    it("lets a policy be a function the user replaces", function()
      local clock = memory.new()
      local asked = {}
      local n = node({ adapter = clock, policy = {
        reducer = function(id) asked[#asked + 1] = id; return "last" end,
        snapshot_due = function(st) return st.last % 7 == 0 end,
      } })
      n:append(nil, H.events(6))
      clock.drain()
      assert.is_nil(n.store:snapshot_get(n.id))
      n:append(nil, H.events(1))
      clock.drain()
      assert.equal(7, n.store:snapshot_get(n.id).rev)
      assert.equal(n.id, asked[1])
    end)

    it("leaves no timer behind when closed", function()
      local clock = memory.new()
      local n = node({ adapter = clock })
      n:subscribe(nil, 1, function() end)
      n:close()
      assert.equal(0, clock.pending_timers())
    end)

    it("refuses unknown policies", function()
      assert.has_error(function() H.node({ policy = { snapshot_evry = 3 } }) end,
        "unknown policy 'snapshot_evry'")
    end)
  end)
end)
