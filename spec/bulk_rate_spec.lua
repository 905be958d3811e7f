-- policy.sync_bulk_bytes_per_s on the in-memory adapter (real TLS,
-- sessions and stores; simulated sockets and time): after each loop
-- turn's slice of bulk catch-up the source serves live traffic only until
-- the bytes it sent are paid for at that rate, so a catch-up cannot take
-- every CPU of a machine that has none to spare, while a live batch still
-- goes out at once.
local H = require "helper"

-- batches of 1000 events (each ends at its first head), one frame a pump
local POLICY = { pex_per_minute = 0, sync_bulk_batch_bytes = 0, sync_pump_budget = 1 }
local BATCHES = 20

describe("a rate for bulk catch-ups", function()
  local env = H.memory_world("q", 2)
  local net
  setup(function() env.setup() end)
  teardown(H.cleanup)
  before_each(function() env.before_each(); net = env.net end)
  after_each(env.after_each_checked)

  local last = H.node_last

  -- A source with a catch-up of BATCHES batches and a small live stream,
  -- and a replica of both; returns them, the live stream's id, and the
  -- simulated times at which the replica stored the catch-up's batches.
  local function start(rate)
    local a = env.node(1, { policy = { sync_bulk_bytes_per_s = rate } }, POLICY)
    local live = a:stream_id("live")
    a:append(live, H.events(1))
    a:append(nil, H.events(1000 * BATCHES))
    local b = env.node(2, { peers = { "10.0.0.1:4000" } }, POLICY)
    local times = {}
    b:on("replicated", function(stream) if stream == a.id then times[#times + 1] = net.now() end end)
    return a, b, live, times
  end

  it("is off by default: a catch-up goes on at every loop turn", function()
    local a, b, _, times = start(nil)
    assert.is_true(net.run_until(function() return last(b, a.id) == 1000 * BATCHES end, 60000))
    assert.is_true(times[#times] - times[1] < 50, ("%d ms"):format(times[#times] - times[1]))
  end)

  it("holds bulk to its rate, and lets live traffic through at once meanwhile", function()
    local RATE = 1000000 -- bytes a second
    local a, b, live, times = start(RATE)
    local out = a.swarm.transport
    assert.is_true(net.run_until(function() return last(b, a.id) >= 1000 and last(b, live) == 1 end, 60000))
    local t0, sent0 = net.now(), out.bytes_out
    -- a live append, while bulk waits: it arrives without the clock moving
    a:append(live, H.events(1, "now"))
    local appended = net.now()
    assert.is_true(net.run_until(function() return last(b, live) == 2 end, 60000))
    assert.is_true(net.now() - appended < 5, ("the live event took %d ms"):format(net.now() - appended))
    assert.is_true(last(b, a.id) < 1000 * BATCHES, "the catch-up was not held back")
    assert.is_true(net.run_until(function() return last(b, a.id) == 1000 * BATCHES end, 60000))
    -- what was sent since took at least its time at the rate (less the
    -- last slice's, which nothing waits after)
    local bytes, ms = out.bytes_out - sent0, net.now() - t0
    assert.is_true(ms >= (bytes - bytes / BATCHES) * 1000 / RATE * 0.9,
      ("%d bytes in %d ms, %d batches"):format(bytes, ms, #times))
    assert.is_true(ms > 100, ms .. " ms")
  end)
end)
