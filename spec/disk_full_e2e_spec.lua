-- A full disk during replication (a 3 MB tmpfs as a node's folder; needs
-- root, as CI has): a replica whose disk fills says ENOSPC, keeps serving
-- and answering what it has, and once the disk has room again catches up
-- with nothing lost; a source whose disk fills refuses appends with
-- ENOSPC, keeps serving its replica what it has, and takes appends again
-- once there is room.
local H = require "helper"
local cjson = require "cjson"


local BIG = ("x"):rep(3000)

describe("a full disk during replication", function()
  local w = H.odo_swarm()
  local mounts = {}
  setup(w.setup)
  teardown(function()
    w.stop_all()
    for _, dir in ipairs(mounts) do H.run("umount '" .. dir .. "'") end
    H.cleanup()
  end)

  local function small_disk(name)
    local dir = w.tmp .. "/" .. name .. "-disk"
    os.execute("mkdir -p '" .. dir .. "'")
    local out, ok = H.run(("mount -t tmpfs -o size=3m tmpfs '%s' 2>&1"):format(dir))
    assert(ok, "mounting a tmpfs needs root: " .. out)
    mounts[#mounts + 1] = dir
    return dir
  end
  local function grow(dir)
    local out, ok = H.run(("mount -o remount,size=64m '%s' 2>&1"):format(dir))
    assert(ok, out)
  end
  -- appends n events of 3,000 bytes in batches of 50; returns the last
  -- acknowledged revision and the last failure's message (an append that
  -- fails part way says how far it got: stdin goes to the node in pieces,
  -- each appended as it arrives)
  local function fill(p, n)
    local lines = {}
    for i = 1, 50 do lines[i] = BIG .. i end
    local file = H.write_file(w.tmp .. "/batch", table.concat(lines, "\n") .. "\n")
    local acked, failure = 0, nil
    for _ = 1, n // 50 do
      local out, ok = H.run(("'%s' append --dir '%s' < '%s' 2>&1"):format(H.odo, p.dir, file))
      if ok then
        acked = tonumber(out:match("(%d+)%s*$"))
      else
        failure = out
        acked = tonumber(out:match("were appended[ :(]+last revision (%d+)")) or acked
      end
    end
    return acked, failure
  end

  it("on a replica: ENOSPC, it keeps serving what it has, then catches up with nothing lost", function()
    local s = w.run("src1", { dir = w.tmp .. "/src1" })
    local r = w.run("rep1", { dir = small_disk("rep1") .. "/node", peers = { s.port } })
    local acked = fill(s, 2000) -- 6 MB: twice the replica's disk
    assert.equal(2000, acked)
    assert.is_true(H.wait(function() return H.read_file(r.log):find("ENOSPC") ~= nil end, 30000),
      "the replica never said its disk is full: " .. H.read_file(r.log))
    local held = H.last_of(r.dir, s.id)
    assert.is_true(held > 0 and held < 2000, "held " .. held)
    -- still running, still answering, what it holds is whole
    assert.is_true(H.alive(r.pid))
    local out, ok = H.odo_cmd("tail", "--dir", r.dir, s.id, "--from", ("%d"):format(held))
    assert.is_true(ok, out)
    assert.equal(held, cjson.decode(out:match("[^\n]+")).rev)
    grow(r.dir:match("^(.*)/node$"))
    assert.is_true(H.wait(H.holds(r.dir, s.id, 2000), 60000), H.read_file(r.log))
    local vout, vok = H.odo_cmd("verify", "--dir", r.dir)
    assert.is_true(vok, vout)
  end)

  it("on a source: appends fail with ENOSPC, its replica is served what it has, then appends go on", function()
    local s = w.run("src2", { dir = small_disk("src2") .. "/node" })
    local r = w.run("rep2", { dir = w.tmp .. "/rep2", peers = { s.port } })
    local acked, failure = fill(s, 2000)
    assert.is_truthy(failure, "the source's disk never filled")
    assert.matches("the disk is full", failure)
    assert.is_true(acked > 0)
    assert.is_true(H.wait(H.holds(r.dir, s.id, acked), 30000), H.read_file(r.log))
    grow(s.dir:match("^(.*)/node$"))
    local out, ok = H.run(("echo after | '%s' append --dir '%s' 2>&1"):format(H.odo, s.dir))
    assert.is_true(ok, out)
    assert.equal(acked + 1, tonumber(out:match("(%d+)%s*$")))
    assert.is_true(H.wait(H.holds(r.dir, s.id, acked + 1), 30000), H.read_file(r.log))
    for _, p in ipairs({ s, r }) do
      local vout, vok = H.odo_cmd("verify", "--dir", p.dir)
      assert.is_true(vok, vout)
    end
  end)
end)
