-- The LÖVE example (examples/love) for real: Debian's `love` 11.4 (LuaJIT)
-- with the core built against LuaJIT's headers (`make luajit`, part of
-- `make test-build`). Two players, one headless and one with a window
-- under xvfb-run, each a node whose moves are its own stream, replicate
-- each other's moves over mutual TLS on loopback and exit 0, both showing
-- the same final positions; a game and an `odo run` node see each other's
-- moves; a failure inside the game exits 1 instead of waiting on LÖVE's
-- error screen.
local H = require "helper"

local CORE = H.root .. "/build/luajit/odo/core.so"
local GAME = H.root .. "/examples/love"

local function have(cmd)
  local _, ok = H.run("command -v " .. cmd)
  return ok
end

local function certs(pki, name)
  local _, ok = H.odo_cmd("cert", "node", "--ca", pki, "--out", pki .. "/" .. name)
  assert(ok, "odo cert node")
  return ("--ca '%s/ca.pem' --cert '%s/%s/node.pem' --key '%s/%s/node.key'"):format(pki, pki, name, pki, name)
end

describe("the LÖVE example", function()
  local tmp, pki
  setup(function()
    assert(have("love"), "love (Debian package love) is not installed: make deps")
    assert(have("xvfb-run"), "xvfb-run (Debian package xvfb) is not installed: make deps")
    assert(io.open(CORE), CORE .. " is missing: make luajit")
    tmp = H.tmpdir()
    pki = tmp .. "/pki"
    local _, ok = H.odo_cmd("cert", "ca", "--out", pki)
    assert(ok, "odo cert ca")
  end)
  teardown(H.cleanup)

  it("replicates each player's moves between two instances (headless and windowed) and exits 0", function()
    local port = H.free_ports(1)[1]
    local a_log, a_rc = tmp .. "/alice.log", tmp .. "/alice.rc"
    local a_pid = H.spawn(("timeout 120 love '%s' --headless --dir '%s/alice' %s --listen 127.0.0.1:%d"
      .. " --name alice --moves 8 --players 2 --timeout 90; echo $? > '%s'")
      :format(GAME, tmp, certs(pki, "alice"), port, a_rc), a_log)
    local b_out, b_ok = H.run(("timeout 120 xvfb-run -a love '%s' --dir '%s/bob' %s --peer 127.0.0.1:%d"
      .. " --name bob --moves 8 --players 2 --timeout 90"):format(GAME, tmp, certs(pki, "bob"), port))
    assert.is_true(H.wait(function() return not H.alive(a_pid) end, 100000))
    local a_out = H.read_file(a_log)
    assert.is_true(b_ok, b_out)
    assert.equal("0", H.read_file(a_rc):match("%d+"), a_out)
    local a_all = a_out:match("all players: (%S+ %S+)")
    local b_all = b_out:match("all players: (%S+ %S+)")
    assert.is_string(a_all, a_out)
    assert.matches("^alice=8@%d+,%d+ bob=8@%d+,%d+$", a_all)
    -- both show the same final position of every player
    assert.equal(a_all, b_all, b_out)
  end)

  it("plays with an odo run node: each sees the other's moves stream", function()
    local ports = H.free_ports(2)
    assert.is_true(select(2, H.odo_cmd("cert", "node", "--ca", pki, "--out", pki .. "/runner")))
    local run_certs = { ca = pki .. "/ca.pem", cert = pki .. "/runner/node.pem", key = pki .. "/runner/node.key" }
    local run = H.odo_run { dir = tmp .. "/runner", port = ports[1], certs = run_certs, peers = { ports[2] } }
    assert.is_true(H.wait(function() local st = H.status(run.dir) return st and st.running end, 15000),
      H.read_file(run.log))
    -- the odo run node's own moves, in its "moves" stream as the game writes them
    for i = 1, 4 do
      local out, ok = H.odo_cmd("append", "--dir", run.dir, "--stream", "moves", "--type", "move",
        ("%d,%d,runner"):format(100 + i, 200 + i))
      assert.is_true(ok, out)
    end
    local out, ok = H.run(("timeout 120 love '%s' --headless --dir '%s/carol' %s --listen 127.0.0.1:%d"
      .. " --name carol --moves 4 --players 2 --timeout 90"):format(GAME, tmp, certs(pki, "carol"), ports[2]))
    local carol_id = out:match("player (%x+)/moves")
    H.kill(run.pid)
    assert.is_true(H.wait(function() return not H.alive(run.pid) end, 10000))
    assert.is_true(ok, out .. H.read_file(run.log))
    assert.matches("all players: carol=4@%d+,%d+ runner=4@104,204", out)
    -- and the odo run node holds the game's moves
    local tail, tok = H.odo_cmd("tail", "--dir", run.dir, carol_id .. "/moves")
    assert.is_true(tok, tail)
    local n = 0
    for line in tail:gmatch("[^\n]+") do
      n = n + 1
      assert.matches('"type":"move"', line)
    end
    assert.equal(4, n, tail)
  end)

  it("exits 1 with the failure when the game fails, instead of waiting on an error screen", function()
    local out, ok = H.run(("timeout 60 love '%s' --headless --dir '%s/broken' --ca /nonexistent --cert /nonexistent"
      .. " --key /nonexistent; echo \"exit $?\""):format(GAME, tmp))
    assert.is_true(ok, out)
    assert.matches("exit 1", out)
    assert.matches("odo love demo: ", out)
  end)
end)
