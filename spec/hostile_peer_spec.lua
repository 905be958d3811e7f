-- A peer that breaks the protocol on purpose: floods, malformed or
-- trailing bytes, frames cut by a TLS close, and calls with bad arguments.
-- Each case checks that the session and the sync engine refuse it with a
-- reason, keep their memory bounded, and never send a broken frame.
local H = require "helper"
local core = require "odo.core"
local Store = require "odo.store"
local Raw = require "raw_peer"

local SUBSCRIBE, UNSUBSCRIBE, PING = 0x11, 0x12, 0x02

describe("a hostile peer", function()
  local pki, ta, tb
  setup(function()
    pki = H.pki(H.tmpdir())
    ta = assert(core.tls_context(pki.node("a")))
    tb = assert(core.tls_context(pki.node("b")))
  end)
  teardown(H.cleanup)

  -- Two introduced sessions: a (client) and b (server), b with the given
  -- watermarks.
  local function pair(opts_b)
    local a = core.session(ta, { port = 1 })
    local opts = opts_b or {}
    opts.port, opts.server = 2, true
    local b = core.session(tb, opts)
    a:start()
    H.pump(a, b)
    return a, b
  end

  -- A sync engine over a fresh store of `tls`'s node, attached to session s.
  local function engine(s, tls, peer_tls)
    local store = assert(Store.open(H.tmpdir() .. "/store", { node_id = tls:id() }))
    local y = core.sync(store.core, tls)
    y:attach(s, peer_tls:id())
    return y, store
  end

  local function frame(t, payload) return string.pack(">I4B", #payload + 1, t) .. payload end

  local function violation(events) return H.find_event(events, "violation") end

  -- Every frame b sent to a, as {type, payload}, and a's other events.
  local function received(a, b)
    local _, ea = H.pump(b, a)
    local out = {}
    for _, e in ipairs(ea) do
      if e.event == "message" then out[#out + 1] = { type = e.type, payload = e.payload } end
    end
    return out, ea
  end

  -- A raw peer with a's certificate, introduced to a server session of b
  -- with the given options.
  local function raw_pair(opts_b)
    local opts = opts_b or {}
    opts.port, opts.server = 2, true
    local b = core.session(tb, opts)
    local a = Raw.connect(ta, b, { id = ta:id(), port = 1 })
    assert.equal("open", b:info().state)
    return a, b
  end

  it("a PING flood is not answered past the output's high watermark", function()
    local a, b = raw_pair({ high = 64 * 1024, low = 16 * 1024 })
    a:write(frame(PING, ("\0"):rep(8)):rep(50000))
    -- b reads everything a sent but never gets its own output taken
    local o = a.pipe:output()
    while o do
      b:feed(o, 0)
      o = a.pipe:output()
    end
    local queued = b:info().queued
    assert.is_true(queued < 64 * 1024 + 4096, "b queued " .. queued .. " bytes of PONGs")
    assert.is_false(b:writable())
  end)

  it("a session closed inside a frame by TLS close_notify is not a normal close", function()
    local a = raw_pair()
    a:write(string.pack(">I4B", 1000, 0x20) .. ("z"):rep(10))
    a:close()
    local eb = a:pump()
    local closed = H.find_event(eb, "closed")
    assert.is_truthy(closed)
    assert.matches("closed the connection inside a frame", closed.reason)
    assert.is_nil(H.find_event(eb, "message"))
  end)

  it("SUBSCRIBE floods of unknown streams are refused only while the asker reads the answers", function()
    local _, b = pair({ high = 64 * 1024, low = 16 * 1024 })
    local y = engine(b, tb, ta)
    local ids = {}
    for i = 1, 4096 do ids[i] = string.pack(">s1I8", "unknown-" .. i, 1) end
    local p = string.pack(">BI4", 1, #ids) .. table.concat(ids)
    local v
    for _ = 1, 64 do
      v = violation(y:handle(b, SUBSCRIBE, p))
      if v then break end
    end
    assert.is_truthy(v, "the flood was answered without end")
    assert.equal("protocol", v.code)
    assert.matches("^the peer keeps asking for streams without reading the answers "
      .. "%(%d+ bytes wait for it%)$", v.reason)
    assert.is_true(b:info().queued < 3 * 64 * 1024, "queued " .. b:info().queued)
  end)

  it("SUBSCRIBE and UNSUBSCRIBE frames with trailing bytes or too many entries are violations", function()
    local _, b = pair()
    local y = engine(b, tb, ta)
    local cases = {
      { SUBSCRIBE, string.pack(">BI4", 1, 0) .. "junk", "a malformed SUBSCRIBE entry" },
      { SUBSCRIBE, string.pack(">BI4", 1, 1) .. string.pack(">s1I8", "s", 1) .. "x",
        "a malformed SUBSCRIBE entry" },
      { SUBSCRIBE, string.pack(">BI4", 1, 4097) .. string.pack(">s1I8", "s", 1):rep(4097),
        "a malformed SUBSCRIBE (at most 4096 streams a frame)" },
      { UNSUBSCRIBE, string.pack(">I4", 0) .. "junk", "a malformed UNSUBSCRIBE" },
      { UNSUBSCRIBE, string.pack(">I4", 1) .. "\0", "a malformed UNSUBSCRIBE" },
    }
    for i, c in ipairs(cases) do
      local v = violation(y:handle(b, c[1], c[2]))
      assert.is_truthy(v, "case " .. i .. " was accepted")
      assert.same({ "protocol", c[3] }, { v.code, v.reason }, "case " .. i)
      -- the codec Lua sees says the same
      local _, err = core.sync_msg.decode(c[1], c[2])
      assert.equal("EPROTO: " .. c[3], err)
    end
  end)

  it("a subscribe() call with one bad id raises and sends nothing, so the next frame is whole", function()
    local a, b = pair()
    local y = engine(b, tb, ta)
    local ya = engine(a, ta, tb)
    assert.has_error(function()
      y:subscribe(b, { { id = "x", from = 1 }, { id = ("y"):rep(300), from = 1 } }, true)
    end)
    assert.has_error(function() y:unsubscribe(b, { "" }) end)
    assert.is_true(y:catalogue(b))
    local frames, ea = received(a, b)
    assert.is_nil(H.find_event(ea, "closed"))
    assert.equal(1, #frames)
    local notes = ya:handle(a, frames[1].type, frames[1].payload)
    assert.equal("catalogue", notes[1].event)
  end)

  it("subscribe() of more streams than one frame holds splits them into whole frames", function()
    local a, b = pair()
    local y = engine(b, tb, ta)
    local want = {}
    for i = 1, 5000 do want[i] = { id = "s" .. i, from = 1 } end
    y:subscribe(b, want, true)
    local frames = received(a, b)
    assert.equal(2, #frames)
    local total = 0
    for _, f in ipairs(frames) do
      local _, count = string.unpack(">BI4", f.payload)
      assert.is_true(count <= 4096)
      total = total + count
    end
    assert.equal(5000, total)
  end)

  it("catalogue() with arguments of the wrong type raises instead of crashing", function()
    local _, b = pair()
    local y = engine(b, tb, ta)
    assert.has_error(function() y:catalogue(b, "abcdef") end)
    assert.has_error(function() y:catalogue(b, 42) end)
  end)

  it("an EVENTS frame of a million tiny events costs memory only while it is checked", function()
    local _, b = pair()
    local y = engine(b, tb, ta)
    local sid = ta:id()
    y:subscribe(b, { { id = sid, from = 1 } }, true)
    local function rss_kb()
      collectgarbage()
      collectgarbage()
      for l in io.lines("/proc/self/status") do
        local kb = l:match("^VmRSS:%s+(%d+)")
        if kb then return tonumber(kb) end
      end
    end
    local before = rss_kb()
    local n = 1100000
    local v = violation(y:handle(b, 0x14, string.pack(">s1I8I4", sid, 1, n)
      .. string.pack(">I8s1s4", 0, "t", ""):rep(n)
      .. string.pack(">I8", n) .. ("\0"):rep(32) .. string.pack(">s2", "x")))
    assert.is_truthy(v)
    assert.equal("verification failed", v.code)
    -- checked whole, then refused for the head no known key signed
    assert.equal(("no public key is known for source %s..."):format(sid:sub(1, 16)), v.reason)
    -- the engine keeps no array of a million parsed events (about 85 MB);
    -- under AddressSanitizer freed memory stays resident in its quarantine
    if core._leak_check then return end
    local grown = rss_kb() - before
    assert.is_true(grown < 40 * 1024, "the resident set grew by " .. grown .. " kB")
  end)
end)
