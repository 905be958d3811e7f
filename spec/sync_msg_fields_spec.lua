-- odo.core.sync_msg field by field: each of the seven messages built by
-- hand from the layouts in docs/PROTOCOL.md (string.pack, independent of
-- the codec), with a different value in every field, decodes to a table
-- naming each value where the document puts it, and that table encodes
-- back to the same bytes. A binding that mixed two fields up, or wrote
-- one at the wrong width, fails here.
local core = require "odo.core"
local M = core.sync_msg

local HASH_A, HASH_B = ("\xaa"):rep(32), ("\xbb"):rep(32)

-- {type, bytes, the table decode must give}
local CASES = {
  catalogue = { M.CATALOGUE,
    string.pack(">BI2s2s2I4", 1, 2, "der-one", "der-two", 2)
      .. string.pack(">s1I8I8I8I8BBI2", "s1", 1, 0x0102030405060708, 3, 4, 1, 7, 1)
      .. string.pack(">s1I8I8I8I8BBI2", "s2", 11, 12, 13, 14, 2, 255, 0xffff),
    { kind = "catalogue", flags = 1, keys = { "der-one", "der-two" }, entries = {
      { id = "s1", first = 1, last = 0x0102030405060708, snapshot = 3, fresh = 4, flags = 1, hops = 7, key = 1 },
      { id = "s2", first = 11, last = 12, snapshot = 13, fresh = 14, flags = 2, hops = 255, key = 0xffff },
    } } },
  subscribe = { M.SUBSCRIBE,
    string.pack(">BI4s1I8s1I8", 3, 2, "s1", 5, "s2", 0x0a0b0c0d0e0f1011),
    { kind = "subscribe", flags = 3,
      entries = { { id = "s1", from = 5 }, { id = "s2", from = 0x0a0b0c0d0e0f1011 } } } },
  unsubscribe = { M.UNSUBSCRIBE,
    string.pack(">I4s1s1", 2, "s1", "stream-two"),
    { kind = "unsubscribe", ids = { "s1", "stream-two" } } },
  snapshot = { M.SNAPSHOT,
    string.pack(">s1I8", "s1", 9) .. HASH_A .. string.pack(">s1s2I4I4", "last", "sig!", 100000, 70000) .. "chunk",
    { kind = "snapshot", stream = "s1", rev = 9, hash = HASH_A, format = "last", sig = "sig!", total = 100000,
      offset = 70000, data = "chunk" } },
  events = { M.EVENTS,
    string.pack(">s1I8I4", "s1", 41, 2)
      .. string.pack(">I8s1s4", 0x0000018c00000001, "t", "one")
      .. string.pack(">I8s1s4", 2, "type-two", "")
      .. string.pack(">I8", 42) .. HASH_B .. string.pack(">s2", "signature"),
    { kind = "events", stream = "s1", first = 41, events = {
      { ts = 0x0000018c00000001, type = "t", data = "one" }, { ts = 2, type = "type-two", data = "" },
    }, head_rev = 42, head_hash = HASH_B, sig = "signature" } },
  caught_up = { M.CAUGHT_UP, string.pack(">s1I8", "s1", 0x7fffffffffffffff),
    { kind = "caught_up", stream = "s1", rev = 0x7fffffffffffffff } },
  refused = { M.REFUSED, string.pack(">s1I2s2", "s1", 0x0203, "no reason"),
    { kind = "refused", stream = "s1", code = 0x0203, reason = "no reason" } },
}

describe("odo.core.sync_msg", function()
  for name, c in pairs(CASES) do
    it(("names every field of a %s where the document puts it, and encodes it back"):format(name), function()
      local t, err = M.decode(c[1], c[2])
      assert.is_table(t, err)
      assert.same(c[3], t)
      local typ, bytes = M.encode(c[3])
      assert.equal(c[1], typ)
      assert.equal(c[2], bytes)
    end)
  end

  it("refuses a field over its width, naming it", function()
    local t = { kind = "refused", stream = "s1", code = 65536, reason = "r" }
    assert.has_error(function() M.encode(t) end, "sync message field code is over 65535")
    t = { kind = "snapshot", stream = "s1", rev = 1, hash = HASH_A, format = "f", sig = "",
      total = 2 ^ 32, offset = 0, data = "" }
    assert.has_error(function() M.encode(t) end, "sync message field total is over 4294967295")
    t = { kind = "events", stream = "s1", first = 1, events = {}, head_rev = 1, head_hash = "short", sig = "" }
    assert.has_error(function() M.encode(t) end, "sync message field head_hash must be 32 bytes")
    t = { kind = "unsubscribe", ids = { "ok", {} } }
    assert.has_error(function() M.encode(t) end, "sync message field ids holds a non-string")
  end)
end)
