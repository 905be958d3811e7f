-- examples/demo.lua - a small swarm on this machine: three nodes over
-- mutual TLS on loopback, A <- B <- C, where C never meets A. Events that
-- A writes reach C through B, each batch verified against A's signature;
-- C's application sees them live. Run with `make demo`.
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath
local odo = require "odo"
local core = require "odo.core"
local uv = require "luv"

local dir = os.tmpname()
os.remove(dir)
assert(core.mkdirs(dir .. "/ca", 448))

-- certificates: a CA and one Ed25519 key per node (as `odo cert` does)
assert(core.cert_make_ca { cert = dir .. "/ca/ca.pem", key = dir .. "/ca/ca.key" })
local function tls_for(name)
  assert(core.mkdirs(dir .. "/" .. name, 448))
  local home = dir .. "/" .. name
  local c = { ca = dir .. "/ca/ca.pem", cert = home .. "/node.pem", key = home .. "/node.key" }
  assert(core.cert_make_node { ca_cert = c.ca, ca_key = dir .. "/ca/ca.key", cert = c.cert, key = c.key, name = name })
  return c
end

local nodes, names = {}, {}
local function label(stream) return stream:sub(1, 8) .. (stream:match("/.*") or "") end
local function start(name, peers)
  local node = assert(odo.node {
    dir = dir .. "/" .. name, tls = tls_for(name), listen = "127.0.0.1:0", peers = peers,
  })
  names[node.id] = name
  node:on("peer", function(p, old, new, reason)
    print(("  %s: peer %s %s -> %s (%s)"):format(name, names[p.id] or "?", old, new, reason))
  end)
  nodes[#nodes + 1] = node
  return node
end

print("starting A, B (knows A) and C (knows B)")
local a = start("A")
local b = start("B", { "127.0.0.1:" .. a.listen.port })
local c = start("C", { "127.0.0.1:" .. b.listen.port })

-- A writes its own stream and a named one
a:append(nil, {
  { type = "joined", data = "alice" },
  { type = "said", data = "hello from A" },
})
a:append(a:stream_id("sensors"), { { type = "temp", data = "21.5" } })

-- C's application: every stream, catch-up then live
local seen = 0
c:subscribe(nil, 1, function(batch)
  for _, ev in ipairs(batch) do
    seen = seen + 1
    print(("  C received %s #%d %s: %s"):format(label(batch.stream), ev.rev, ev.type, ev.data))
  end
end)
c:on("upstream", function(stream, new)
  print(("  C follows %s through %s"):format(label(stream), names[new] or "?"))
end)

local function finish(ok, why)
  for _, n in ipairs(nodes) do n:close() end
  require("odo.adapter.luv").shutdown()
  if not ok then
    print("demo failed: " .. why)
    os.exit(1)
  end
end

local step = 0
local ticker = uv.new_timer()
ticker:start(100, 100, function()
  step = step + 1
  if step == 5 then
    -- live: A writes more while everyone is connected
    a:append(nil, { type = "said", data = "written while C was listening" })
  end
  local st = c.store:stream(a.id)
  if st and st.last == 3 and seen == 4 then
    ticker:close()
    for _, s in ipairs(c:status().streams) do
      print(("C holds %-24s revisions %d..%d, upstream %s, chain %s"):format(
        label(s.id), s.first, s.last, names[s.upstream] or "-",
        c.store:verify(s.id) and "verified" or "BROKEN"))
    end
    local v = require("odo.verify").run(c.store)
    print("signatures checked by C (A's key came with the catalogue): " .. (v.ok and "all good" or "PROBLEMS"))
    finish(v.ok, "verification")
  elseif step > 200 then
    ticker:close()
    finish(false, "C did not receive A's events within 20 s")
  end
end)

uv.run()
os.execute("rm -rf " .. dir)
print("demo ok")
