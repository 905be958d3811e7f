-- DHT discovery end to end: `odo run` processes inside a network
-- namespace this spec makes (only loopback up; removed, with every
-- process in it, after each test), a Debian `dhtnode` as bootstrap node
-- where a test wants one, no seeds and no DNS. Timings are shortened by a
-- --config file (values live 4 s); OpenDHT's multicast peer discovery
-- stays off (dhtnode's -D and odo's peer_discovery are not given).
local H = require "helper"
local N = require "dht_netns"

local NET = 1868853041 -- odo's default network id (0x6f646f31)

-- the quick timings, and DHT values that live 4 s
local CONFIG = H.QUICK_RUN_CONFIG:gsub("policy = {", [[policy = {
  dht_value_expiry_ms = 4000,
  dht_announce_every_ms = 1000,
  dht_lookup_every_ms = 1000,
  dht_bootstrap_backoff = { 300, 600 },]], 1)

describe("DHT discovery (odo run --dht-*)", function()
  local w = H.odo_swarm(CONFIG)
  local ns
  local n = 0
  setup(w.setup)
  teardown(w.teardown)
  before_each(function() ns = N.new("dht") end)
  after_each(function() ns.close() end)

  local function dhtnode(port, network)
    n = n + 1
    local log = ("%s/dhtnode-%d.log"):format(w.tmp, n)
    return { pid = ns.spawn(("dhtnode -s -n %d -p %d"):format(network or NET, port), log), log = log }
  end

  -- `odo run` for node `name` in the namespace; opts: port (TCP), topic,
  -- bootstrap (array of UDP ports), network, dht_port.
  local function run(name, opts)
    n = n + 1
    local c = w.certs(name)
    local p = { name = name, dir = ("%s/%s-%d"):format(w.tmp, name, n), port = opts.port }
    p.log = p.dir .. ".log"
    local args = { ("'%s' run --dir '%s' --listen %s:%d --ca '%s' --cert '%s' --key '%s' --config '%s'")
      :format(H.odo, p.dir, opts.listen_host or "127.0.0.1", opts.port, c.ca, c.cert, c.key, w.config),
      "--dht-topic " .. (opts.topic or "swarm") }
    for _, b in ipairs(opts.bootstrap or {}) do args[#args + 1] = "--dht-bootstrap 127.0.0.1:" .. b end
    if opts.network then args[#args + 1] = "--dht-network " .. opts.network end
    if opts.dht_port then args[#args + 1] = "--dht-port " .. opts.dht_port end
    p.pid = ns.spawn(table.concat(args, " "), p.log)
    return p
  end

  local function status(p) return H.status(p.dir) or { peers = {}, streams = {}, discovery = {} } end

  local function active(p)
    local c = 0
    for _, q in ipairs(status(p).peers) do
      if q.state == "active" then c = c + 1 end
    end
    return c
  end

  local function dht(p) return status(p).discovery[1] or {} end

  local function all_active(list, count)
    return H.wait(function()
      for _, p in ipairs(list) do
        if active(p) < count then return false end
      end
      return true
    end, 30000)
  end

  it("three nodes find each other through dhtnode and replicate; other topics and networks find none", function()
    dhtnode(4222)
    local a = run("a", { port = 5001, bootstrap = { 4222 } })
    local b = run("b", { port = 5002, bootstrap = { 4222 } })
    local c = run("c", { port = 5003, bootstrap = { 4222 } })
    local other = run("d", { port = 5004, bootstrap = { 4222 }, topic = "another-topic" })
    local stranger = run("e", { port = 5005, bootstrap = { 4222 }, network = 99 })
    assert.is_true(all_active({ a, b, c }, 2), H.logs({ a, b, c }))
    assert.truthy(H.read_file(a.log):find("network id " .. NET, 1, true), H.read_file(a.log))
    -- the dials came from the DHT (whoever dialled first)
    assert.truthy(H.logs({ a, b, c }):find("discovered: dht", 1, true), H.logs({ a, b, c }))
    local out, ok = H.odo_cmd("append", "--dir", a.dir, "over the DHT")
    assert.is_true(ok, out)
    local id = status(a).id
    assert.is_true(H.wait(function()
      for _, p in ipairs({ b, c }) do
        local found = false
        for _, s in ipairs(status(p).streams) do
          if s.id == id and s.last == 1 then found = true end
        end
        if not found then return false end
      end
      return true
    end, 20000), H.logs({ a, b, c }))
    -- a may have been dialled by one before it found it: wait for both
    assert.is_true(H.wait(function() return dht(a).candidates == 2 end, 20000), H.logs({ a }))
    assert.is_true(H.wait(function() return dht(a).state == "connected" end, 20000), H.logs({ a }))
    local d = dht(a)
    assert.is_true(d.good + d.dubious >= 1)
    assert.is_number(d.last_announce)
    -- the status table shows the DHT's own state and when it announced
    local text = H.odo_cmd("status", "--dir", a.dir)
    assert.matches("\n  dht +2 +%d+s ago +connected, %d+ good/%d+ dubious nodes, announced %d+s ago +", text)
    assert.equal(NET, d.network)
    -- a few lookups later, the node on another topic and the one on
    -- another network id have found nobody
    H.wait(function() return false end, 3000)
    for _, port in ipairs({ 5004, 5005 }) do
      assert.is_nil(H.logs({ a, b, c }):find(("127.0.0.1:%d none -> connecting (discovered: dht)"):format(port), 1,
        true), H.logs({ a, b, c }))
    end
    assert.equal(0, active(other), H.logs({ other }))
    assert.equal(0, dht(other).taken)
    -- on the same DHT (it knows DHT nodes), another topic
    assert.is_true(H.wait(function() return dht(other).good + dht(other).dubious >= 1 end, 30000), H.logs({ other }))
    assert.equal(0, active(stranger), H.logs({ stranger }))
    assert.equal(0, dht(stranger).taken)
    assert.truthy(H.read_file(stranger.log):find("network id 99", 1, true))
  end)

  it("a node that stops is no longer reported once its value expired", function()
    dhtnode(4222)
    local a = run("a", { port = 5001, bootstrap = { 4222 } })
    local b = run("b", { port = 5002, bootstrap = { 4222 } })
    local c = run("c", { port = 5003, bootstrap = { 4222 } })
    assert.is_true(all_active({ a, b, c }, 2), H.logs({ a, b, c }))
    assert.is_true(H.wait(function() return dht(a).candidates == 2 and dht(b).candidates == 2 end, 20000),
      H.logs({ a, b }))
    H.kill(c.pid, "TERM")
    assert.is_true(H.wait(function() return not H.alive(c.pid) end, 10000))
    assert.is_true(H.wait(function() return dht(a).candidates == 1 and dht(b).candidates == 1 end, 20000),
      H.logs({ a, b }))
    -- a newcomer finds a and b, never c (whose values dhtnode still holds)
    local f = run("f", { port = 5006, bootstrap = { 4222 } })
    assert.is_true(all_active({ f }, 2), H.logs({ f }))
    assert.is_true(H.wait(function() return dht(f).candidates == 2 end, 20000), H.logs({ f }))
    H.wait(function() return false end, 2500) -- a few more lookups
    assert.equal(2, dht(f).candidates)
    assert.is_nil(H.read_file(f.log):find("127.0.0.1:5003 none -> connecting (discovered: dht)", 1, true),
      H.read_file(f.log))
    -- dhtnode, which does not know our value type, still holds c's value:
    -- f finds it and drops it by the expiry it carries
    assert.is_true(H.wait(function() return dht(f).stale > 0 end, 10000), H.logs({ f }))
  end)

  it("a bootstrap node that is down at start: a clear line, retries, then joins when it is up", function()
    local a = run("a", { port = 5001, bootstrap = { 4222 } })
    local b = run("b", { port = 5002, bootstrap = { 4222 } })
    assert.is_true(H.wait(function()
      return H.read_file(a.log):find("bootstrap node 127.0.0.1:4222 does not answer; retrying in", 1, true) ~= nil
    end, 20000), H.read_file(a.log))
    assert.equal(0, active(a))
    dhtnode(4222)
    assert.is_true(all_active({ a, b }, 1), H.logs({ a, b }))
    assert.is_true(H.wait(function()
      return H.read_file(a.log):find("bootstrap node 127.0.0.1:4222 answered", 1, true) ~= nil
    end, 10000), H.read_file(a.log))
  end)

  it("nodes bootstrap from each other with no dhtnode at all; one on 0.0.0.0 announces what peers see", function()
    local a = run("a", { port = 5001, dht_port = 4300 })
    local b = run("b", { port = 5002, dht_port = 4301, bootstrap = { 4300 }, listen_host = "0.0.0.0" })
    local c = run("c", { port = 5003, bootstrap = { 4301 } })
    assert.is_true(all_active({ a, b, c }, 2), H.logs({ a, b, c }))
    assert.truthy(H.read_file(a.log):find("no bootstrap node", 1, true))
    assert.is_true(H.wait(function()
      return H.read_file(b.log):find("dht: announcing 127.0.0.1", 1, true) ~= nil
    end, 10000), H.read_file(b.log))
    H.kill(b.pid, "TERM")
    assert.is_true(H.wait(function() return not H.alive(b.pid) end, 10000))
    assert.truthy(H.read_file(b.log):find("dht: stopped announcing; values already stored expire within 4 s", 1,
      true), H.read_file(b.log))
  end)

  it("refuses --dht options without --dht-topic, and a DHT port in use", function()
    local c = w.certs("a")
    local out, ok = H.run(ns.exec(("'%s' run --dir '%s/x' --listen 127.0.0.1:5001 --ca '%s' --cert '%s' --key '%s'"
      .. " --dht-network 5"):format(H.odo, w.tmp, c.ca, c.cert, c.key)))
    assert.is_false(ok)
    assert.truthy(out:find("--dht-topic NAME is required", 1, true), out)
    local a = run("a", { port = 5001, dht_port = 4300 })
    assert.is_true(H.wait(function() return dht(a).state ~= nil end, 10000), H.read_file(a.log))
    out, ok = H.run(ns.exec(("'%s' run --dir '%s/y' --listen 127.0.0.1:5002 --ca '%s' --cert '%s' --key '%s'"
      .. " --dht-topic t --dht-port 4300"):format(H.odo, w.tmp, c.ca, c.cert, c.key)))
    assert.is_false(ok)
    assert.truthy(out:find("cannot bind the DHT's UDP socket", 1, true), out)
  end)
end)
