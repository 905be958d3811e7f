-- odo.control.appender over a real store: bytes in pieces of any size
-- become events (by line, whole, or one per piece), in durable batches,
-- with an event over the limit refused as soon as it is over it.
local H = require "helper"
local Appender = require "odo.control.appender"
local core = require "odo.core"

describe("the appender", function()
  local store
  before_each(function() store = assert(require("odo").open_store(H.tmpdir() .. "/store", { node_id = "me" })) end)
  after_each(function() store:close() end)
  teardown(H.cleanup)

  local function appender(split, opts)
    opts = opts or {}
    opts.split = split
    return Appender.new(function(events) return store:append(nil, events) end, opts)
  end

  local function data()
    local t = {}
    for ev in store:events() do t[#t + 1] = ev.data end
    return t
  end

  it("splits lines across pieces, keeps empty lines and a last line without a newline", function()
    local ap = appender("lines")
    for _, piece in ipairs({ "a", "b\n\nc\r", "\nd" }) do assert.is_true(ap:feed(piece)) end
    assert.same({ 4, 4 }, { ap:finish() })
    assert.same({ "ab", "", "c\r", "d" }, data())
  end)

  it("takes everything as one event (whole), or each piece as one (each), with the type given", function()
    local ap = appender("whole", { type = "blob" })
    ap:feed("x\n")
    ap:feed("\0y")
    assert.same({ 1, 1 }, { ap:finish() })
    ap = appender("each")
    ap:feed("p\nq")
    ap:feed("")
    assert.same({ 3, 2 }, { ap:finish() })
    assert.same({ "x\n\0y", "p\nq", "" }, data())
    assert.equal("blob", store:read(nil, 1, 1)[1].type)
    assert.equal("text", store:read(nil, 2, 2)[1].type)
  end)

  it("writes in batches of at most 10,000 events, telling each", function()
    local told = {}
    local ap = appender("lines", { on_commit = function(last, events) told[#told + 1] = { last, events } end })
    ap:feed(("e\n"):rep(25000))
    assert.same({ 25000, 25000 }, { ap:finish() })
    assert.same({ { 10000, 10000 }, { 20000, 20000 }, { 25000, 25000 } }, told)
  end)

  it("says there is nothing to append when there is nothing", function()
    for _, split in ipairs({ "lines", "whole", "each" }) do
      local last, err, name = appender(split):finish()
      assert.same({ nil, "EINVAL: nothing to append", "EINVAL" }, { last, err, name })
    end
  end)

  it("refuses an event over the limit as soon as it is over it, keeping what came before", function()
    local ap = appender("lines")
    assert.is_true(ap:feed("one\ntwo\n" .. ("x"):rep(core.max_data)))
    local ok, err, name = ap:feed("x")
    assert.is_nil(ok)
    assert.equal("ETOOBIG", name)
    assert.equal(("ETOOBIG: line 3 is over %d bytes, the limit of an event's data; the 2 before it were"
      .. " (last revision 2)"):format(core.max_data), err)
    assert.same({ nil, err, "ETOOBIG" }, { ap:feed("more\n") }) -- it stays refused
    assert.same({ "one", "two" }, data())
  end)

  it("reports a store's refusal with what was appended before it", function()
    local ap = appender("lines", { type = ("t"):rep(256) })
    ap:feed("a\n")
    local last, err = ap:finish()
    assert.is_nil(last)
    assert.matches("^ETOOBIG: event type is 256 bytes", err)
    assert.same({}, data())
  end)
end)
