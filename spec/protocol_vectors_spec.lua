-- docs/PROTOCOL.md's test vectors: the codec produces and reads them, and
-- the page still shows them.
local H = require "helper"
local core = require "odo.core"

local ID = ""
for i = 0, 31 do ID = ID .. ("%02x"):format(i) end

-- name, fields, the frame as docs/PROTOCOL.md writes it (spaces between parts)
local VECTORS = {
  { "hello", { version = 2, id = ID, port = 4000, features = 1, instance = 0x0123456789abcdef },
    "00000035 01 0002 " .. ID .. " 0fa0 0000000000000001 0123456789abcdef" },
  { "ping", { nonce = 42 }, "00000009 02 000000000000002a" },
  { "pong", { nonce = 42 }, "00000009 03 000000000000002a" },
  { "bye", { code = 4, reason = "already connected" }, "00000014 04 0004 616c726561647920636f6e6e6563746564" },
  { "frame", { type = 0x20, payload = "hi" }, "00000003 20 6869" },
}

describe("protocol test vectors", function()
  it("are what the codec encodes and decodes", function()
    for _, v in ipairs(VECTORS) do
      local want = v[3]:gsub(" ", "")
      assert.equal(want, H.hex(core.wire_encode(v[1], v[2])), v[1])
      local got = core.wire_decode(H.unhex(want))
      assert.equal(#want // 2, got.size)
      for k, val in pairs(v[2]) do
        if k ~= "type" and k ~= "payload" then assert.equal(val, got[k], v[1] .. "." .. k) end
      end
    end
    assert.equal("hi", core.wire_decode(core.wire_encode("frame", { type = 0x20, payload = "hi" })).payload)
  end)

  it("are the ones docs/PROTOCOL.md shows", function()
    local fh = assert(io.open(H.root .. "/docs/PROTOCOL.md"))
    local doc = fh:read("a")
    fh:close()
    for _, v in ipairs(VECTORS) do
      assert.truthy(doc:find(v[3], 1, true), v[1] .. " vector missing from docs/PROTOCOL.md")
    end
  end)
end)
