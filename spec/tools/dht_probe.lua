-- spec/tools/dht_probe.lua CASE - drives odo.dht in one process, inside
-- the network namespace spec/dht_spec.lua made (`ip netns exec`), and
-- prints "ok NAME ..." or "not ok NAME: why" lines; exits 1 on a failure.
-- Run from the checkout; ODO_CPATH selects the build (the ASan one in
-- `make test-asan`, where this also asks LeakSanitizer about our leaks).
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = (os.getenv("ODO_CPATH") or "build/?.so") .. ";build/?.so;" .. package.cpath
local uv = require "luv"
local dht = require "odo.dht"

local failed = false
local function check(name, ok, why)
  if ok then print("ok " .. name) else
    print("not ok " .. name .. ": " .. tostring(why))
    failed = true
  end
end

local function threads()
  local n = 0
  local req = uv.fs_scandir("/proc/" .. uv.os_getpid() .. "/task")
  while req and uv.fs_scandir_next(req) do n = n + 1 end
  return n
end

local NET = 4242
local ID = string.rep("5a", 32)

-- Polls the nodes' events into `seen` until cond() or ~20 s pass.
local function drive(nodes, seen, cond)
  for _ = 1, 400 do
    for name, n in pairs(nodes) do
      for _, ev in ipairs(n:poll()) do
        seen[name] = seen[name] or {}
        table.insert(seen[name], ev)
      end
    end
    if cond() then return true end
    uv.sleep(50)
  end
  return false
end

local function connected_pair()
  local a = assert(dht.new { network = NET, expiry_ms = 60000 })
  local b = assert(dht.new { network = NET, expiry_ms = 60000 })
  assert(b:bootstrap("127.0.0.1", a:port()))
  return a, b
end

local function find(evs, pred)
  for _, ev in ipairs(evs or {}) do
    if pred(ev) then return ev end
  end
end

local cases = {}

