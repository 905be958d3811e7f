-- examples/demo.lua - a local journal: append events, read them back,
-- prove the chain, snapshot and compact, reopen. Run with `make demo`.
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath
local odo = require "odo"

local dir = os.tmpname()
os.remove(dir)

local store = assert(odo.open_store(dir, { node_id = "demo-node" }))
print("store " .. dir .. " bound to node " .. store.node_id)

-- a batch is one atomic, durable write
local last = assert(store:append(nil, {
  { type = "joined", data = "alice" },
  { type = "said", data = "hello" },
  { type = "said", data = "how are you?" },
}))
print("own stream is at revision " .. last)

-- optimistic concurrency: appending at a revision that moved on fails
local ok, err = store:append(nil, { type = "said", data = "late" }, { expected = 1 })
print("append expecting revision 1: " .. tostring(ok) .. " (" .. err .. ")")

-- a named stream of this node
local chat = store:stream_id("chat")
for i = 1, 1000 do store:append(chat, { type = "msg", data = "message " .. i }, { sync = false }) end
store:sync()

for ev in store:events(nil) do
  print(("  %s #%d %-7s %s"):format(store.node_id, ev.rev, ev.type, ev.data))
end

-- every event is chained to the one before: h(n) = SHA-256(h(n-1) | event n)
assert(store:verify(chat))
print(chat .. ": 1000 events, chain verified")

-- snapshot the chat at 900, compact, purge the old events
store:snapshot_put(chat, 900, "900 messages so far", { format = "text" })
store:compact(chat)
store:purge_all()
local _, cerr = store:read(chat, 1)
print("reading revision 1 now: " .. cerr)
store:close()

-- everything is still there after reopening
store = assert(odo.open_store(dir))
for _, st in ipairs(store:streams()) do
  print(("catalogue: %-18s first %4d  last %4d  snapshot %3d"):format(st.id, st.first, st.last, st.snapshot))
end
assert(store:stream(chat).last == 1000 and store:stream(chat).first == 901)
store:close()
os.execute("rm -rf " .. dir)
print("demo ok")
