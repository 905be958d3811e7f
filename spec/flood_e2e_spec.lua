-- A connection flood against a node: 1,000 connections that never finish
-- TLS (silent, or dripping a byte every 5 s) held open by another process,
-- while an honest `odo run` peer dials in. The node under attack runs in
-- this process (so the spec can count its descriptors and its Lua heap),
-- with a descriptor budget the flood exceeds, a first-byte timeout of 30 s
-- and a handshake timeout of 60 s: the honest peer can get in within the
-- 20 s the spec gives it only by evicting flood connections, never by
-- waiting behind them.
local H = require "helper"
local uv = require "luv"
local luv_adapter = require "odo.adapter.luv"


local function descriptors()
  local n = 0
  local dir = uv.fs_scandir("/proc/" .. uv.os_getpid() .. "/fd")
  while dir and uv.fs_scandir_next(dir) do n = n + 1 end
  return n
end

local function lua_heap()
  collectgarbage("collect")
  collectgarbage("collect")
  return collectgarbage("count") * 1024
end

-- cond() checked at most every `every_ms` while A's loop runs.
local function until_every(cond, timeout_ms, every_ms)
  local next_check, last = 0, false
  return H.luv_until(function()
    if uv.now() >= next_check then
      next_check = uv.now() + (every_ms or 300)
      last = cond()
    end
    return last
  end, timeout_ms)
end

describe("a connection flood", function()
  local w = H.odo_swarm()
  local a, notices
  local function flood(mode, seconds)
    local log = ("%s/flood-%s-%d.out"):format(w.tmp, mode, #w.procs)
    local flooder = w.spawn(("ulimit -n 8192; exec lua5.4 '%s/spec/tools/flooder.lua' 127.0.0.1 %d 1000 %s %d")
      :format(H.root, a.listen.port, mode, seconds), log)
    assert.is_true(until_every(function() return H.read_file(log):find("holding") end, 30000),
      "the flooder did not get its connections up: " .. H.read_file(log))
    return flooder.pid, log
  end
  -- no socket, no pending connection, no peer: A holds nothing (it dials
  -- no one, so every socket it has is one that came in)
  local function settled()
    return until_every(function()
      local s = a:status().connections
      return s.open == 0 and s.pending == 0 and #a:peers() == 0
    end, 60000)
  end

  setup(w.setup)
  teardown(w.teardown)
  -- each case attacks a node of its own, fresh, so nothing one case left
  -- (a stopping peer, late closes) reaches the next
  before_each(function()
    notices = {}
    a = H.node {
      tls = w.pki.node("a"),
      listen = "127.0.0.1:0",
      node_id = false,
      policy = { max_descriptors = 200, max_handshakes = 64, max_handshakes_per_host = 32,
        first_byte_timeout_ms = 30000, handshake_timeout_ms = 60000, tick_ms = 100,
        heartbeat_interval_ms = 1000, heartbeat_timeout_ms = 3000,
        -- A only answers: no addresses learned from the honest peer, so it
        -- never dials it back after it stops
        pex_per_minute = 0 },
    }
    a:on("notice", function(kind, message) notices[#notices + 1] = kind .. ": " .. message end)
    a:append(nil, { { type = "t", data = "before the flood" } })
  end)
  after_each(function()
    w.stop_all()
    a:close()
    luv_adapter.shutdown()
    H.luv_until(function() return #H.active_handles() == 0 end, 5000)
  end)

  for _, mode in ipairs({ "silent", "drip" }) do
    it(("of 1,000 %s connections does not keep an honest peer out, and leaves nothing behind"):format(mode), function()
      local base = { fds = descriptors(), heap = lua_heap() }
      local evicted, admitted = a:status().connections.evicted, a:status().connections.admitted

      local flooder = flood(mode, 60)
      local c = a:status().connections
      assert.is_true(c.evicted > evicted, "the flood never reached a bound")
      assert.is_true(c.open <= 200 and c.pending <= 32, ("open %d, pending %d"):format(c.open, c.pending))

      -- the honest peer, while the flood is held
      local b = w.start("b-" .. mode, { peers = { a.listen.port } })
      local replicated = until_every(H.holds(b.dir, a.id, 1), 20000, 500)
      assert.is_true(replicated, "the honest peer was not served while the flood held: "
        .. H.read_file(b.log) .. table.concat(notices, "\n"))
      assert.is_true(H.alive(flooder), "the flood ended before the honest peer was served")
      assert.equal("active", a:peers()[1] and a:peers()[1].state)
      -- a flood is a few log lines, not one per connection
      assert.is_true(#notices < 20, "notices: " .. table.concat(notices, "\n"))

      -- the flood and the peer go: everything returns to where it was
      H.kill(flooder, "KILL")
      H.kill(b.pid, "TERM")
      assert.is_true(settled(), "connections left: " .. require("cjson").encode(a:status().connections)
        .. ", peers: " .. require("cjson").encode(a:peers()))
      H.luv_until(function() return false end, 200)
      assert.equal(base.fds, descriptors())
      -- the flood made some 20,000 connections, each worth kilobytes of Lua
      -- objects while it lived: what stays is far less than 200 bytes a
      -- connection (tables, luv's registry among them, keep the size their
      -- busiest moment grew them to; that is bounded by the budget, not by
      -- how many connections came)
      local made = a:status().connections.admitted - admitted
      assert.is_true(made > 1000, "the flood made only " .. made .. " connections")
      assert.is_true(lua_heap() < base.heap + made * 200,
        ("Lua heap %d bytes, %d before a flood of %d connections"):format(lua_heap(), base.heap, made))
    end)
  end
end)
