-- What an operator sees: `odo status` (whole stream ids under column
-- headers, the peer states explained in --help), `odo status --dot`
-- rendered by Graphviz, `odo status --watch` and the catch-up progress of
-- `odo run` on a real terminal (tmux: keys sent, the screen read back
-- with capture-pane) and on a pipe.
local H = require "helper"

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- A tmux session of its own (a private server socket), removed after.
local function tmux(name)
  local sock = ("odo-spec-%s-%d"):format(name, math.random(1e9))
  local t = {}
  function t.cmd(args) return H.run("tmux -L " .. sock .. " " .. args) end
  function t.start(command)
    local out, ok = t.cmd(("new-session -d -s main -x 200 -y 50 %s"):format(q(command)))
    assert(ok, out)
  end
  function t.screen()
    return (t.cmd("capture-pane -p -t main"))
  end
  function t.keys(k) return t.cmd("send-keys -t main " .. k) end
  function t.kill() t.cmd("kill-server") end
  return t
end

describe("odo status, as an operator sees it", function()
  local w = H.odo_swarm(false)
  local terms
  setup(function()
    w.setup()
    math.randomseed(os.time())
  end)
  teardown(w.teardown)
  before_each(function() terms = {} end)
  after_each(function()
    for _, t in ipairs(terms) do t.kill() end
    w.stop_all()
  end)

  -- `prefix`: run it inside a network namespace ("ip netns exec NS")
  local function cmdline(name, port, peer, prefix)
    local c = w.certs(name)
    local dir = w.tmp .. "/" .. name .. "-" .. port
    return ("%s '%s' run --dir '%s' --listen 127.0.0.1:%d --ca '%s' --cert '%s' --key '%s' %s")
      :format(prefix or "", H.odo, dir, port, c.ca, c.cert, c.key, peer and ("--peer 127.0.0.1:" .. peer) or ""), dir
  end

  local function run(name, port, peer, prefix)
    local cmd, dir = cmdline(name, port, peer, prefix)
    local p = w.spawn(cmd, dir .. ".log")
    p.dir = dir
    return p
  end

  local function append(dir, n, prefix)
    local out, ok = H.odo_append(dir, H.lines(n, prefix))
    assert(ok, out)
  end

  it("shows whole stream ids under headers, each one pastable into odo tail", function()
    local p = run("solo", H.free_ports(1)[1])
    local id = assert(H.running_id(p.dir))
    append(p.dir, 2)
    local out, ok = H.odo_cmd("append", "--dir", p.dir, "--stream", "sensors", "21.5")
    assert.is_true(ok, out)
    local text
    text, ok = H.odo_cmd("status", "--dir", p.dir)
    assert.is_true(ok, text)
    assert.truthy(text:find("FIRST%s+LAST%s+SNAPSHOT%s+LAG%s+CAUGHT%-UP%s+UPSTREAM%s+STREAM"), text)
    local ids = {}
    for line in text:gmatch("[^\n]+") do
      local last = line:match("(%S+)%s*$")
      if last and last:sub(1, #id) == id then ids[#ids + 1] = last end
    end
    table.sort(ids)
    assert.same({ id, id .. "/sensors" }, ids)
    -- what the table shows is what odo tail takes
    out, ok = H.odo_cmd("tail", "--dir", p.dir, ids[2])
    assert.is_true(ok, out)
    assert.truthy(out:find('"21.5"', 1, true), out)
    -- the peer states, explained
    local help = H.odo_cmd("status", "--help")
    for _, state in ipairs({ "connecting", "incoming", "active", "lifesupport", "purgatory" }) do
      assert.truthy(help:find("\n  " .. state .. " ", 1, true), state .. " not explained:\n" .. help)
    end
  end)

  it("--dot draws the node, its peer and whom it follows, which Graphviz renders", function()
    local ports = H.free_ports(2)
    local a = run("a", ports[1])
    local b = run("b", ports[2], ports[1])
    local aid, bid = assert(H.running_id(a.dir)), assert(H.running_id(b.dir))
    append(a.dir, 3)
    assert.is_true(H.wait(H.holds(b.dir, aid, 3), 20000))
    local dot, ok = H.run(("'%s' status --dir '%s' --dot 2>/dev/null"):format(H.odo, b.dir))
    assert.is_true(ok, dot)
    assert.truthy(dot:match("^digraph"), dot)
    assert.truthy(dot:find(('"%s" -> "%s" [color="navy", label="%s lag 0"]'):format(aid, bid, aid:sub(1, 8)),
      1, true), dot)
    assert.truthy(dot:find(('"%s" [label="%s", color="forestgreen"'):format(aid, aid:sub(1, 12)), 1, true), dot)
    local file = H.write_file(w.tmp .. "/swarm.dot", dot)
    local svg
    svg, ok = H.run("dot -Tsvg '" .. file .. "'")
    assert.is_true(ok, svg)
    assert.truthy(svg:find("<svg", 1, true))
    assert.truthy(svg:find(aid:sub(1, 12), 1, true))
  end)

  it("--watch redraws in place on a terminal, and prints one table per interval on a pipe", function()
    local ports = H.free_ports(2)
    local a = run("a", ports[1])
    local b = run("b", ports[2], ports[1])
    local aid = assert(H.running_id(a.dir))
    assert(H.running_id(b.dir))
    append(a.dir, 3)
    local t = tmux("watch")
    terms[#terms + 1] = t
    t.start(("%s status --dir %s --watch 0.5; echo exit status $?; sleep 60"):format(q(H.odo), q(b.dir)))
    local screen
    local function shows(pattern)
      return function()
        screen = t.screen()
        return screen:find(pattern) ~= nil
      end
    end
    assert.is_true(H.wait(shows("\n%s+1%s+3%s+0%s+0%s+yes%s+%x+%s+%S+%s+" .. aid), 20000), screen)
    append(a.dir, 4, "more ")
    assert.is_true(H.wait(shows("\n%s+1%s+7%s+0%s+0%s+yes%s+%x+%s+%S+%s+" .. aid), 20000), screen)
    -- in place: one table on the screen, at the top
    assert.truthy(screen:match("^every 0%.5s: odo status"), screen)
    local _, tables = screen:gsub("streams: 1", "")
    assert.equal(1, tables, screen)
    t.keys("C-c")
    assert.is_true(H.wait(shows("exit status 130"), 10000), screen)
    -- on a pipe: one table after the other
    local log = w.tmp .. "/watch.out"
    w.spawn(("exec %s status --dir %s --watch 0.2"):format(q(H.odo), q(b.dir)), log)
    assert.is_true(H.wait(function()
      local _, n = H.read_file(log):gsub("every 0%.2s: odo status", "")
      return n >= 3
    end, 20000), H.read_file(log))
    local out = H.read_file(log)
    assert.falsy(out:find("\27", 1, true), "escape sequences on a pipe")
    assert.truthy(out:find("FIRST%s+LAST"))
  end)

  it("odo run shows catch-up progress on a terminal, only the final line on a pipe", function()
    -- the nodes talk over the loopback of a network namespace of the
    -- spec's own, slowed to 8 Mbit/s: a catch-up of 4 MB takes seconds
    local ns = ("odo-progress-%d"):format(require("luv").os_getpid())
    local out, ok = H.run(("ip netns add %s && ip netns exec %s ip link set lo up"
      .. " && ip netns exec %s ip link set lo mtu 1500"
      .. " && ip netns exec %s tc qdisc add dev lo root tbf rate 8mbit burst 32kb latency 500ms")
      :format(ns, ns, ns, ns))
    local inside = "ip netns exec " .. ns
    local finished, err = pcall(function()
      assert(ok, out)
      local ports = H.free_ports(3)
      local a = run("a", ports[1], nil, inside)
      local aid = assert(H.running_id(a.dir))
      local label = aid:sub(1, 16)
      for i = 1, 4 do append(a.dir, 5000, ("x"):rep(200) .. " batch " .. i .. " event ") end
      -- a newcomer on a terminal (progress from the first moment)
      local cmd, bdir = cmdline("b", ports[2], ports[1], inside)
      local t = tmux("progress")
      terms[#terms + 1] = t
      t.start("ODO_PROGRESS_AFTER_MS=0 " .. cmd .. "; sleep 60")
      local screen
      local seen_progress = H.wait(function()
        screen = t.screen()
        return screen:find("catching up " .. label .. ": %d+/20000 revisions %(%d+%%%), %d+ events/s, %S+ left")
          ~= nil
      end, 30000)
      assert.is_true(seen_progress, screen)
      assert.is_true(H.wait(function()
        screen = t.screen()
        return screen:find("stream " .. aid .. " caught up with the swarm at revision 20000: 20000 events in [%d.]+ m?s"
          .. " %(%d+ events/s%)") ~= nil
      end, 60000), screen)
      -- the progress line is gone once done
      assert.falsy(screen:find("catching up", 1, true), screen)
      assert.equal(20000, math.tointeger(H.stream_of(bdir, aid).last))
      -- the same newcomer on a pipe: no progress, one final line
      local c = run("c", ports[3], ports[1], "ODO_PROGRESS_AFTER_MS=0 " .. inside)
      assert.is_true(H.wait(function()
        return H.read_file(c.log):find("stream " .. aid .. " caught up with the swarm", 1, true) ~= nil
      end, 60000), H.read_file(c.log):sub(1, 3000))
      local log = H.read_file(c.log)
      assert.falsy(log:find("catching up", 1, true), log)
      assert.falsy(log:find("\27", 1, true), log)
    end)
    for _, t in ipairs(terms) do t.kill() end
    terms = {}
    w.stop_all()
    H.run("ip netns delete " .. ns)
    if not finished then error(err, 0) end
  end)
end)