-- A value of ours is decoded; values that are not ours are counted and
-- dropped, never handed to Lua.
function cases.values()
  local a, b = connected_pair()
  local seen = {}
  a:listen("topic")
  b:announce("topic", "10.1.2.3", 4567, ID, 60000)
  local good = string.pack(">c4c32I2I8I4s1", "ODO1", string.rep("\1", 32), 4000, 1, 60000, "10.0.0.1")
  b:put_raw("topic", dht.VALUE_TYPE, "short")                                  -- wrong size
  b:put_raw("topic", dht.VALUE_TYPE, "XXXX" .. good:sub(5))                    -- wrong magic
  b:put_raw("topic", dht.VALUE_TYPE, good:sub(1, -2) .. "\0")                  -- a host that is no host
  b:put_raw("topic", dht.VALUE_TYPE, good .. string.rep("x", 50000))           -- huge
  b:put_raw("topic", 0, good)                                                   -- another type
  -- docs/PROTOCOL.md's test vector
  local vector = ("4f444f31" .. string.rep("01", 32) .. "0fa00000019af232b200000927c00831302e302e302e31")
    :gsub("..", function(x) return string.char(tonumber(x, 16)) end)
  b:put_raw("topic", dht.VALUE_TYPE, vector)
  local records = {}
  local ok = drive({ a = a, b = b }, seen, function()
    for _, ev in ipairs(seen.a or {}) do
      for _, r in ipairs(ev.kind == "values" and ev.values or {}) do records[r.host] = r end
    end
    return records["10.1.2.3"] and records["10.0.0.1"] and a:stats().bad_values >= 5
  end)
  check("values: ours found, the five others counted", ok,
    ("bad_values %d, events %d"):format(a:stats().bad_values, #(seen.a or {})))
  local r, v = records["10.1.2.3"] or {}, records["10.0.0.1"] or {}
  check("values: decoded", r.port == 4567 and r.id == ID and r.ttl_ms == 60000
    and math.abs(r.issued_ms - dht.now_ms()) < 60000, tostring(r.host) .. ":" .. tostring(r.port))
  check("values: the documented vector", v.port == 4000 and v.id == string.rep("01", 32)
    and v.issued_ms == 1765000000000 and v.ttl_ms == 600000, tostring(v.host))
  check("values: status and pings reported", find(seen.b, function(e) return e.kind == "ping" and e.ok end)
    and find(seen.b, function(e) return e.kind == "status" and e.status == "connected" end), "no ping/status events")
  a:shutdown()
  b:shutdown()
  check("shutdown: the event comes", drive({ a = a, b = b }, seen, function()
    return find(seen.a, function(e) return e.kind == "shutdown" end)
      and find(seen.b, function(e) return e.kind == "shutdown" end)
  end), "no shutdown event")
  a:close()
  b:close()
  check("closed: use raises", not pcall(a.port, a), "a:port() after close did not raise")
end

-- Nodes closed in the middle of lookups, without waiting for OpenDHT's
-- shutdown (and with a shutdown begun), leave no thread behind.
function cases.threads()
  local before = threads()
  for round = 1, 3 do
    local a, b = connected_pair()
    local seen = {}
    drive({ a = a, b = b }, seen, function()
      return find(seen.b, function(e) return e.kind == "status" and e.status == "connected" end)
    end)
    b:announce("t", "10.0.0.1", 4000, ID, 60000)
    for i = 1, 20 do a:lookup("t" .. i) end
    a:listen("t")
    if round == 2 then a:shutdown() end
    a:close() -- mid-lookup
    b:lookup("t")
    if round ~= 3 then b:close() end -- round 3: left to __gc
    collectgarbage()
    collectgarbage()
  end
  local after = threads()
  check("threads: none left behind", after == before, ("%d threads before, %d after"):format(before, after))
end

-- A bootstrap address that does not answer gives a failed ping.
function cases.ping()
  local a = assert(dht.new { network = NET })
  assert(a:bootstrap("127.0.0.1", 9)) -- discard: nothing listens in the namespace
  local seen = {}
  check("ping: a dead bootstrap reports failure", drive({ a = a }, seen, function()
    return find(seen.a, function(e) return e.kind == "ping" end)
  end) and not find(seen.a, function(e) return e.kind == "ping" end).ok, "no failed ping")
  local n, err, name = a:bootstrap("no-such-host.invalid", 4222)
  check("ping: unresolvable host", n == nil and name == "ENOTFOUND" and err:find("no%-such%-host"), tostring(err))
  local taken, err2, name2 = dht.new { network = NET, port = a:port() }
  check("new: a port in use", taken == nil and name2 == "EADDRINUSE" and err2:find("cannot bind"), tostring(err2))
  check("new: a bad bind address", select(3, dht.new { network = NET, bind = "300.1.1.1" }) == "EINVAL", "not EINVAL")
  a:close()
  a:close() -- idempotent
end

-- The discovery source on a real node: a flood of well-formed values
-- (other node ids, addresses in a network nobody reaches) is capped per
-- lookup and per minute; garbage is counted; a clean stop leaves no
-- thread.
function cases.caps()
  local odo = require "odo"
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute(("mkdir -p %s && bin/odo cert ca --out %s/ca >/dev/null && bin/odo cert node --ca %s/ca"
    .. " --out %s/n >/dev/null"):format(dir, dir, dir, dir)))
  local before = threads()
  local node = assert(odo.node { dir = dir .. "/node", listen = "127.0.0.1:0",
    tls = { ca = dir .. "/ca/ca.pem", cert = dir .. "/n/node.pem", key = dir .. "/n/node.key" },
    policy = { dht_max_candidates_per_lookup = 5, dht_max_candidates_per_minute = 8, dht_lookup_every_ms = 300 },
    on_error = function(e) print("# node error: " .. tostring(e)) end })
  local writer = assert(dht.new { network = 77 })
  local src = assert(require("odo.discovery.dht").new { node = node, topic = "flood", network = 77,
    bootstrap = { "127.0.0.1:" .. writer:port() }, log = function(m) print("# " .. m) end })
  node:add_source(src)
  local now = dht.now_ms()
  for i = 1, 20 do
    writer:put_raw("flood", dht.VALUE_TYPE, string.pack(">c4c32I2I8I4s1", "ODO1", string.rep(string.char(i), 32),
      4000, now, 60000, "10.9.0." .. i))
  end
  writer:put_raw("flood", dht.VALUE_TYPE, "garbage")
  local deadline = uv.now() + 20000
  local st
  repeat
    uv.run("once")
    for _ in ipairs(writer:poll()) do end
    st = src:status()
  until (st.taken >= 8 and st.capped >= 12 and st.bad_values >= 1) or uv.now() > deadline
  check("caps: 8 taken in the minute, the rest capped", st.taken == 8 and st.capped >= 12,
    ("taken %d, capped %d"):format(st.taken, st.capped))
  check("caps: garbage counted", st.bad_values >= 1, "bad_values " .. st.bad_values)
  check("caps: status", st.state == "connected" and st.candidates == 8 and #st.found == 8 and st.found_at
    and st.last_announce
    and st.bootstrap["127.0.0.1:" .. writer:port()] == "answered", require("odo.control").encode(st))
  node:close()
  writer:close()
  uv.run()
  require("odo.adapter.luv").shutdown()
  uv.run()
  check("caps: stopped, no thread left", src.dht == nil and threads() == before,
    ("%d threads before, %d after"):format(before, threads()))
  os.execute("rm -rf " .. dir)
end

local which = arg[1]
assert(cases[which], "usage: dht_probe.lua values|threads|ping|caps")
cases[which]()
collectgarbage()
collectgarbage()
local ok_core, core = pcall(require, "odo.core")
if ok_core and core._leak_check then check("leaks: none of ours", core._leak_check(), "LeakSanitizer report above") end
os.exit(failed and 1 or 0, true) -- closes the state: unloads odo.dht
