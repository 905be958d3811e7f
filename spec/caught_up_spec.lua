-- "Caught up" two ways: a subscription's on_caught_up (with the local
-- store) and node:caught_up(stream) (with the swarm, from the upstream's
-- CAUGHT_UP), on the in-memory adapter with real TLS and stores.
local H = require "helper"

describe("caught up", function()
  local env = H.memory_world("cu", 2)
  setup(env.setup)
  teardown(H.cleanup)
  before_each(env.before_each)
  after_each(env.after_each_checked)

  it("with the local store comes first; with the swarm once the upstream sent everything", function()
    local net = env.net
    local a = env.node(1)
    a:append(nil, H.events(3000))
    assert.is_true(a:caught_up(a.id)) -- its own stream
    local b = env.node(2, { peers = { "10.0.0.1:4000" } })
    local local_done, swarm_events = nil, {}
    b:on("caught_up", function(stream, rev) swarm_events[#swarm_events + 1] = { stream, rev } end)
    b:subscribe(a.id, 1, function() end, { on_caught_up = function(sub)
      local st = b.store:stream(a.id)
      local_done = local_done or { held = st and st.last or 0, swarm = b:caught_up(a.id), pos = sub:position() }
    end })
    assert.is_false(b:caught_up(a.id))
    assert.is_true(net.run_until(function() return b:caught_up(a.id) end, 20000))
    -- the subscription was caught up with b's store before b held a's stream
    assert.same({ held = 0, swarm = false, pos = 1 }, local_done)
    assert.equal(3000, b.store:stream(a.id).last)
    assert.same({ a.id, 3000 }, swarm_events[#swarm_events])
    for _, st in ipairs(b:status().streams) do
      if st.id == a.id then assert.is_true(st.caught_up) end
    end
  end)
end)
