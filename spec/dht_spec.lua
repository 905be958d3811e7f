-- odo.dht and odo.discovery.dht in one process: the module's own checks
-- (spec/tools/dht_probe.lua, run inside a network namespace this spec
-- makes: values that are not ours counted, decoding, shutdown, no thread
-- left after a node closed mid-lookup, dead bootstrap nodes, ports in
-- use), and the discovery source's option checks. Part of `make
-- test-asan`, where the probe runs the ASan build and checks for leaks.
local H = require "helper"
local N = require "dht_netns"

local function probe(case)
  local ns = N.new("dhtp")
  local out, ok = H.run(ns.exec(("env ODO_CPATH='%s' lua5.4 spec/tools/dht_probe.lua %s"):format(
    os.getenv("ODO_CPATH") or "build/?.so", case)))
  ns.close()
  return out, ok
end

describe("odo.dht", function()
  for _, case in ipairs({ "values", "threads", "ping", "caps" }) do
    it("probe: " .. case, function()
      local out, ok = probe(case)
      assert.is_true(ok, out)
      assert.is_nil(out:find("not ok"), out)
      assert.truthy(out:find("^ok ") or out:find("\nok "), out)
    end)
  end
end)

describe("odo.discovery.dht", function()
  local Dht = require "odo.discovery.dht"

  it("says how to build odo.dht when it is missing", function()
    local saved_cpath, saved = package.cpath, package.loaded["odo.dht"]
    package.cpath, package.loaded["odo.dht"] = "", nil
    local mod, err, name = Dht.load()
    package.cpath, package.loaded["odo.dht"] = saved_cpath, saved
    assert.is_nil(mod)
    assert.equal("ENOTBUILT", name)
    assert.truthy(err:find("make dht", 1, true), err)
  end)

  it("odo run --dht-topic without odo.dht says it is not built", function()
    local pki = H.pki(H.tmpdir())
    local node = H.node { dir = H.tmpdir(), node_id = false, tls = pki.node("x"), listen = "127.0.0.1:0" }
    local saved_cpath, saved = package.cpath, package.loaded["odo.dht"]
    package.cpath, package.loaded["odo.dht"] = "", nil
    local lines = {}
    local ok, err = require("odo.cli.run_dht").start({ dht_topic = "t", dht_bootstrap = {} }, node,
      function(fmt, ...) lines[#lines + 1] = fmt:format(...) end)
    package.cpath, package.loaded["odo.dht"] = saved_cpath, saved
    node:close()
    require("luv").run()
    assert.is_nil(ok)
    assert.truthy(err:find("odo.dht (DHT discovery) is not built", 1, true), err)
    assert.same({}, node.errors)
  end)

  it("raises on wrong options", function()
    local node = { id = string.rep("a", 64), adapter = require "odo.adapter.luv",
      listen = { host = "127.0.0.1", port = 1 }, policy = require("odo.policy_set").merge() }
    assert.has_error(function() Dht.new { node = node } end, "opts.topic must be a non-empty string")
    assert.has_error(function() Dht.new { topic = "t" } end, "opts.node (an odo node) is required")
    assert.has_error(function() Dht.new { node = node, topic = "t", bootstrap = { "nope" } } end)
    assert.has_error(function() Dht.new { node = node, topic = "t", network = -1 } end)
    node.policy = require("odo.policy_set").merge { dht_announce_every_ms = 700000 }
    assert.has_error(function() Dht.new { node = node, topic = "t" } end,
      "policy 'dht_announce_every_ms' must be less than 'dht_value_expiry_ms' (re-announce before values expire)")
  end)
end)
