-- odo.policy (the defaults, nothing else) and odo.policy_set (merging a
-- user's entries over them, and the rules each entry follows).
local defaults = require "odo.policy"
local policy_set = require "odo.policy_set"

describe("odo.policy", function()
  it("holds only policies: every default passes the rules as a user's entry", function()
    local n = 0
    for k, v in pairs(defaults) do
      assert.is_true(type(k) == "string" and k:match("^[a-z][a-z0-9_]*$") ~= nil, tostring(k))
      assert.has_no_error(function() policy_set.merge({ [k] = v }) end, k)
      n = n + 1
    end
    assert.is_true(n > 40)
    assert.same(defaults, policy_set.merge(nil))
  end)
end)

describe("odo.policy_set", function()
  local function refuses(entries, message)
    assert.has_error(function() policy_set.merge(entries) end, message)
  end

  it("merges a user's entries over the defaults, each replacing the default whole", function()
    local up = function() return nil end
    local p = policy_set.merge({ tick_ms = 50, backoff = { 1, 2 }, upstream = up, reducer = "kv" })
    assert.equal(50, p.tick_ms)
    assert.same({ 1, 2 }, p.backoff)
    assert.equal(up, p.upstream)
    assert.equal("kv", p.reducer)
    assert.equal(defaults.max_peers, p.max_peers)
    assert.equal(1000, defaults.tick_ms) -- the defaults stay as they were
  end)

  it("refuses unknown names, its own functions among them", function()
    refuses({ snapshot_evry = 3 }, "unknown policy 'snapshot_evry'")
    refuses({ merge = function() end }, "unknown policy 'merge'")
    refuses({ check = function() end }, "unknown policy 'check'")
    assert.has_error(function() policy_set.merge(5) end, "opts.policy must be a table, got number")
  end)

  it("refuses an entry of the wrong type or range, naming it", function()
    refuses({ tick_ms = 0 }, "policy 'tick_ms' must be greater than 0, got 0")
    refuses({ compact_keep = -1 }, "policy 'compact_keep' must not be negative, got -1")
    refuses({ compact_keep = 0 / 0 }, "policy 'compact_keep' must be a number, got " .. tostring(0 / 0))
    refuses({ max_peers = "8" }, "policy 'max_peers' must be a number, got 8")
    refuses({ backoff_jitter = 1.5 }, "policy 'backoff_jitter' must be a number from 0 to 1, got 1.5")
    refuses({ verify_signatures = 1 }, "policy 'verify_signatures' must be true or false, got 1")
    refuses({ upstream = "nearest" }, "policy 'upstream' must be a function, got nearest")
    refuses({ reducer = "sum" },
      "policy 'reducer' must be nil, \"kv\", \"last\", a function or { name =, reduce = }, got sum")
    refuses({ verify_threads = 17 }, "policy 'verify_threads' must be nil or an integer from 0 to 16, got 17")
    refuses({ verify_threads = 1.5 }, "policy 'verify_threads' must be nil or an integer from 0 to 16, got 1.5")
    assert.has_error(function() policy_set.merge({ dns_backoff = { 1000, -5 } }) end)
    local ok, err = pcall(policy_set.merge, { backoff = { 500, "soon" } })
    assert.is_false(ok)
    assert.matches("policy 'backoff' must be an array of delays %(ms%) or a function: backoff%[2%] is soon", err)
  end)

  it("takes the other forms the rules allow", function()
    assert.has_no_error(function()
      policy_set.merge({ backoff = function() return 10 end, dns_backoff = {}, compact_keep = 0,
        reducer = { name = "sum", reduce = function(s) return s end }, verify_threads = 0 })
    end)
    assert.is_true(policy_set.valid_reducer(nil) and policy_set.valid_reducer("last"))
    assert.is_false(policy_set.valid_reducer({ name = "x" }))
  end)
end)
