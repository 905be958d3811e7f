-- examples/local_journal.lua - a local journal on luv: a subscriber that catches up
-- then follows live appends, a coroutine reading a stream, a kv snapshot
-- and compaction, and the chain that proves the history. Exits 1 with the
-- message when an append fails (or nothing finishes within 60 s).
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath
local odo = require "odo"
local uv = require "luv"

local dir = os.tmpname()
os.remove(dir)

local node
-- the way out on any failure: the node closed, its folder removed, status 1
local function fail(msg)
  if node and not node.closed then pcall(node.close, node) end
  os.execute("rm -rf '" .. dir .. "'")
  io.stderr:write("local_journal failed: " .. tostring(msg) .. "\n")
  os.exit(1)
end

local err
node, err = odo.node {
  dir = dir,
  node_id = "demo-node",
  policy = { reducer = "kv", snapshot_every_events = 500, compact_after_events = 100 },
  -- an error raised in a handler fails the example too
  on_error = function(e) fail(e) end,
}
if not node then fail(err) end
print("node " .. node.id .. " in " .. dir)

-- some history before anyone subscribes
local last
last, err = node:append(nil, {
  { type = "joined", data = "alice" },
  { type = "said", data = "hello" },
})
if not last then fail(err) end

-- a subscriber: catch-up first, then live, in batches
local seen = 0
node:subscribe(node.id, 1, function(batch)
  for _, ev in ipairs(batch) do
    print(("  [%s #%d] %s: %s"):format(batch.stream, ev.rev, ev.type, ev.data))
  end
  seen = seen + #batch
end, { on_caught_up = function() print("  (subscriber caught up)") end })

-- optimistic concurrency: an append at a stale revision is refused
local ok
ok, err = node:append(nil, { type = "said", data = "late" }, { expected = 1 })
print("append expecting revision 1: " .. tostring(ok) .. " (" .. tostring(err) .. ")")

-- a settings stream, read by a coroutine, snapshotted by the kv reducer
local settings = node:stream_id("settings")
local updates = 0
local reader = node:subscribe(settings, 1, nil)
node:spawn(function()
  for batch in reader:batches() do
    updates = updates + #batch
  end
end)

node:on("snapshot", function(id, rev) print(("snapshot of %s at %d"):format(id, rev)) end)
node:on("compact", function(id, first) print(("compacted %s: events held from %d"):format(id, first)) end)

-- an append that fails stops the example with its message
local function appended(rev, e)
  if not rev then fail("append failed: " .. tostring(e)) end
end

local i = 0
local deadline = uv.now() + 60000
local writer = uv.new_timer()
writer:start(1, 1, function()
  i = i + 1
  if i <= 700 then
    node:append_async(settings, odo.kv.put("volume", tostring(i % 11)), nil, appended)
  elseif i == 701 then
    appended(node:append(nil, { type = "said", data = "bye" }))
  elseif uv.now() > deadline then
    fail(("not done within 60 s (seen %d, updates %d)"):format(seen, updates))
  elseif seen == 3 and updates == 700 and node.store:stream(settings).first > 1 then
    writer:close()
    reader:close()
    local st = node.store:stream(settings)
    local snap = node.store:snapshot_get(settings)
    print(("%s: events %d..%d, snapshot at %d says volume = %s"):format(
      settings, st.first, st.last, snap.rev, odo.kv.decode(snap.data).volume))
    if not (node.store:verify(node.id) and node.store:verify(settings)) then fail("a hash chain is broken") end
    print("hash chains verified")
    node:close()
  end
end)

uv.run()
os.execute("rm -rf " .. dir)
print("demo ok")
