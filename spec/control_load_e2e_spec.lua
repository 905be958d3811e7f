-- The control socket under load: 50 concurrent clients (25 `odo append`
-- of 400 lines each, 25 `odo tail`, some following) against a node that
-- is also replicating to another. Every append is acknowledged, no
-- acknowledged event is missing or duplicated, every tail reads a
-- contiguous stream, no client times out, and the replica converges.
local H = require "helper"
local cjson = require "cjson"


describe("the control socket under load", function()
  local w = H.odo_swarm()
  setup(w.setup)
  teardown(w.teardown)

  it("serves 50 concurrent clients of a replicating node, losing nothing, timing out nowhere", function()
    local tmp = w.tmp
    local s = w.run("s")
    local r = w.run("r", { peers = { s.port } })
    H.run(("seq 1 100 | sed 's/^/warm /' | '%s' append --dir '%s'"):format(H.odo, s.dir))
    -- 25 appenders, 15 tails of what is there, 10 tails that follow
    -- until they have seen the last event
    local script = { "cd '" .. tmp .. "'" }
    for i = 1, 25 do
      script[#script + 1] = ("(seq 1 400 | sed 's/^/client %d line /' | '%s' append --dir '%s' "
        .. ">append-%d.out 2>append-%d.err; echo $? >append-%d.rc) &"):format(i, H.odo, s.dir, i, i, i)
    end
    for i = 1, 15 do
      script[#script + 1] = ("('%s' tail --dir '%s' '%s' >tail-%d.out 2>tail-%d.err; echo $? >tail-%d.rc) &")
        :format(H.odo, s.dir, s.id, i, i, i)
    end
    local followers = {}
    for i = 1, 10 do
      followers[i] = w.spawn(("exec '%s' tail -f --dir '%s' '%s' 2>'%s/follow-%d.err'")
        :format(H.odo, s.dir, s.id, tmp, i), ("%s/follow-%d.out"):format(tmp, i))
    end
    script[#script + 1] = "wait"
    local out, ok = H.run(table.concat(script, "\n"))
    assert.is_true(ok, out)

    local acked = {}
    for i = 1, 25 do
      assert.equal("0", H.read_file(tmp .. "/append-" .. i .. ".rc"):match("%d+"),
        "append " .. i .. ": " .. H.read_file(tmp .. "/append-" .. i .. ".err"))
      acked[#acked + 1] = tonumber(H.read_file(tmp .. "/append-" .. i .. ".out"):match("(%d+)%s*$"))
    end
    -- every appended line is there exactly once, and each client's lines
    -- in its order
    local text = H.odo_cmd("tail", "--dir", s.dir, s.id)
    local count, next_line = 0, {}
    for line in text:gmatch("[^\n]+") do
      local e = cjson.decode(line)
      count = count + 1
      assert.equal(count, e.rev)
      local c, l = e.data:match("^client (%d+) line (%d+)$")
      if c then
        c, l = tonumber(c), tonumber(l)
        assert.equal((next_line[c] or 0) + 1, l, "client " .. c)
        next_line[c] = l
      end
    end
    assert.equal(100 + 25 * 400, count)
    for i = 1, 25 do assert.equal(400, next_line[i]) end
    table.sort(acked)
    assert.equal(count, acked[#acked])

    -- the followers saw everything; Ctrl-C stops them
    for i, follower in ipairs(followers) do
      local file = ("%s/follow-%d.out"):format(tmp, i)
      assert.is_true(H.wait(function()
        local _, n = H.read_file(file):gsub("\n", "")
        return n >= count
      end, 30000), "follower " .. i .. ": " .. H.read_file(tmp .. "/follow-" .. i .. ".err"))
      H.kill(follower.pid, "INT")
    end
    for _, f in ipairs(followers) do assert.is_true(H.wait(function() return not H.alive(f.pid) end, 5000)) end

    for _, kind in ipairs({ "tail", "follow" }) do
      for i = 1, kind == "tail" and 15 or 10 do
        local base = ("%s/%s-%d"):format(tmp, kind, i)
        if kind == "tail" then
          local rc = H.read_file(base .. ".rc"):match("%d+")
          assert.equal("0", rc, "tail " .. i .. ": " .. H.read_file(base .. ".err"))
        end
        local n = 0
        for line in H.read_file(base .. ".out"):gmatch("[^\n]+") do
          n = n + 1
          assert.equal(n, cjson.decode(line).rev, kind .. " " .. i)
        end
        assert.is_true(n >= 100, kind .. " " .. i .. " read " .. n)
        if kind == "follow" then assert.equal(count, n) end
      end
    end

    assert.is_true(H.wait(H.holds(r.dir, s.id, count), 30000), H.read_file(r.log))
  end)
end)
