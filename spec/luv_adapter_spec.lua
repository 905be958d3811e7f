-- The luv adapter's own edges: cancelling a dial whose TCP connect is
-- still pending, and listening on an address luv cannot parse. A failure
-- here used to raise inside a luv callback, which ends the process, so
-- those cases run in a child process and the spec reads how it ended.
local H = require "helper"
local uv = require "luv"
local A = require "odo.adapter.luv"

-- Runs Lua `code` in a child lua5.4 with this run's module paths; returns
-- its output (stdout and stderr) and whether it exited 0.
local function child(code)
  local f = os.tmpname()
  local fh = assert(io.open(f, "w"))
  fh:write(("package.path = %q .. package.path\npackage.cpath = %q .. package.cpath\n")
    :format(package.path .. ";", package.cpath .. ";"), code)
  fh:close()
  local out, ok = H.run("lua5.4 '" .. f .. "'")
  os.remove(f)
  return out, ok
end

describe("luv adapter", function()
  after_each(function()
    A.shutdown()
    assert.same({}, H.active_handles())
  end)
  teardown(H.cleanup)

  it("cancels a dial whose TCP connect is pending without calling back or raising", function()
    -- cancel() closes the handle while libuv still owns the connect; libuv
    -- then calls the connect callback with ECANCELED
    local out, ok = child [[
      local uv = require "luv"
      local A = require "odo.adapter.luv"
      local srv = uv.new_tcp()
      assert(srv:bind("127.0.0.1", 0))
      assert(srv:listen(8, function() end))
      local port = srv:getsockname().port
      local calls = 0
      local function cb() calls = calls + 1 end
      A.connect("127.0.0.1", port, cb).cancel()   -- a listener
      A.connect("127.0.0.1", 1, cb).cancel()      -- nobody there: refused once it runs
      A.connect("localhost", port, cb).cancel()   -- a name, being resolved
      srv:close()
      A.shutdown()
      uv.run()
      print("callbacks: " .. calls)
    ]]
    assert.is_true(ok, out)
    assert.matches("callbacks: 0", out)
    assert.not_matches("Uncaught Error", out)
  end)

  it("lets a node close while its dial's TCP connect is pending", function()
    local pki = H.pki(H.tmpdir())
    local certs = pki.node("n1")
    local out, ok = child(([[
      local uv = require "luv"
      local odo = require "odo"
      local srv = uv.new_tcp()
      assert(srv:bind("127.0.0.1", 0))
      assert(srv:listen(8, function() end))
      local node = assert(odo.node { dir = %q, tls = { ca = %q, cert = %q, key = %q },
        listen = "127.0.0.1:0", on_error = function(e) print("error: " .. e) end })
      node:discover("127.0.0.1", srv:getsockname().port) -- dials at once
      node:close()                                        -- cancels the dial
      srv:close()
      require("odo.adapter.luv").shutdown()
      uv.run()
      print("the loop ended")
    ]]):format(H.tmpdir(), certs.ca, certs.cert, certs.key))
    assert.is_true(ok, out)
    assert.matches("the loop ended", out)
    assert.not_matches("error:", out)
  end)

  it("lets a node close while a snapshot worker's descriptor is being watched", function()
    -- the node closes inside watch(), before the watch is handed back:
    -- closing the store closes the descriptor, and a poll on a closed
    -- descriptor aborts libuv
    local out, ok = child(([[
      local uv = require "luv"
      local odo = require "odo"
      local L = require "odo.adapter.luv"
      local node
      local adapter = setmetatable({ watch = function(fd, fn)
        local w = L.watch(fd, fn)
        -- (the commit queue's descriptor is watched as the node opens)
        if node then node:close() end
        return w
      end }, { __index = L })
      node = assert(odo.node { dir = %q, node_id = "n", adapter = adapter,
        policy = { reducer = "kv", snapshot_every_events = 1e9 } })
      node:append(nil, { odo.kv.put("a", "1") })
      node:snapshot(nil, function(rev, err) print("snapshot: " .. tostring(rev) .. " " .. tostring(err)) end)
      uv.run()
      L.shutdown()
      uv.run()
      print("the loop ended")
    ]]):format(H.tmpdir()))
    assert.is_true(ok, out)
    assert.matches("snapshot: nil ECANCELED", out)
    assert.matches("the loop ended", out)
  end)

  it("returns EINVAL for a listen address that is neither an IP nor a host name, instead of raising", function()
    -- a host name is resolved, preferring IPv4
    local named = assert(A.listen("localhost", 0, function() end))
    assert.is_truthy(named.host == "127.0.0.1" or named.host == "::1", named.host)
    named.close()
    for _, host in ipairs({ "300.1.1.1", "not an address", "-x" }) do
      local server, err, name = A.listen(host, 0, function() end)
      assert.is_nil(server, host)
      assert.equal("EINVAL", name)
      assert.matches("^EINVAL: cannot listen on " .. host:gsub("%p", "%%%0"), err)
    end
    -- an IP address still works, and the port is the bound one
    local server = assert(A.listen("127.0.0.1", 0, function() end))
    assert.is_true(server.port > 0)
    server.close()
    uv.run("nowait")
  end)
end)
