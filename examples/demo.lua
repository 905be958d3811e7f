-- examples/demo.lua - a small swarm on this machine: three nodes over
-- mutual TLS on loopback, A <- B <- C, where C never meets A. Events that
-- A writes reach C through B, each batch verified against A's signature;
-- C's application sees them live. Run with `make demo`: exits 0 when
-- every chain and signature checks out, 1 otherwise; the temporary folder
-- (keys included) is removed on every way out.
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath
local odo = require "odo"
local core = require "odo.core"
local uv = require "luv"

local dir = os.tmpname()
os.remove(dir)
local nodes, names = {}, {}

local function cleanup()
  for _, n in ipairs(nodes) do pcall(n.close, n) end
  nodes = {}
  os.execute("rm -rf '" .. dir .. "'")
end

-- every failure ends here: nodes closed, folder removed, exit status 1
local function fail(why)
  cleanup()
  io.stderr:write("demo failed: " .. tostring(why) .. "\n")
  os.exit(1)
end

-- runs fn, turning an error into a failed demo (a luv callback that
-- raises would otherwise end the process without the clean-up)
local function guard(fn)
  return function(...)
    local ok, err = xpcall(fn, debug.traceback, ...)
    if not ok then fail(err) end
  end
end

guard(function() assert(core.mkdirs(dir .. "/ca", 448)) end)()

-- certificates: a CA and one Ed25519 key per node (as `odo cert` does)
guard(function() assert(core.cert_make_ca { cert = dir .. "/ca/ca.pem", key = dir .. "/ca/ca.key" }) end)()
local function tls_for(name)
  assert(core.mkdirs(dir .. "/" .. name, 448))
  local home = dir .. "/" .. name
  local c = { ca = dir .. "/ca/ca.pem", cert = home .. "/node.pem", key = home .. "/node.key" }
  assert(core.cert_make_node { ca_cert = c.ca, ca_key = dir .. "/ca/ca.key", cert = c.cert, key = c.key, name = name })
  return c
end

local handler_error
local picture -- the swarm's picture, once drawn
local function label(stream) return stream:sub(1, 8) .. (stream:match("/.*") or "") end
local function start(name, peers)
  local node = assert(odo.node {
    dir = dir .. "/" .. name, tls = tls_for(name), listen = "127.0.0.1:0", peers = peers,
    -- an error in a handler fails the demo (checked by the ticker below)
    on_error = function(e) handler_error = handler_error or e end,
  })
  names[node.id] = name
  node:on("peer", function(p, old, new, reason)
    print(("  %s: peer %s %s -> %s (%s)"):format(name, names[p.id] or "?", old, new, reason))
  end)
  nodes[#nodes + 1] = node
  return node
end

print("starting A, B (knows A) and C (knows B)")
local a, b, c
guard(function()
  a = start("A")
  b = start("B", { "127.0.0.1:" .. a.listen.port })
  c = start("C", { "127.0.0.1:" .. b.listen.port })

  -- A writes its own stream and a named one
  assert(a:append(nil, {
    { type = "joined", data = "alice" },
    { type = "said", data = "hello from A" },
  }))
  assert(a:append(a:stream_id("sensors"), { { type = "temp", data = "21.5" } }))
end)()

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

-- The swarm as `odo status --dot` draws it, the three nodes at once:
-- build/swarm.dot, rendered as build/swarm.svg when Graphviz is installed.
local function write_picture()
  local Control = require "odo.control"
  local statuses = {}
  for _, n in ipairs(nodes) do
    local st = n:status()
    statuses[#statuses + 1] = Control.status_table(st.id, st.listen, st.peers, st.streams, st.upstreams)
  end
  local fh = io.open("build/swarm.dot", "w")
  if not fh then return end
  fh:write(require("odo.cli.status").dot(statuses, names))
  fh:close()
  if os.execute("command -v dot >/dev/null 2>&1") and os.execute("dot -Tsvg build/swarm.dot -o build/swarm.svg") then
    picture = "build/swarm.svg"
  end
end

local function finish(ok, why)
  if not ok then fail(why) end
  for _, n in ipairs(nodes) do n:close() end
  nodes = {}
  require("odo.adapter.luv").shutdown()
end

local step = 0
local ticker = uv.new_timer()
ticker:start(100, 100, guard(function()
  step = step + 1
  if handler_error then
    ticker:close()
    return finish(false, "a handler failed: " .. tostring(handler_error))
  end
  if step == 5 then
    -- live: A writes more while everyone is connected
    assert(a:append(nil, { type = "said", data = "written while C was listening" }))
  end
  local st = c.store:stream(a.id)
  if st and st.last == 3 and seen == 4 then
    ticker:close()
    local broken = {}
    for _, s in ipairs(c:status().streams) do
      local verified = c.store:verify(s.id)
      if not verified then broken[#broken + 1] = label(s.id) end
      print(("C holds %-24s revisions %d..%d, upstream %s, chain %s"):format(
        label(s.id), s.first, s.last, names[s.upstream] or "-",
        verified and "verified" or "BROKEN"))
    end
    local v = require("odo.verify").run(c.store)
    print("signatures checked by C (A's key came with the catalogue): " .. (v.ok and "all good" or "PROBLEMS"))
    if #broken > 0 then return finish(false, "broken chain: " .. table.concat(broken, ", ")) end
    write_picture()
    finish(v.ok, "signature verification")
  elseif step > 200 then
    ticker:close()
    finish(false, "C did not receive A's events within 20 s")
  end
end))

guard(uv.run)()
cleanup()
print("demo ok")
if picture then print("the swarm's picture (odo status --dot, rendered by Graphviz): " .. picture) end
