-- A store written by the first released format (spec/fixtures/store-v1:
-- a source node A with its own stream compacted behind a snapshot and a
-- named stream of binary data, and its replica B, made once by `odo run`,
-- `odo append` and replication, and never regenerated: the hashes below
-- are checked first) opens, reads and verifies with this version.
local H = require "helper"
local cjson = require "cjson"

local FIXTURE = H.root .. "/spec/fixtures/store-v1"
local A = "f1ef706043b9342d3941d53d2d4eab42323c7106fa329b74b51dc0fefac2b1ab"
local B = "25fc1e3b02449fbf7e5d95cf44a191bad165a744e050d9a121121d1063c5d9c6"

describe("a store in the v1 format", function()
  local tmp
  setup(function() tmp = H.tmpdir() end)
  teardown(H.cleanup)

  it("is the fixture committed once (its files' hashes)", function()
    local want = H.read_file(H.root .. "/spec/fixtures/store-v1.sha256")
    local got = H.run(("cd '%s' && find . -type f | sort | xargs sha256sum"):format(FIXTURE))
    assert.equal(want, got)
  end)

  for _, who in ipairs({ "A", "B" }) do
    it(("opens, reads and verifies (%s, %s)"):format(who, who == "A" and "the source" or "a replica"), function()
      local dir = tmp .. "/" .. who
      H.run(("cp -r '%s/%s' '%s'"):format(FIXTURE, who, dir))
      local out, ok = H.odo_cmd("verify", "--dir", dir)
      assert.is_true(ok, out)
      for _, line in ipairs({ "ok    " .. B .. " (1 events, 1 signed heads)",
        "ok    " .. A .. " (7 events, 1 signed heads)", "ok    " .. A .. "/sensors (1 events, 1 signed heads)" }) do
        assert.is_truthy(out:find(line, 1, true), out)
      end
      local st = H.status(dir)
      local by = {}
      for _, s in ipairs(st.streams) do by[s.id] = s end
      assert.same({ 121, 127, 120 }, { by[A].first, by[A].last, by[A].snapshot })
      assert.same({ 1, 1 }, { by[A .. "/sensors"].first, by[A .. "/sensors"].last })
      assert.same({ 1, 1 }, { by[B].first, by[B].last })
      out = H.odo_cmd("tail", "--dir", dir, A, "--from", 121)
      local revs, data = {}, {}
      for line in out:gmatch("[^\n]+") do
        local e = cjson.decode(line)
        revs[#revs + 1], data[#data + 1] = e.rev, e.data
        assert.equal("reading", e.type)
      end
      assert.same({ 121, 122, 123, 124, 125, 126, 127 }, revs)
      assert.equal("reading 127", data[7])
      local e = cjson.decode((H.odo_cmd("tail", "--dir", dir, A .. "/sensors")))
      assert.same({ "raw", "w6n/AGJpbmFyeQ==" }, { e.type, e.data_base64 })
      e = cjson.decode((H.odo_cmd("tail", "--dir", dir, B)))
      assert.same({ "note", "hello" }, { e.type, e.data })
      -- opened once, it says format 2 (segments may follow), which an
      -- older odo-journal refuses instead of misreading
      local fmt
      for _, rec in ipairs(H.records(dir .. "/store")) do
        if rec.key == "mformat" then fmt = rec.value:sub(5) end
      end
      assert.equal(string.pack(">I4", 2), fmt)
    end)
  end
end)
