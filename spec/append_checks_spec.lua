-- What an append accepts: one event or an array of them, each {type =
-- string, data = string of bytes, ts = integer ms}. Anything else raises
-- at the caller with the field named, and writes nothing; an event is
-- never dropped without a word.
local H = require "helper"

describe("append checks every field of an event", function()
  local node
  before_each(function() node = H.node() end)
  after_each(function()
    node:close()
    H.cleanup()
  end)

  -- the error raised by fn, which must name this spec file (the caller)
  local function raised(fn)
    local ok, err = pcall(fn)
    assert.is_false(ok)
    assert.matches("append_checks_spec.lua:%d+:", err)
    return err
  end

  it("an event without a type raises and writes nothing (it was dropped, returning the old revision)", function()
    assert.equal(1, node:append(nil, { type = "t", data = "a" }))
    local err = raised(function() node:append(nil, { data = "b" }) end)
    assert.matches("event.type is required, a string such as \"text\", got nil", err, 1, true)
    err = raised(function() node:append_async(nil, { data = "b" }, nil, function() end) end)
    assert.matches("type is required", err, 1, true)
    err = raised(function() node.store:append(nil, { data = "b" }) end)
    assert.matches("type is required", err, 1, true)
    assert.equal(1, node.store:stream(node.id).last)
  end)

  it("names the event and the field that is wrong", function()
    local cases = {
      { { type = 7, data = "x" }, "event.type is required, a string such as \"text\", got number" },
      { { type = "t", data = 5 }, "event.data must be a string of bytes (or nil for none), got number" },
      { { type = "t", ts = 1.5 }, "event.ts must be an integer number of milliseconds since the epoch" },
      { { type = "t", ts = -1 }, "event.ts must be an integer" },
      { { type = "t", ts = "now" }, "event.ts must be an integer" },
      { { { type = "t" }, { data = "no type" } }, "events[2].type is required" },
      { { { type = "t" }, "text" }, "events[2] must be a table {type =, data =, ts =}, got string" },
      { "text", "events must be an event {type =, data =, ts =} or an array of them, got string" },
    }
    for _, c in ipairs(cases) do
      assert.matches(c[2], raised(function() node:append(nil, c[1]) end), 1, true)
      assert.matches(c[2], raised(function() node:append_async(nil, c[1], nil, function() end) end), 1, true)
    end
    assert.is_nil(node.store:stream(node.id))
  end)

  it("stores every field of a well-formed event as given", function()
    assert.equal(1, node:append(nil, { type = "said", data = "b\0\255", ts = 1234 }))
    assert.equal(2, node:append(nil, { { type = "said" } }))
    local evs = node:read(nil, 1, 2)
    assert.same({ 1234, "said", "b\0\255" }, { evs[1].ts, evs[1].type, evs[1].data })
    assert.equal("", evs[2].data)
    assert.is_true(evs[2].ts > 1234)
    -- an empty type is bad input, not a wrong type: refused at run time
    local last, err, name = node:append(nil, { type = "" })
    assert.is_nil(last)
    assert.equal("EINVAL", name, err)
  end)
end)
