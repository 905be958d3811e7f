-- What `odo run` tells its operator: peers named by what is known of them,
-- an address in use named (and nothing left behind), a peer that does
-- not trust this node's certificate said in words (with backoff), and one
-- line per stream when a late joiner has caught up with the swarm.
-- `odo run` processes on loopback, real sockets, real time.
local H = require "helper"
local uv = require "luv"

local CONFIG = [[
return { policy = {
  tick_ms = 100,
  catalogue_push_ms = 50,
  backoff = function(failures)
    io.stderr:write(("backoff after %d failures\n"):format(failures))
    return 150
  end,
  backoff_jitter = 0,
} }
]]

describe("odo run tells its operator", function()
  local w = H.odo_swarm(CONFIG)
  local pki
  setup(function()
    w.setup()
    pki = w.pki
    w.certs("a")
    w.certs("b")
  end)
  teardown(w.teardown)
  after_each(function() w.stop_all("TERM") end)

  local function run(certs, port, peers) return w.start("node", { certs = certs, port = port, peers = peers }) end
  local function logged(p, pattern, plain)
    return H.read_file(p.log):find(pattern, 1, plain) ~= nil
  end
  local function node_id(p)
    assert.is_true(H.wait(function() return logged(p, "listening") end, 20000), H.read_file(p.log))
    return H.read_file(p.log):match("node (%x+) listening")
  end

  it("a late joiner logs one line per stream once caught up with the swarm; incoming peers show no 'nil'", function()
    local ports = H.free_ports(2)
    local a = run(pki.a, ports[1])
    local a_id = node_id(a)
    local out, ok = H.odo_append(a.dir, H.lines(300, "reading "), { "--stream", "sensors" })
    assert.is_true(ok, out)
    assert.is_true(H.odo_cmd("append", "--dir", a.dir, "hello") ~= nil)
    local b = run(pki.b, ports[2], { ports[1] })
    local caught = "stream " .. a_id .. "/sensors caught up with the swarm at revision 300: 300 events in "
    assert.is_true(H.wait(function()
      return logged(b, caught, true) and logged(b, "stream " .. a_id .. " caught up", true)
    end, 30000), H.read_file(b.log))
    local line = H.read_file(b.log):match("stream " .. a_id .. "/sensors caught up[^\n]*")
    assert.matches("300 events in %d[%d.]* m?s %(%d+ events/s%) from " .. a_id:sub(1, 16) .. "$", line)
    -- live events after the catch-up add no line
    assert.is_true(H.odo_cmd("append", "--dir", a.dir, "--stream", "sensors", "live") ~= nil)
    assert.is_true(H.wait(function()
      local st = H.status(b.dir)
      for _, s in ipairs(st and st.streams or {}) do
        if s.id == a_id .. "/sensors" and s.last == 301 then return true end
      end
    end, 20000))
    local _, count = H.read_file(b.log):gsub("/sensors caught up", "")
    assert.equal(1, count)
    -- the incoming peer: its host, and its id once introduced
    local alog = H.read_file(a.log)
    assert.is_nil(alog:find(":nil", 1, true), alog)
    assert.matches("peer %? 127%.0%.0%.1 none %-> incoming %(accepted: from 127%.0%.0%.1:%d+%)", alog)
    assert.matches("peer %x+ 127%.0%.0%.1:" .. ports[2] .. " incoming %-> active", alog)
  end)

  it("names an address in use, and leaves no store behind", function()
    local busy = uv.new_tcp()
    assert(busy:bind("127.0.0.1", 0))
    assert(busy:listen(8, function() end))
    local port = busy:getsockname().port
    local dir = w.tmp .. "/never"
    local out, ok = H.odo_cmd("run", "--dir", dir, "--listen", "127.0.0.1:" .. port,
      "--ca", pki.a.ca, "--cert", pki.a.cert, "--key", pki.a.key)
    assert.is_false(ok)
    assert.matches("cannot listen on 127.0.0.1:" .. port .. ": address already in use", out, 1, true)
    assert.is_nil(os.rename(dir, dir), "the folder was left behind")
    -- a folder that was there stays, without a store in it
    local kept = H.tmpdir()
    local odo = require "odo"
    local node, err, name = odo.node { dir = kept, tls = pki.a, listen = "127.0.0.1:" .. port }
    assert.is_nil(node)
    assert.equal("EADDRINUSE", name)
    assert.equal("EADDRINUSE: cannot listen on 127.0.0.1:" .. port .. ": address already in use", err)
    assert.is_truthy(os.rename(kept, kept))
    assert.is_nil(os.rename(kept .. "/store", kept .. "/store"), "the store was left behind")
    busy:close()
    uv.run("nowait")
  end)

  it("a peer that does not trust this node's certificate is named, in words, and retried with backoff", function()
    local ports = H.free_ports(2)
    local a = run(pki.a, ports[1])
    local a_id = node_id(a)
    -- mallory trusts a's CA, but a does not trust mallory's
    local both = H.write_file(w.tmp .. "/both-cas.pem", H.read_file(pki.ca) .. H.read_file(pki.evil_ca))
    local m = run({ ca = both, cert = pki.mallory.cert, key = pki.mallory.key }, ports[2], { ports[1] })
    assert.is_true(H.wait(function() return logged(m, "backoff after 3 failures", true) end, 20000),
      H.read_file(m.log))
    local log = H.read_file(m.log)
    assert.matches("connecting %-> lifesupport %(tls: the peer " .. a_id:sub(1, 16)
      .. " does not trust this node's certificate %(it sent TLS alert \"unknown CA\"%)", log)
    assert.is_nil(log:find("tlsv1 alert", 1, true), log)
    assert.is_truthy(log:find("backoff after 1 failures\n[^\n]*\n[^\n]*\n[^\n]*backoff after 2 failures", 1))
  end)
end)
