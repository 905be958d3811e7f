-- The control socket's framing (odo.control.frame): JSON header lines
-- with raw payloads, read back whole however the bytes are cut.
local Frame = require "odo.control.frame"

describe("control framing", function()
  local function read_all(text, cuts, max_payload)
    local got, bad = {}, {}
    local read = Frame.reader(function(msg, payload) got[#got + 1] = { msg, payload } end,
      function(why) bad[#bad + 1] = why end, max_payload)
    local at = 1
    for _, n in ipairs(cuts) do
      read(nil, text:sub(at, at + n - 1))
      at = at + n
    end
    read(nil, text:sub(at))
    read(nil, nil)
    return got, bad
  end

  local stream = Frame.message { cmd = "append", stream = "a/b" }
    .. Frame.message({}, "x\ny\n\0")
    .. Frame.message({ lines = 2 }, "")
    .. Frame.message({ ["end"] = true })

  local function check(got)
    assert.equal(5, #got)
    assert.same({ "append", "a/b" }, { got[1][1].cmd, got[1][1].stream })
    assert.same({ 5, "x\ny\n\0" }, { got[2][1].bytes, got[2][2] })
    assert.same({ 2, "" }, { got[3][1].lines, got[3][2] })
    assert.is_true(got[4][1]["end"])
    assert.same({ nil, "EOF" }, got[5])
  end

  it("reads messages whole, cut anywhere", function()
    check(read_all(stream, {}))
    local ones = {}
    for i = 1, #stream do ones[i] = 1 end
    check(read_all(stream, ones))
    for cut = 1, #stream - 1 do check(read_all(stream, { cut })) end
  end)

  it("skips a line that is not a JSON object, and stops at a payload over the limit", function()
    local got, bad = read_all("not json\n" .. Frame.message { a = 1 }, {})
    assert.same({ 1, "EOF" }, { got[1][1].a, got[2][2] })
    assert.same({ "EINVAL: a message is one JSON object per line" }, bad)
    got, bad = read_all(Frame.message({}, "12345") .. Frame.message { a = 1 }, {}, 4)
    assert.same({ { nil, "EPROTO: a payload of 5 bytes (at most 4)" } }, got)
    assert.same({ "EPROTO: a payload of 5 bytes (at most 4)" }, bad)
  end)

  it("keeps empty arrays arrays and leaves / unescaped", function()
    local text = Frame.message { a = setmetatable({}, Frame.array_mt), p = "x/y" }
    assert.is_truthy(text:find('"a":[]', 1, true))
    assert.is_truthy(text:find('"p":"x/y"', 1, true))
    assert.equal("\n", text:sub(-1))
  end)
end)
