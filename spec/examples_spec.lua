-- The examples, run as a person runs them, checking what that person
-- would see: the other participants' messages (chat), the reducer's
-- figures from a late replica (telemetry), the custom policies' decisions
-- and their effect (policy). Real processes over TLS on loopback.
local H = require "helper"

-- a shell command run from the checkout with the core under test
local function from_checkout(cmd)
  return ("cd '%s' && LUA_CPATH='%s;;' %s"):format(H.root, H.core_cpath(), cmd)
end

describe("examples", function()
  local tmp, pki
  setup(function()
    tmp = H.tmpdir()
    pki = H.pki(tmp)
  end)
  teardown(H.cleanup)

  it("telemetry: the late replica starts from the snapshot and prints the device's min/max/mean", function()
    local out, ok = H.run(from_checkout("lua5.4 examples/telemetry.lua"))
    assert.is_true(ok, out)
    -- the log stays short, and the replica starts from the snapshot
    assert.matches("device: 5020 readings; its log holds events 5001..5020", out, 1, true)
    assert.matches("replica: started from the snapshot at revision 5000", out, 1, true)
    assert.matches("replica: then 20 events, up to revision 5020", out, 1, true)
    -- the figures, computed here from the readings' formula
    local want = {}
    for i = 1, 5020 do
      local k = (i - 1) % 4 + 1
      local v = tonumber(("%.1f"):format(10 * k + ((i * 7919) % 997) / 100))
      local s = want[k] or { n = 0, sum = 0, min = v, max = v }
      want[k] = s
      s.n, s.sum, s.min, s.max = s.n + 1, s.sum + v, math.min(s.min, v), math.max(s.max, v)
    end
    for k, name in ipairs({ "temp", "humidity", "pressure", "wind" }) do
      local s = want[k]
      local n, mn, mx, mean = out:match(name .. "%s+n=(%d+)%s+min=(%S+)%s+max=(%S+)%s+mean=(%S+)")
      assert.equal(s.n, tonumber(n), out)
      assert.equal(("%.2f"):format(s.min), mn)
      assert.equal(("%.2f"):format(s.max), mx)
      assert.equal(("%.2f"):format(s.sum / s.n), mean)
    end
  end)

  it("chat: three participants in a line each see the others' messages, those from before they joined too", function()
    local ports = H.free_ports(3)
    local people = { "alice", "bob", "carol" }
    local chat = {}
    for i, name in ipairs(people) do
      local certs = pki.node(name)
      local p = { name = name, fifo = tmp .. "/" .. name .. ".in", log = tmp .. "/" .. name .. ".out" }
      assert(os.execute(("mkfifo '%s'"):format(p.fifo)))
      local cmd = ("lua5.4 examples/chat.lua --name %s --dir '%s/%s' --listen 127.0.0.1:%d")
        :format(name, tmp, name, ports[i])
        .. (" --ca '%s' --cert '%s' --key '%s'"):format(certs.ca, certs.cert, certs.key)
      if i > 1 then cmd = cmd .. " --peer 127.0.0.1:" .. ports[i - 1] end
      p.cmd = from_checkout(cmd .. (" < '%s'; echo \"exit status $?\""):format(p.fifo))
      chat[i] = p
    end
    local function start(p)
      p.pid = H.spawn(p.cmd, p.log)
      p.input = assert(io.open(p.fifo, "w")) -- blocks until the chat reads it
    end
    local function type_line(p, line)
      p.input:write(line, "\n")
      p.input:flush()
    end
    local function sees(p, text) return H.read_file(p.log):find(text, 1, true) ~= nil end
    local alice, bob, carol = chat[1], chat[2], chat[3]
    start(alice)
    start(bob)
    type_line(alice, "hi, this is alice")
    assert.is_true(H.wait(function() return sees(bob, "<alice> hi, this is alice") end, 20000), H.read_file(bob.log))
    -- carol joins later, through bob only: she gets what was said before
    start(carol)
    type_line(bob, "bob here")
    type_line(carol, "carol says hello")
    assert.is_true(H.wait(function()
      return sees(carol, "<alice> hi, this is alice") and sees(carol, "<bob> bob here")
        and sees(alice, "<carol> carol says hello") and sees(alice, "<bob> bob here")
        and sees(bob, "<carol> carol says hello")
    end, 30000), H.read_file(alice.log) .. H.read_file(bob.log) .. H.read_file(carol.log))
    assert.is_true(sees(carol, "* alice joined") and sees(alice, "* carol joined"))
    -- nobody sees their own lines echoed; each one's stream is its own
    assert.is_false(sees(alice, "<alice>"))
    -- end of input: each leaves, the others are told, each exits 0
    carol.input:close()
    assert.is_true(H.wait(function() return sees(alice, "* carol left") end, 20000), H.read_file(alice.log))
    bob.input:close()
    alice.input:close()
    for _, p in ipairs(chat) do
      assert.is_true(H.wait(function() return sees(p, "exit status") end, 10000), H.read_file(p.log))
      assert.is_true(sees(p, "exit status 0\n"), H.read_file(p.log))
    end
  end)

  it("make demo's odo part: three odo run nodes in a line, append, status and verify at the far end, a clean stop",
    function()
      local out, ok = H.run(from_checkout("examples/demo-cli.sh"))
      assert.is_true(ok, out)
      local n1 = out:match("n1: (%x+)")
      assert.truthy(n1, out)
      -- n3 holds n1's two events, through n2, verified; every node stopped with status 0
      local got = false
      for line in out:gmatch("[^\n]+") do
        got = got or (line:find('"rev":2', 1, true) and line:find('"n3 gets this through n2"', 1, true)) ~= nil
      end
      assert.is_true(got, out)
      assert.matches("ok    " .. n1 .. " (2 events", out, 1, true)
      assert.matches("stream " .. n1 .. " caught up with the swarm at revision 2: 2 events", out, 1, true)
      local _, stops = out:gsub("stopped %(exit status 0%)", "")
      assert.equal(3, stops)
    end)

  it("policy: odo run --config examples/policy.lua follows a relay and retries on its own schedule", function()
    local ports = H.free_ports(4)
    local procs = {}
    local function run(name, port, peers, config)
      local p = H.odo_run { dir = tmp .. "/policy-" .. name, port = port, certs = pki.node("p" .. name),
        peers = peers, config = config }
      procs[#procs + 1] = p
      return p
    end
    local function id_of(p)
      assert.is_true(H.wait(function() return H.read_file(p.log):find("listening") ~= nil end, 20000))
      return H.read_file(p.log):match("node (%x+) listening")
    end
    local ok, err = pcall(function()
      local a = run("a", ports[1])
      local b = run("b", ports[2], { ports[1] })
      local a_id, b_id = id_of(a), id_of(b)
      assert.is_true(H.odo_cmd("append", "--dir", a.dir, "from the source") ~= nil)
      -- c knows the source and the relay, and an address where nobody listens
      local c = run("c", ports[3], { ports[1], ports[2], ports[4] }, H.root .. "/examples/policy.lua")
      local function upstream_of_a()
        for _, s in ipairs((H.status(c.dir) or {}).streams or {}) do
          if s.id == a_id and s.last == 1 then return s.upstream end
        end
      end
      assert.is_true(H.wait(function() return upstream_of_a() == b_id end, 30000),
        H.read_file(c.log) .. tostring(upstream_of_a()))
      local log = H.read_file(c.log)
      assert.matches("policy: " .. a_id .. " now follows " .. b_id, log, 1, true)
      assert.is_true(H.wait(function()
        return H.read_file(c.log):find("again in 400 ms (failure 2)", 1, true) ~= nil
      end, 20000), H.read_file(c.log))
      assert.matches("policy: dialling 127.0.0.1:" .. ports[4] .. " again in 200 ms (failure 1)", H.read_file(c.log),
        1, true)
    end)
    for _, p in ipairs(procs) do H.kill(p.pid, "TERM") end
    for _, p in ipairs(procs) do H.wait(function() return not H.alive(p.pid) end, 5000) end
    assert(ok, err)
  end)
end)
