-- The serving pump's scheduling (csrc/sync_serve.c), on the in-memory
-- adapter (real TLS, sessions and stores; simulated sockets and time): the
-- pump looks only at subscriptions that may have something to send (a
-- ready list, woken by a new head of their stream, a change to the
-- subscription, or a batch stored for a relay), so a source serving a
-- fleet of caught-up streams does no work per stream for an append to one.
local H = require "helper"

local STREAMS = 200
local SOLO = { pex_per_minute = 0 } -- (nodes meet only whom the spec names)

describe("the serving pump", function()
  local env = H.memory_world("p", 3)
  local net
  setup(function() env.setup() end)
  teardown(H.cleanup)
  before_each(function() env.before_each(); net = env.net end)
  after_each(env.after_each_checked)

  local function node(i, opts) return env.node(i, opts, SOLO) end
  local last = H.node_last

  local function visits(n) return n.sync.engine:counters().pump_visits end

  -- whether node n holds every stream of ids up to rev
  local function holds_all(n, ids, rev)
    return function()
      for _, id in ipairs(ids) do
        if last(n, id) < rev then return false end
      end
      return true
    end
  end

  -- a source of STREAMS named streams of 3 events each, and a replica
  -- caught up with all of them (following them live)
  local function fleet()
    local a = node(1)
    local ids = {}
    for i = 1, STREAMS do
      ids[i] = a:stream_id("d" .. i)
      a:append(ids[i], H.events(3))
    end
    local b = node(2, { peers = { "10.0.0.1:4000" } })
    assert.is_true(net.run_until(holds_all(b, ids, 3), 30000))
    net.advance(200) -- CAUGHT_UPs out, the catalogue pushes settled
    return a, b, ids
  end

  it("looks at no subscription when none has anything to send", function()
    local a = fleet()
    local before = visits(a)
    for _ = 1, 5 do
      local more = a.sync.engine:pump(1000000, 0)
      assert.is_false(more)
    end
    assert.equal(before, visits(a))
  end)

  it("serves an append to one stream of a fleet without looking at the others", function()
    local a, b, ids = fleet()
    local before = visits(a)
    a:append(ids[STREAMS // 2], H.events(2))
    assert.is_true(net.run_until(function() return last(b, ids[STREAMS // 2]) >= 5 end, 5000))
    local looked = visits(a) - before
    -- the appended stream's subscription, woken by its new event and by
    -- its head: a handful of looks, not one per stream of the fleet
    assert.is_true(looked >= 1 and looked <= 8, "looked at " .. looked .. " subscriptions")
    -- and the rest still get their own appends
    a:append(ids[1], H.events(1))
    a:append(ids[STREAMS], H.events(1))
    assert.is_true(net.run_until(function()
      return last(b, ids[1]) >= 4 and last(b, ids[STREAMS]) >= 4
    end, 5000))
  end)

  it("wakes a relay's subscriptions when it stores what its upstream sent", function()
    local a, b, ids = fleet()
    local c = node(3, { peers = { "10.0.0.2:4000" } })
    -- c follows a's streams through b (c knows only b)
    assert.is_true(net.run_until(holds_all(c, ids, 3), 30000))
    net.advance(200)
    assert.equal(b.id, c.sync.upstream[ids[7]])
    local before = visits(b)
    a:append(ids[7], H.events(4))
    assert.is_true(net.run_until(function() return last(c, ids[7]) >= 7 end, 5000))
    local looked = visits(b) - before
    assert.is_true(looked >= 1 and looked <= 8, "the relay looked at " .. looked .. " subscriptions")
    assert.is_true(c.store:verify(ids[7]))
  end)

  it("stops bulk while a session holds sync_bulk_queue_bytes queued", function()
    -- one signed head (1,000 events, ~130 KB) a batch; bulk waits while
    -- a byte is queued: one bulk batch a pump, then the flush
    local a = node(1, { policy = { sync_bulk_batch_bytes = 0, sync_bulk_queue_bytes = 1 } })
    for _ = 1, 20 do a:append(nil, H.events(1000)) end
    local engine, most = a.sync.engine, 0
    a.sync.engine = setmetatable({
      pump = function(_, ...)
        local before = engine:counters().batches_sent
        local more, notes = engine:pump(...)
        most = math.max(most, engine:counters().batches_sent - before)
        return more, notes
      end,
    }, { __index = function(_, k)
      return function(_, ...) return engine[k](engine, ...) end
    end })
    local b = node(2, { peers = { "10.0.0.1:4000" } })
    assert.is_true(net.run_until(function() return last(b, a.id) >= 20000 end, 30000))
    assert.equal(1, most)
    assert.is_true(b.store:verify(a.id))
  end)

  it("serves one catch-up to its end before the next: streams are caught up one by one", function()
    -- batches of one signed head (1,000 events): 10 per stream
    local a = node(1, { policy = { sync_bulk_batch_bytes = 0 } })
    local ids = {}
    for i = 1, 3 do
      ids[i] = a:stream_id("s" .. i)
      for _ = 1, 10 do a:append(ids[i], H.events(1000)) end
    end
    local b = node(2, { peers = { "10.0.0.1:4000" } })
    local order = {}
    b:on("replicated", function(stream)
      if order[#order] ~= stream then order[#order + 1] = stream end
    end)
    assert.is_true(net.run_until(holds_all(b, ids, 10000), 30000))
    -- each stream's batches in one run (round robin would switch at
    -- every batch)
    assert.equal(3, #order, "the streams' batches came in " .. #order .. " runs")
    for _, id in ipairs(ids) do assert.is_true(b.store:verify(id)) end
  end)
end)
