-- Network faults between two hosts: each node runs in a network namespace
-- this spec makes (joined by a veth pair, addresses only inside them), and
-- nftables drops traffic between them: a partition while both sides
-- write, then healing; 10% loss each way; a one-way partition; a link that
-- flaps every second. After each fault both copies converge, identical and
-- verified. Everything made here is removed afterwards, also on failure.
local H = require "helper"


local tag = tostring(math.floor(require("luv").os_getpid() % 100000))
local NS = { a = "odo-pa-" .. tag, b = "odo-pb-" .. tag }
local SUBNET = "10.199." .. math.floor(tonumber(tag) % 250) .. "."
local ADDR = { a = SUBNET .. "1", b = SUBNET .. "2" }
local PORT = 7411

local function sh(cmd)
  local out, ok = H.run(cmd .. " 2>&1")
  assert(ok, cmd .. "\n" .. out)
  return out
end

local function in_ns(who, cmd) return ("ip netns exec %s %s"):format(NS[who], cmd) end

local function make_hosts()
  sh(("ip netns add %s && ip netns add %s"):format(NS.a, NS.b))
  sh(("ip link add va%s netns %s type veth peer name vb%s netns %s"):format(tag, NS.a, tag, NS.b))
  for who, dev in pairs({ a = "va" .. tag, b = "vb" .. tag }) do
    sh(in_ns(who, ("ip addr add %s/24 dev %s"):format(ADDR[who], dev)))
    sh(in_ns(who, ("ip link set %s up"):format(dev)))
    sh(in_ns(who, "ip link set lo up"))
  end
end

local function remove_hosts()
  os.execute(("ip netns del %s 2>/dev/null; ip netns del %s 2>/dev/null"):format(NS.a, NS.b))
end

-- nftables rules on `who`: `rules` are lines for its input chain, or nil
-- to remove the table.
local function filter(who, rules)
  os.execute(in_ns(who, "nft delete table inet odofault 2>/dev/null"))
  if not rules then return end
  local file = H.write_file(H.tmpdir() .. "/rules.nft", ("table inet odofault {\n"
    .. "  chain input { type filter hook input priority 0; policy accept;\n    %s\n  }\n}\n")
    :format(table.concat(rules, "\n    ")))
  sh(in_ns(who, "nft -f " .. file))
end

