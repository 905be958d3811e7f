-- mDNS end to end: `odo run --mdns` processes in two network namespaces
-- joined by a veth pair (multicast stays inside them), and python3-zeroconf
-- (an implementation nobody here wrote) on either side. Real sockets, real
-- time, generous timeouts; timings shortened by a --config file.
local H = require "helper"
local N = require "netns"

local PYTHON = "/usr/bin/python3"

describe("odo run --mdns", function()
  local tmp, pki, net, n
  local quick -- the usual flags: --mdns and the quick timings
  setup(function()
    tmp = H.tmpdir()
    pki = H.pki(tmp)
    H.write_file(tmp .. "/fast.lua", H.QUICK_RUN_CONFIG)
    quick = ("--mdns --config '%s'"):format(tmp .. "/fast.lua")
    n = 0
  end)
  teardown(H.cleanup)
  before_each(function() net = N.pair("mdns") end)
  after_each(function()
    -- kills whatever still runs in the namespaces, then deletes them
    net.destroy()
    assert.is_false(N.exists(net.a.name))
    assert.is_false(N.exists(net.b.name))
  end)

  -- starts `odo run` for node `name` in namespace `side`, with `flags`
  -- (default: quick)
  local function run(side, name, port, flags)
    n = n + 1
    pki[name] = pki[name] or pki.node(name)
    local c = pki[name]
    local dir = tmp .. "/" .. name .. "-" .. n
    local cmd = ("'%s' run --dir '%s' --listen %s:%d --ca '%s' --cert '%s' --key '%s' %s")
      :format(H.odo, dir, side.ip, port, c.ca, c.cert, c.key, flags or quick)
    local p = { dir = dir, log = dir .. ".log", port = port, name = name }
    p.pid = H.spawn(N.exec(side, cmd), p.log)
    return p
  end

  local function logged(p, pattern)
    return H.read_file(p.log):find(pattern) ~= nil
  end

  local function node_id(p) return H.running_id(p.dir) end

  local function active(p, id)
    local st = H.status(p.dir)
    for _, q in ipairs(st and st.peers or {}) do
      if q.state == "active" and (not id or q.id == id) then return true end
    end
    return false
  end

  local function last_of(p, id)
    local st = H.status(p.dir)
    for _, s in ipairs(st and st.streams or {}) do
      if s.id == id then return math.tointeger(s.last) end
    end
  end

  local function stop(p)
    H.kill(p.pid, "TERM")
    return H.wait(function() return not H.alive(p.pid) end, 10000)
  end

  it("two nodes with no seeds find each other and replicate", function()
    local a = run(net.a, "a", 7001)
    local b = run(net.b, "b", 7002)
    local aid, bid = node_id(a), node_id(b)
    assert.is_truthy(aid and bid, H.read_file(a.log) .. H.read_file(b.log))
    assert.is_true(H.wait(function() return active(a, bid) and active(b, aid) end, 30000),
      H.read_file(a.log) .. "\n" .. H.read_file(b.log))
    assert.is_true(logged(a, "mdns: found " .. bid:sub(1, 16) .. " at 10%.77%.0%.2:7002"), H.read_file(a.log))
    local out, ok = H.odo_cmd("append", "--dir", a.dir, "one", "two", "three")
    assert.is_true(ok, out)
    assert.is_true(H.wait(function() return last_of(b, aid) == 3 end, 20000), H.read_file(b.log))
  end)

  it("nodes of different swarm names hear each other and never connect", function()
    local a = run(net.a, "a", 7001, quick .. " --mdns-swarm red")
    local b = run(net.b, "b", 7002, quick .. " --mdns-swarm blue")
    assert.is_true(H.wait(function()
      return logged(a, "mdns: ignored odo%-%x+ at 10%.77%.0%.2:7002 %(swarm 'blue', not 'red'%)")
        and logged(b, "mdns: ignored odo%-%x+ at 10%.77%.0%.1:7001 %(swarm 'red', not 'blue'%)")
    end, 30000), H.read_file(a.log) .. "\n" .. H.read_file(b.log))
    -- and the same two with the same name do connect (the setup works)
    assert.is_false(logged(a, "connecting"), H.read_file(a.log))
    assert.is_false(logged(b, "connecting"), H.read_file(b.log))
    assert.is_false(logged(a, "mdns: found"))
    assert.is_true(stop(b))
    local c = run(net.b, "c", 7003, quick .. " --mdns-swarm red")
    assert.is_true(H.wait(function() return logged(a, "mdns: found %x+ at 10%.77%.0%.2:7003") end, 30000),
      H.read_file(a.log))
    assert.is_true(H.wait(function() return active(c) end, 30000), H.read_file(c.log))
  end)

  it("a node that stops cleanly is forgotten by its goodbye", function()
    local a = run(net.a, "a", 7001)
    local b = run(net.b, "b", 7002)
    local bid = node_id(b)
    assert.is_true(H.wait(function() return active(a, bid) end, 30000), H.read_file(a.log))
    assert.is_true(stop(b))
    assert.is_true(logged(b, "stopped"), H.read_file(b.log))
    -- records live 120 s (a cache forgets them after 68 s at the
    -- earliest): only the goodbye can make it go within the wait
    assert.is_true(H.wait(function() return logged(a, "mdns: gone " .. bid:sub(1, 16)) end, 20000),
      H.read_file(a.log))
  end)

  it("finds a service published by python3-zeroconf", function()
    local a = run(net.a, "a", 7001)
    local fake = ("5a"):rep(32)
    local py = net.b.name
    local log = tmp .. "/zc-publish.log"
    H.spawn(N.exec(net.b, ("%s '%s/spec/tools/mdns_zeroconf.py' publish %s pyzc 7100 %s odo")
      :format(PYTHON, H.root, net.b.ip, fake)), log)
    assert.is_true(H.wait(function() return H.read_file(log):find("PUBLISHED") end, 20000), py .. H.read_file(log))
    assert.is_true(H.wait(function() return logged(a, "mdns: found 5a5a5a5a5a5a5a5a at 10%.77%.0%.2:7100 %(pyzc%)") end,
      30000), H.read_file(a.log) .. "\n" .. H.read_file(log))
  end)

  it("python3-zeroconf browsing finds the node, and sees its goodbye", function()
    local a = run(net.a, "a", 7001, quick .. " --mdns-swarm lab")
    local aid = node_id(a)
    assert.is_truthy(aid, H.read_file(a.log))
    local log = tmp .. "/zc-browse.log"
    local pid = H.spawn(N.exec(net.b, ("%s '%s/spec/tools/mdns_zeroconf.py' browse %s %s")
      :format(PYTHON, H.root, net.b.ip, aid)), log)
    assert.is_true(H.wait(function() return H.read_file(log):find("FOUND") end, 30000),
      H.read_file(log) .. "\n" .. H.read_file(a.log))
    assert.truthy(H.read_file(log):find("FOUND 10.77.0.1 7001 " .. aid .. " lab", 1, true), H.read_file(log))
    assert.is_true(stop(a))
    assert.is_true(H.wait(function() return H.read_file(log):find("REMOVED odo%-") end, 20000), H.read_file(log))
    assert.is_true(H.wait(function() return not H.alive(pid) end, 10000))
  end)

  it("answers a legacy unicast query by unicast to its port, TTL at most 10 s", function()
    local a = run(net.a, "a", 7001)
    assert.is_truthy(node_id(a), H.read_file(a.log))
    local out, ok = H.run(N.exec(net.b, ("%s '%s/spec/tools/mdns_zeroconf.py' legacy %s")
      :format(PYTHON, H.root, net.b.ip)))
    assert.is_true(ok, out)
    local from, id, q, name, typ, ttl, target = out:match("ANSWER (%S+) (%S+) (%S+) (%S+) (%d+) (%d+) (%S+)")
    assert.same({ "10.77.0.1", "0x4242", "_odo._tcp.local.", "_odo._tcp.local.", "12" }, { from, id, q, name, typ },
      out)
    assert.is_true(tonumber(ttl) > 0 and tonumber(ttl) <= 10, out)
    assert.matches("^odo%-%x+%._odo%._tcp%.local%.$", target)
  end)

  it("a node killed without a goodbye is forgotten when its records expire", function()
    -- records of 4 s: kept until 4 / 2 + 8 s after the last refresh
    local conf = H.write_file(tmp .. "/short-ttl.lua", H.QUICK_RUN_CONFIG:gsub("^return {",
      'return { discovery = { require("odo.discovery").mdns { ttl = 4,\n'
      .. '  log = function(line) io.stderr:write(line, "\\n") end } },'))
    -- (no --mdns: the one source is the config's)
    local a = run(net.a, "a", 7001, "--config '" .. conf .. "'")
    local b = run(net.b, "b", 7002, "--config '" .. conf .. "'")
    local bid = node_id(b)
    assert.is_true(H.wait(function() return active(a, bid) end, 30000), H.read_file(a.log))
    -- records refreshed past their TTL: still known
    H.wait(function() return false end, 12000)
    assert.is_false(logged(a, "mdns: gone"), H.read_file(a.log))
    H.kill(b.pid, "KILL")
    assert.is_true(H.wait(function() return logged(a, "mdns: gone " .. bid:sub(1, 16)) end, 40000),
      H.read_file(a.log))
  end)
end)
