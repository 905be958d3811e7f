-- A full disk: the write that does not fit fails with ENOSPC and writes
-- nothing; every append acknowledged before it is there after the disk
-- has room again. Uses a tiny tmpfs, which needs root (CI runs as root).
local H = require "helper"
local Store = require "odo.store"

local function try_mount(dir, size)
  local _, ok = H.run(("mount -t tmpfs -o size=%s tmpfs '%s'"):format(size, dir))
  return ok
end

describe("a full disk", function()
  local dir, mounted
  before_each(function()
    dir = H.tmpdir()
    mounted = try_mount(dir, "3m")
  end)
  after_each(function()
    if mounted then H.run("umount '" .. dir .. "'") end
    H.cleanup()
  end)

  it("fails appends with ENOSPC and loses nothing acknowledged", function()
    if not mounted then
      pending("mounting a tmpfs needs root")
      return
    end
    local s = assert(Store.open(dir .. "/store", { node_id = "node-a" }))
    local acked, failure, name = 0, nil, nil
    local data = ("d"):rep(4000)
    for _ = 1, 10000 do
      local evs = {}
      for i = 1, 20 do evs[i] = { type = "t", data = data } end
      local last, err, n = s:append(nil, evs)
      if not last then
        failure, name = err, n
        break
      end
      acked = last
    end
    assert.equal("ENOSPC", name, failure)
    assert.matches("disk is full", failure)
    assert.is_true(acked > 0)
    -- the catalogue did not move past what was written
    assert.equal(acked, s:stream("node-a").last)
    s:close()
    -- give the disk room, reopen: everything acknowledged is there
    local _, ok = H.run("mount -o remount,size=64m '" .. dir .. "'")
    assert.is_true(ok)
    s = assert(Store.open(dir .. "/store"))
    local st = s:stream("node-a")
    assert.equal(acked, st.last) -- the failed write left nothing behind
    assert.is_true(s:verify("node-a"))
    assert.equal(st.last, #s:read("node-a"))
    -- and it takes appends again
    assert.equal(st.last + 1, s:append(nil, { type = "t", data = "after" }))
    s:close()
  end)
end)