describe("network faults between two hosts", function()
  local tmp, pki, nodes, ids
  local function start(who, peer)
    local dir = tmp .. "/" .. who
    local cmd = ("'%s' run --dir '%s' --listen %s:%d --ca '%s' --cert '%s' --key '%s' --config '%s'%s")
      :format(H.odo, dir, ADDR[who], PORT, pki[who].ca, pki[who].cert, pki[who].key, tmp .. "/fast.lua",
        peer and (" --peer %s:%d"):format(ADDR[peer], PORT) or "")
    nodes[who] = { dir = dir, pid = H.spawn(in_ns(who, cmd), dir .. ".log") }
  end
  local function append(who, n, prefix)
    local lines = {}
    for i = 1, n do lines[i] = prefix .. " " .. i end
    local file = H.write_file(tmp .. "/lines-" .. who, table.concat(lines, "\n") .. "\n")
    local out, ok = H.run(("'%s' append --dir '%s' < '%s'"):format(H.odo, nodes[who].dir, file))
    assert(ok, out)
  end
  local function last_of(who, id)
    local st = H.status(nodes[who].dir)
    for _, s in ipairs(st and st.streams or {}) do
      if s.id == id then return s.last end
    end
    return 0
  end
  -- `odo tail` of a stream, each event as one fixed line
  local function events_of(who, id)
    local out = {}
    for line in H.odo_cmd("tail", "--dir", nodes[who].dir, id):gmatch("[^\n]+") do
      local e = require("cjson").decode(line)
      out[#out + 1] = ("%d %d %s %s"):format(e.rev, e.ts, e.type, e.data or e.data_base64)
    end
    return table.concat(out, "\n")
  end
  -- both nodes hold both streams up to the source's own last revision,
  -- identical event for event, and verified
  local function converged(timeout_ms)
    local ok = H.wait(function()
      for _, src in ipairs({ "a", "b" }) do
        local want = last_of(src, ids[src])
        if want == 0 or last_of(src == "a" and "b" or "a", ids[src]) ~= want then return false end
      end
      return true
    end, timeout_ms or 30000)
    if not ok then return false, H.read_file(nodes.a.dir .. ".log") .. H.read_file(nodes.b.dir .. ".log") end
    for _, src in ipairs({ "a", "b" }) do
      local ta, tb = events_of("a", ids[src]), events_of("b", ids[src])
      if ta ~= tb then return false, "the copies of " .. src .. "'s stream differ" end
    end
    for _, who in ipairs({ "a", "b" }) do
      local out, vok = H.odo_cmd("verify", "--dir", nodes[who].dir)
      if not vok then return false, out end
    end
    return true
  end

  setup(function()
    tmp = H.tmpdir()
    pki = H.pki(tmp)
    pki.a, pki.b = pki.node("a"), pki.node("b")
    H.write_file(tmp .. "/fast.lua", H.QUICK_RUN_CONFIG)
    remove_hosts()
    make_hosts()
    nodes, ids = {}, {}
    start("a")
    start("b", "a")
    for _, who in ipairs({ "a", "b" }) do
      ids[who] = H.running_id(nodes[who].dir)
      assert(ids[who], H.read_file(nodes[who].dir .. ".log"))
    end
    append("a", 5, "a before")
    append("b", 5, "b before")
    assert(converged())
  end)

  teardown(function()
    for _, n in pairs(nodes or {}) do H.kill(n.pid, "KILL") end
    for _, n in pairs(nodes or {}) do H.wait(function() return not H.alive(n.pid) end, 5000) end
    remove_hosts()
    H.cleanup()
  end)

  after_each(function()
    filter("a", nil)
    filter("b", nil)
    os.execute(in_ns("a", ("ip link set va%s up"):format(tag)))
  end)

  it("a partition while both sides write heals into identical copies", function()
    filter("a", { "ip saddr " .. ADDR.b .. " drop" })
    filter("b", { "ip saddr " .. ADDR.a .. " drop" })
    local before = last_of("b", ids.a)
    append("a", 50, "a cut off")
    append("b", 50, "b cut off")
    H.wait(function() return false end, 2000)
    assert.equal(before, last_of("b", ids.a)) -- nothing crossed the partition
    filter("a", nil)
    filter("b", nil)
    assert.is_true(converged())
  end)

  it("10% loss each way", function()
    local rule = "ip saddr %s numgen random mod 100 < 10 drop"
    filter("a", { rule:format(ADDR.b) })
    filter("b", { rule:format(ADDR.a) })
    for round = 1, 5 do
      append("a", 40, "a lossy " .. round)
      append("b", 40, "b lossy " .. round)
    end
    assert.is_true(converged())
  end)

  it("a one-way partition (a hears b, b does not hear a), then healing", function()
    filter("b", { "ip saddr " .. ADDR.a .. " drop" })
    append("a", 30, "a unheard")
    append("b", 30, "b heard")
    H.wait(function() return false end, 2000)
    filter("b", nil)
    assert.is_true(converged())
  end)

  it("a link that flaps every second", function()
    local seconds = os.getenv("ODO_LONG") and 30 or 5
    local uv = require "luv"
    for s = 1, seconds do
      sh(in_ns("a", ("ip link set va%s %s"):format(tag, s % 2 == 1 and "down" or "up")))
      append(s % 2 == 1 and "a" or "b", 20, "flap " .. s)
      uv.sleep(1000)
    end
    sh(in_ns("a", ("ip link set va%s up"):format(tag)))
    assert.is_true(converged())
  end)
end)
