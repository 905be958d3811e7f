-- The commit queue: durable group commits written on the core's worker
-- thread. What is acknowledged is durable, the catalogue in memory moves
-- only once a write is done, a stream's writes stay in order (queued ones,
-- and the loop's own writes behind them), and a full disk fails the write
-- and everything queued behind it with nothing written.
local H = require "helper"
local core = require "odo.core"
local luv_adapter = require "odo.adapter.luv"

local function events(n, tag)
  local evs = {}
  for i = 1, n do evs[i] = { type = "t", data = (tag or "e") .. i } end
  return evs
end

-- A new store of node "n1" in a fresh folder, with its commit queue.
local function open_queue()
  local dir = H.tmpdir() .. "/store"
  local s = assert(core.store_open(dir, { node_id = "n1" }))
  return dir, s, core.commit_queue(s)
end

describe("the commit queue", function()
  after_each(function() H.cleanup() end)

  it("changes the catalogue only when a collected write is done, in order", function()
    local _, s, q = open_queue()
    assert.has_error(function() core.commit_queue(s) end, "the store already has a commit queue")
    local id1 = q:submit({ { events = events(2) } })
    -- the second write stages after the first, still in flight
    local id2 = q:submit({ { events = events(1) }, { events = events(1), expected = 1 },
      { stream = "n1/b", events = events(3) } })
    assert.equal(2, q:pending())
    -- nothing of them is in the catalogue before it is collected: the
    -- streams they create are there, empty
    assert.equal(0, s:stream("n1").last)
    assert.equal(0, s:stream("n1/b").last)
    assert.equal(2, #s:streams())
    assert.same({}, s:changes())
    assert.same({}, s:read("n1", 1))
    q:wait()
    local done = q:collect()
    assert.same({ { id = id1, results = { 2 } }, { id = id2, results = {
      3, "ECONFLICT: stream n1 is at revision 3, not the expected 1; nothing was written", 3 } } }, done)
    assert.equal(3, s:stream("n1").last)
    assert.equal(3, s:stream("n1/b").last)
    local changed = s:changes()
    table.sort(changed)
    assert.same({ "n1", "n1/b" }, changed)
    assert.equal(0, q:pending())
    assert.same({}, q:collect())
    s:close()
  end)

  it("makes a write of the loop's own to a stream wait for the writes in flight", function()
    local dir, s, q = open_queue()
    q:submit({ { events = events(5) } })
    q:submit({ { events = events(5) } })
    -- a blocking append continues after both queued writes
    assert.equal(11, s:append(nil, events(1, "own")))
    assert.equal(11, s:stream("n1").last)
    local done = q:collect()
    assert.same({ 5 }, done[1].results)
    assert.same({ 10 }, done[2].results)
    -- with an expected revision, checked against what the worker wrote
    q:submit({ { events = events(1) } })
    local last, err = s:append(nil, events(1), { expected = 11 })
    assert.is_nil(last)
    assert.matches("ECONFLICT: stream n1 is at revision 12", err)
    q:collect()
    s:close()
    -- everything is on disk, in one unbroken chain
    s = assert(core.store_open(dir))
    assert.equal(12, s:stream("n1").last)
    assert.is_true(s:verify("n1"))
    assert.equal("own1", s:read("n1", 11, 11)[1].data)
    s:close()
  end)

  it("waits for its writes when the store closes, and is closed with it", function()
    local dir, s, q = open_queue()
    q:submit({ { events = events(3) } })
    s:close()
    assert.has_error(function() q:submit({ { events = events(1) } }) end, "attempt to use a closed commit queue")
    q:close() -- idempotent
    s = assert(core.store_open(dir))
    assert.equal(3, s:stream("n1").last)
    s:close()
  end)

  describe("on a full disk", function()
    local dir, mounted
    before_each(function()
      dir = H.tmpdir()
      local _, ok = H.run(("mount -t tmpfs -o size=3m tmpfs '%s'"):format(dir))
      mounted = ok
    end)
    after_each(function()
      if mounted then H.run("umount '" .. dir .. "'") end
    end)

    it("fails the write and every one queued behind it, with nothing written", function()
      assert.is_true(mounted, "mounting a tmpfs needs root")
      local s = assert(core.store_open(dir .. "/store", { node_id = "n1" }))
      local q = core.commit_queue(s)
      local data = ("d"):rep(4000)
      local acked, failed = 0, nil
      for _ = 1, 10000 do
        local evs = {}
        for i = 1, 20 do evs[i] = { type = "t", data = data } end
        -- two writes in flight at a time: the second stages after the first
        q:submit({ { events = evs } })
        q:submit({ { events = evs } })
        q:wait()
        for _, job in ipairs(q:collect()) do
          if job.err then
            failed = failed or job
            assert.equal("ENOSPC", job.name, job.err)
          else
            assert.is_nil(failed, "a write after a failed one succeeded")
            acked = job.results[1]
          end
        end
        -- the catalogue never moves past what was written
        assert.equal(acked, s:stream("n1") and s:stream("n1").last or 0)
        if failed then break end
      end
      assert.is_table(failed)
      assert.is_true(acked > 0)
      s:close()
      assert.is_true(select(2, H.run("mount -o remount,size=64m '" .. dir .. "'")))
      s = assert(core.store_open(dir .. "/store"))
      assert.equal(acked, s:stream("n1").last) -- nothing of the failed writes
      assert.is_true(s:verify("n1"))
      s:close()
    end)
  end)

  describe("in a node", function()
    -- the luv adapter without watch: the node polls the queue from a timer
    local no_watch = setmetatable({ watch = false }, { __index = luv_adapter })

    for _, case in ipairs({ { "watching its descriptor", nil }, { "polling it from a timer", no_watch } }) do
      it("answers appends once durable, and subscribers see no event before, " .. case[1], function()
        local n = H.node({ adapter = case[2] })
        local acked, seen, early = {}, 0, 0
        n:subscribe(nil, 1, function(batch)
          for _, ev in ipairs(batch) do
            seen = seen + 1
            if not acked[ev.rev] then early = early + 1 end
          end
        end)
        local function cb(last, err)
          assert(last, err)
          for r = 1, last do acked[r] = true end
        end
        for i = 1, 50 do
          n:append({ type = "t", data = tostring(i) }, nil, cb)
          if i % 10 == 0 then H.luv_until(function() return acked[i] end, 5000) end
        end
        assert.is_true(H.luv_until(function() return seen == 50 end, 5000))
        assert.equal(0, early)
        assert.equal(50, n.store:stream(n.id).last)
        -- a blocking append (no callback) waits for the write in flight
        n:append({ type = "t", data = "queued" }, nil, cb)
        n:_flush_commits()
        assert.equal(52, n:append({ type = "t", data = "blocking" }))
        n:close()
        assert.is_true(acked[51])
        assert.same({}, n.errors)
      end)
    end
  end)
end)
