-- A script that closes its nodes and ends exits 0, with no uv.run() after
-- close: each case runs in a child interpreter, since a crash in lua_close
-- (luv collecting handles that are still closing) is only visible from
-- outside, as exit status 139.
local H = require "helper"

describe("a script that closes its node and ends", function()
  local tmp, pki
  setup(function()
    tmp = H.tmpdir()
    pki = H.pki(tmp)
  end)
  teardown(H.cleanup)

  local function tls_of(c)
    return ("{ ca = %q, cert = %q, key = %q }"):format(c.ca, c.cert, c.key)
  end

  it("exits 0 for a local journal", function()
    local out, status = H.lua_child(([[
      local odo = require "odo"
      local n = assert(odo.node { dir = %q, node_id = "me" })
      print("rev", (n:append(nil, { type = "t", data = "x" })))
      n:close()
    ]]):format(tmp .. "/local"))
    assert.equal(0, status, out)
    assert.equal("rev\t1\n", out)
  end)

  it("exits 0 for a TLS node that listened, and for two that were connected", function()
    local a, b = pki.node("exit-a"), pki.node("exit-b")
    local out, status = H.lua_child(([[
      local odo = require "odo"
      local uv = require "luv"
      local a = assert(odo.node { dir = %q, tls = %s, listen = "127.0.0.1:0" })
      local b = assert(odo.node { dir = %q, tls = %s, listen = "127.0.0.1:0",
        peers = { "127.0.0.1:" .. a.listen.port } })
      assert(a:append(nil, { type = "t", data = "over tls" }))
      local t = uv.new_timer()
      t:start(20, 20, function()
        local st = b.store:stream(a.id)
        if st and st.last == 1 then t:close(); uv.stop() end
      end)
      uv.run()
      print("replicated", b.store:read(a.id, 1, 1)[1].data)
      a:close()
      b:close()
      local lone = assert(odo.node { dir = %q, tls = %s, listen = "127.0.0.1:0" })
      lone:close()
    ]]):format(tmp .. "/a", tls_of(a), tmp .. "/b", tls_of(b), tmp .. "/lone", tls_of(a)))
    assert.equal(0, status, out)
    assert.equal("replicated\tover tls\n", out)
  end)
end)
