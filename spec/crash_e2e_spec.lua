-- Crashes while replicating: a source written to by `odo append` and a
-- replica following it over TLS on loopback; at random moments one of them
-- (or both) is killed with SIGKILL and started again, 5 rounds (20 with
-- ODO_LONG=1). Then: every acknowledged event is on the source, every
-- `odo append` call is there whole or not at all, both chains and
-- signatures verify, and the replica's copy is identical to the source's.
local H = require "helper"
local cjson = require "cjson"
local uv = require "luv"


-- A shell loop appending batches of 25 lines "batch B line L" to DIR,
-- appending each acknowledged last revision and batch number to ACKED.
local APPENDER = [[
b=0
while [ $b -lt 100000 ]; do
  b=$((b + 1))
  rev=$(seq 1 25 | sed "s/^/batch $b line /" | '%s' append --dir '%s' 2>/dev/null) && echo "$rev $b" >> '%s'
done
]]

describe("crashes while replicating", function()
  local w = H.odo_swarm()
  setup(w.setup)
  teardown(w.teardown)

  it("lose nothing acknowledged, write nothing half, and converge", function()
    local tmp = w.tmp
    local ports = H.free_ports(2)
    local nodes = {
      s = { dir = tmp .. "/s", port = ports[1] },
      r = { dir = tmp .. "/r", port = ports[2], peers = { ports[1] } },
    }
    local procs = {}
    local function start(name) procs[name] = w.start(name, nodes[name]) end
    start("s")
    start("r")
    local sid = assert(H.running_id(nodes.s.dir))
    local acked = tmp .. "/acked"
    local appender = w.spawn(APPENDER:format(H.odo, nodes.s.dir, acked), tmp .. "/appender.log")

    local rounds = os.getenv("ODO_LONG") and 20 or 5
    math.randomseed(os.time())
    for round = 1, rounds do
      uv.sleep(math.random(300, 1500))
      local victims = ({ { "s" }, { "r" }, { "s", "r" } })[round % 3 + 1]
      for _, v in ipairs(victims) do assert(w.stop(procs[v])) end
      uv.sleep(math.random(50, 500))
      for _, v in ipairs(victims) do start(v) end
    end
    uv.sleep(500)
    w.stop(appender)

    -- every acknowledged event is on the source
    local max_acked, batches = 0, {}
    for rev, b in H.read_file(acked):gmatch("(%d+) (%d+)\n") do
      max_acked = math.max(max_acked, tonumber(rev))
      batches[tonumber(b)] = tonumber(rev)
    end
    assert.is_true(max_acked > 0, "nothing was acknowledged: " .. H.read_file(tmp .. "/appender.log"))
    local last
    assert(H.wait(function()
      local s = H.stream_of(nodes.s.dir, sid)
      last = s and s.last
      return last
    end, 20000))
    assert.is_true(last >= max_acked, ("acknowledged %d, the source holds %d"):format(max_acked, last))

    -- whole appends only, acknowledged ones where they were acknowledged
    local out = H.odo_cmd("tail", "--dir", nodes.s.dir, sid)
    local seen, count, rev_of = {}, 0, {}
    for line in out:gmatch("[^\n]+") do
      local e = cjson.decode(line)
      count = count + 1
      assert.equal(count, e.rev)
      local b, l = e.data:match("^batch (%d+) line (%d+)$")
      b, l = tonumber(b), tonumber(l)
      seen[b] = (seen[b] or 0) + 1
      if l == 25 then rev_of[b] = e.rev end
    end
    assert.equal(last, count)
    for b, n in pairs(seen) do assert.equal(25, n, "batch " .. b .. " is half-written") end
    for b, rev in pairs(batches) do assert.equal(rev, rev_of[b], "acknowledged batch " .. b) end

    -- the replica converges to an identical copy; both verify
    assert.is_true(H.wait(H.holds(nodes.r.dir, sid, last), 30000), H.read_file(procs.r.log))
    local function lines(dir)
      local t = {}
      for line in H.odo_cmd("tail", "--dir", dir, sid):gmatch("[^\n]+") do
        local e = cjson.decode(line)
        t[#t + 1] = ("%d %d %s %s"):format(e.rev, e.ts, e.type, e.data)
      end
      return table.concat(t, "\n")
    end
    assert.equal(lines(nodes.s.dir), lines(nodes.r.dir))
    for _, name in ipairs({ "s", "r" }) do
      local vout, ok = H.odo_cmd("verify", "--dir", nodes[name].dir)
      assert.is_true(ok, vout)
    end
  end)
end)
