-- Own heads are written on the commit queue's worker while it has writes,
-- not on the loop: a write on the loop would wait in LevelDB's writer
-- queue behind the worker's durable commit (its fsync), stalling a host's
-- frame. With the worker idle they are written at once. A head handed to
-- the worker is not signed again while in flight, the pump serves up to
-- it once written, and a peer gets the events it covers.
local H = require "helper"

describe("own heads", function()
  local env = H.memory_world("heads", 2)
  setup(env.setup)
  teardown(H.cleanup)
  before_each(env.before_each)
  after_each(env.after_each_checked)

  it("go to the commit queue's worker while it writes, are signed once, and reach a peer once written", function()
    local net = env.net
    local a = env.node(1)
    assert.is_truthy(a:commit_queue(), "the node has a commit queue")
    local engine = a.sync.engine
    -- the worker idle: written at once (no round trip for a live head)
    a:append(nil, H.events(2, "idle"))
    assert.equal(1, (engine:sign_heads()))
    assert.equal(0, select(2, engine:backlog()))
    -- a durable write of another stream on the worker: the head of new
    -- events is handed to the worker behind it, not written on the loop
    -- (queued straight on the node's commit queue: the worker holds it
    -- until the loop collects it)
    a:append(nil, H.events(3))
    local other = a.id .. "/other"
    assert.is_truthy(a:commit_queue():submit({ { stream = other, events = H.events(1, "o"), sync = true } }))
    -- (the node's own signing pass is deferred to the next loop turn)
    local signed, more = engine:sign_heads()
    assert.equal(1, signed)
    assert.is_false(more)
    assert.equal(1, select(2, engine:backlog()))
    -- in flight: not signed again
    assert.equal(0, (engine:sign_heads()))
    -- the heads' write holds no stream: the loop's next write to the
    -- stream does not wait for the worker (waiting would also apply the
    -- other stream's write)
    a:append(nil, H.events(1, "after"))
    assert.equal(0, a.store:stream(other).last)
    a:await_commits() -- (what the node's own pass does after signing)
    assert.is_true(net.run_until(function() return select(2, engine:backlog()) == 0 end, 5000))
    assert.equal(0, (engine:sign_heads()))
    -- the head is stored: a peer catches up to it
    local b = env.node(2, { peers = { "10.0.0.1:4000" } })
    b:subscribe(a.id, 1, function() end)
    assert.is_true(net.run_until(function() return b:caught_up(a.id) end, 20000))
    assert.equal(6, b.store:stream(a.id).last)
    -- more appends: signed from where the written head ended
    a:append(nil, H.events(3, "more"))
    assert.equal(1, (engine:sign_heads()))
    a:await_commits()
    assert.is_true(net.run_until(function()
      local st = b.store:stream(a.id)
      return st and st.last == 9
    end, 20000))
  end)
end)
