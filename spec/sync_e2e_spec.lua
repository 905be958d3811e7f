-- Sync end to end: `odo run` processes on loopback, events written with
-- `odo append`, read with `odo tail` and `odo status`, checked with
-- `odo verify`. Generous timeouts; timings shortened by --config.
local H = require "helper"
local cjson = require "cjson"

local CONFIG = [[
return { policy = {
  tick_ms = 100, heartbeat_interval_ms = 500, heartbeat_timeout_ms = 2000,
  pex_per_minute = 0, -- the topologies here are the spec's
  handshake_timeout_ms = 2000, backoff = { 200, 400, 800, 800, 800, 800, 800, 800 },
  backoff_cap_ms = 800,
  reducer = "last", snapshot_every_events = 1000, snapshot_every_ms = 1e9,
  compact_after_events = 10, compact_after_ms = 1e9,
} }
]]

describe("sync between odo run processes", function()
  local w = H.odo_swarm(CONFIG)
  setup(w.setup)
  teardown(w.teardown)
  after_each(w.after_each)

  local function run(name, port, peers, dir) return w.start(name, { port = port, peers = peers, dir = dir }) end

  local function verified(p)
    local out, ok = H.odo_cmd("verify", "--dir", p.dir)
    assert.is_true(ok, out)
    return out
  end

  -- `odo append --dir dir` with one event per line, read from a file
  local function append_lines(dir, lines)
    local out, ok = H.odo_append(dir, lines)
    assert.is_true(ok, out)
  end

  it("two nodes: appended on one, tailed and verified on the other", function()
    local ports = H.free_ports(2)
    local a = run("a", ports[1])
    local b = run("b", ports[2], { ports[1] })
    local aid = H.running_id(a.dir)
    local out, ok = H.odo_cmd("append", "--dir", a.dir, "--type", "greeting", "hello", "wörld")
    assert.is_true(ok, out)
    assert.equal("2\n", out)
    assert.is_true(H.wait(H.holds(b.dir, aid, 2), 20000))
    out = H.odo_cmd("tail", "--dir", b.dir, aid)
    local lines = {}
    for line in out:gmatch("[^\n]+") do lines[#lines + 1] = cjson.decode(line) end
    assert.equal(2, #lines)
    assert.same({ aid, 1, "greeting", "hello" }, { lines[1].stream, lines[1].rev, lines[1].type, lines[1].data })
    assert.equal("wörld", lines[2].data)
    assert.equal(aid, H.stream_of(b.dir, aid).upstream)
    verified(b)
  end)

  it("a three-node chain relays: C follows A through B", function()
    local ports = H.free_ports(3)
    local a = run("a", ports[1])
    run("b", ports[2], { ports[1] })
    local c = run("c", ports[3], { ports[2] })
    local aid = H.running_id(a.dir)
    local data = {}
    for i = 1, 3000 do data[i] = "event " .. i end
    append_lines(a.dir, data)
    assert.is_true(H.wait(H.holds(c.dir, aid, 3000), 30000))
    local up = H.stream_of(c.dir, aid).upstream
    assert.is_truthy(up)
    assert.is_not.equal(aid, up) -- through b
    verified(c)
  end)

  it("SIGKILL of an upstream mid-stream: the replica switches and ends with no gap and no duplicate", function()
    local ports = H.free_ports(3)
    local adir = w.tmp .. "/big-a"
    -- a's store with 300,000 events, written while no node runs
    local a0 = run("a", ports[1], nil, adir)
    local aid = H.running_id(a0.dir)
    H.kill(a0.pid, "TERM")
    assert.is_true(H.wait(function() return not H.alive(a0.pid) end, 10000))
    local lines = {}
    for i = 1, 300000 do lines[i] = ("%06d %s"):format(i, ("x"):rep(90)) end
    append_lines(adir, lines)
    local a = run("a", ports[1], nil, adir)
    local b = run("b", ports[2], { ports[1] })
    assert.is_true(H.wait(H.holds(b.dir, aid, 300000), 120000), "b did not catch up")
    local r = run("r", ports[3], { ports[1], ports[2] })
    -- r follows the source itself; kill it while r is part way
    assert.is_true(H.wait(function()
      local s = H.stream_of(r.dir, aid)
      return s and s.last > 0
    end, 60000))
    local s = H.stream_of(r.dir, aid)
    H.kill(a.pid, "KILL")
    assert.is_true(s.last < 300000, "r was done before the kill: make the stream longer")
    assert.is_true(H.wait(H.holds(r.dir, aid, 300000), 120000), "r did not finish through b")
    local st = H.stream_of(r.dir, aid)
    assert.equal(H.stream_of(b.dir, aid).head, st.head) -- the same chain hash: same history
    verified(r)
  end)

  it("a node joining after compaction gets the snapshot and the tail", function()
    local ports = H.free_ports(2)
    local a = run("a", ports[1])
    local aid = H.running_id(a.dir)
    local data = {}
    for i = 1, 1500 do data[i] = "e" .. i end
    append_lines(a.dir, data)
    -- a snapshot at 1500; 20 more events pass compact_after_events
    for i = 1, 20 do H.odo_cmd("append", "--dir", a.dir, "more " .. i) end
    assert.is_true(H.wait(function()
      local s = H.stream_of(a.dir, aid)
      return s and s.first > 1
    end, 20000), "a did not compact")
    local src = H.stream_of(a.dir, aid)
    local d = run("d", ports[2], { ports[1] })
    assert.is_true(H.wait(H.holds(d.dir, aid, math.tointeger(src.last)), 20000))
    local s = H.stream_of(d.dir, aid)
    assert.equal(src.snapshot, s.snapshot)
    assert.equal(src.snapshot + 1, s.first)
    verified(d)
    local out = H.odo_cmd("tail", "--dir", d.dir, aid)
    local first = cjson.decode(out:match("^[^\n]+"))
    assert.equal(src.snapshot + 1, first.rev)
  end)
end)
