-- The worker_nice policy, read back from the kernel: the threads the core
-- runs beside the loop thread (the commit queue's worker, LevelDB's
-- background thread, which flushes and compacts) take the policy's nice
-- value, the loop thread keeps its own; nothing lowers a nice value; a
-- policy out of range raises. Each thread's nice value is field 19 of
-- /proc/self/task/TID/stat; which thread did the store's writing is told
-- by its own write counter (/proc/self/task/TID/io, wchar). Linux only.
local H = require "helper"
local core = require "odo.core"
local uv = require "luv"
local luv_adapter = require "odo.adapter.luv"

local function read(path)
  local f = io.open(path)
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

local PID = tonumber(read("/proc/self/stat"):match("^(%d+)"))

-- Every thread of this process: tid -> { name =, nice =, wchar = }.
local function threads()
  local list = {}
  local dir = assert(uv.fs_scandir("/proc/self/task"))
  while true do
    local name = uv.fs_scandir_next(dir)
    if not name then break end
    local tid = tonumber(name)
    local stat = read("/proc/self/task/" .. name .. "/stat")
    local io_ = read("/proc/self/task/" .. name .. "/io")
    if tid and stat and io_ then
      local comm, rest = stat:match("^%d+ %((.*)%) (.*)$")
      local fields = {}
      for f in rest:gmatch("%S+") do fields[#fields + 1] = f end
      -- rest starts at field 3 (state): field 19 (nice) is its 17th
      list[tid] = { name = comm, nice = tonumber(fields[17]), wchar = tonumber(io_:match("wchar:%s*(%d+)")) }
    end
  end
  return list
end

local function named(list, name)
  local found = {}
  for tid, t in pairs(list) do
    if t.name == name then found[#found + 1] = t end
    t.tid = tid
  end
  return found
end

-- A 4 KB block that does not compress (LevelDB compresses its tables).
local function noise(n)
  local t = {}
  local x = 12345
  for i = 1, n do
    x = (x * 1103515245 + 12345) % 2147483648
    t[i] = string.char(x % 251)
  end
  return table.concat(t)
end

describe("the worker_nice policy", function()
  local opened
  before_each(function() opened = {} end)
  after_each(function()
    H.close_checked(opened)
    luv_adapter.shutdown()
    H.cleanup()
  end)

  -- (one verifier thread unless said: the counts below are per node)
  local function node(nice, id, verifiers)
    -- (false: the default)
    local n = H.node { node_id = id, policy = { worker_nice = nice,
      verify_threads = verifiers == nil and 1 or verifiers or nil } }
    opened[#opened + 1] = n
    return n
  end

  it("gives the commit worker and LevelDB's background thread its nice value, not the loop thread", function()
    local main_nice = threads()[PID].nice
    assert(main_nice <= 14, "the spec needs a loop thread with a nice value below 15, not " .. main_nice)
    local want = main_nice + 5
    local n = node(want, "prio-a", 3)
    local before = threads()
    -- 12 MB of durable appends, then one more: the commit worker writes
    -- LevelDB's log,
    -- and LevelDB's background thread flushes the 8 MB memtable to a
    -- table file (a memtable compaction)
    local blob = noise(4096)
    local events = {}
    for i = 1, 100 do events[i] = { type = "t", data = i .. blob } end
    -- one at a time: the worker merges the writes queued when it wakes,
    -- and LevelDB switches memtables only before a write
    for i = 1, 31 do
      local last, err
      n:append(i <= 30 and events or { type = "t", data = "x" }, { sync = true }, function(l, e)
        last, err = l, e
      end)
      assert.is_true(H.luv_until(function() return last or err end, 30000))
      assert.is_nil(err)
    end
    -- the flush runs behind the appends: wait for its table file
    local function written(name)
      local now, sum = threads(), 0
      for _, t in ipairs(named(now, name)) do sum = sum + t.wchar - ((before[t.tid] or {}).wchar or 0) end
      return sum
    end
    -- (the table is smaller than the memtable: the repeated blob
    -- compresses within LevelDB's 16 KiB blocks)
    local ok = H.luv_until(function() return written("odo-leveldb") > 1e6 end, 60000)
    if not ok then
      for tid, t in pairs(threads()) do print(tid, t.name, t.nice, t.wchar, (before[tid] or {}).wchar) end
      print(H.run("ls -la " .. n.dir .. "/store"))
    end
    assert.is_true(ok, "LevelDB's background thread wrote no table file")
    local after = threads()
    local workers, leveldb = named(after, "odo-commit"), named(after, "odo-leveldb")
    local verifiers = named(after, "odo-verify") -- check received chains ahead of the writer
    assert.equal(1, #workers)
    assert.equal(1, #leveldb)
    assert.equal(3, #verifiers) -- policy verify_threads
    assert.equal(want, workers[1].nice)
    assert.equal(want, leveldb[1].nice)
    for _, v in ipairs(verifiers) do assert.equal(want, v.nice) end
    assert.equal(main_nice, after[PID].nice)
    -- every thread that wrote the store's megabytes has the policy's nice
    -- value (the log: the commit worker; the table: LevelDB's thread)
    local writers = 0
    for tid, t in pairs(after) do
      local grew = t.wchar - ((before[tid] or {}).wchar or 0)
      if grew > 1e6 then
        writers = writers + 1
        assert.equal(want, t.nice, ("thread %d (%s) wrote %d bytes at nice %d"):format(tid, t.name, grew, t.nice))
      end
    end
    assert.equal(2, writers)
    local files = H.run("ls " .. n.dir .. "/store")
    assert.truthy(files:match("%d+%.ldb"), "no table file: " .. files)
  end)

  it("never lowers a nice value: a less nice node keeps LevelDB's thread where it was", function()
    local main_nice = threads()[PID].nice
    assert(main_nice <= 14, "the spec needs a loop thread with a nice value below 15, not " .. main_nice)
    -- LevelDB's thread is the process's: an earlier node may have raised it
    local earlier = named(threads(), "odo-leveldb")[1]
    local highest = math.max(earlier and earlier.nice or 0, main_nice + 4)
    node(main_nice + 4, "prio-b")
    node(main_nice + 2, "prio-c")
    node(0, "prio-d") -- 0: the loop thread's own (nothing changes)
    local done = 0
    for _, n in ipairs(opened) do
      n:append({ type = "t", data = "x" }, nil, function(last) if last then done = done + 1 end end)
    end
    assert.is_true(H.luv_until(function() return done == 3 end, 10000))
    local after = threads()
    for _, name in ipairs({ "odo-commit", "odo-verify" }) do
      local nices = {}
      for _, t in ipairs(named(after, name)) do nices[#nices + 1] = t.nice end
      table.sort(nices)
      assert.same({ main_nice, main_nice + 2, main_nice + 4 }, nices, name)
    end
    local leveldb = named(after, "odo-leveldb")
    assert.equal(1, #leveldb)
    assert.equal(highest, leveldb[1].nice)
    assert.equal(main_nice, after[PID].nice)
  end)

  it("runs verify_threads verifier threads: by default one per online core beside the loop's, at most 16", function()
    local cores = tonumber((H.run("nproc"):match("%d+")))
    -- a durable append starts the node's commit queue (worker_nice 0
    -- leaves it for the first write); returns the threads it added
    local function started(verifiers, id)
      local before = threads()
      local n = node(0, id, verifiers)
      local done
      n:append({ type = "t", data = "x" }, { sync = true }, function(last) done = last end)
      assert.is_true(H.luv_until(function() return done ~= nil end, 10000))
      local added = {}
      for tid, t in pairs(threads()) do
        if not before[tid] then added[t.name] = (added[t.name] or 0) + 1 end
      end
      return added
    end
    assert.same({ ["odo-commit"] = 1 }, started(0, "verifiers-none"))
    assert.same({ ["odo-commit"] = 1, ["odo-verify"] = 4 }, started(4, "verifiers-four"))
    local default = math.max(1, math.min(16, cores - 1))
    assert.same({ ["odo-commit"] = 1, ["odo-verify"] = default }, started(false, "verifiers-default"))
  end)

  it("gives a snapshot worker its nice value while it writes", function()
    local main_nice = threads()[PID].nice
    assert(main_nice <= 14, "the spec needs a loop thread with a nice value below 15, not " .. main_nice)
    local want = main_nice + 3
    local s = assert(require("odo.store").open(H.tmpdir() .. "/store", { node_id = "snap", worker_nice = want }))
    -- a 10 MB state: the worker encodes and writes it for far longer than
    -- a look at /proc takes
    local kv, evs = require("odo").kv, {}
    local value = noise(200)
    for i = 1, 50000 do evs[i] = kv.put("k" .. i, value) end
    s:append(nil, evs)
    local b = assert(core.snapshot_builder(s.core, "snap", "kv"))
    while not b:step() do end
    local fd = assert(b:finish_async())
    local seen
    local poll = uv.new_poll(fd)
    local done = false
    poll:start("r", function() done = true end)
    while not done and not seen do
      seen = named(threads(), "odo-snapshot")[1]
      uv.run("nowait")
    end
    poll:close()
    assert.equal(50000, b:collect())
    assert.truthy(seen, "the snapshot worker was done before it was seen")
    assert.equal(want, seen.nice)
    s:close()
  end)

  it("refuses a worker_nice that is not an integer from 0 to 19", function()
    for _, bad in ipairs({ -1, 20, 2.5, "5" }) do
      assert.has_error(function()
        require("odo").node { dir = H.tmpdir(), node_id = "x", policy = { worker_nice = bad } }
      end, ("policy 'worker_nice' must be an integer from 0 to 19, got %s"):format(tostring(bad)))
    end
    assert.has_error(function() core.store_open(H.tmpdir() .. "/s", { node_id = "x", worker_nice = 20 }) end,
      "opts.worker_nice must be 0 to 19")
    assert.has_error(function() core.store_open(H.tmpdir() .. "/s", { node_id = "x", worker_nice = -1 }) end,
      "opts.worker_nice must not be negative")
  end)
end)
