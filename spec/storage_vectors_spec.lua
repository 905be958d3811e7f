-- docs/STORAGE.md's test vectors: the code produces them, and the page
-- still shows them.
local H = require "helper"
local Store = require "odo.store"

local V = {
  h0 = "f89a8a944305f0c9cc180c5c96412207fdbe4e8be6ad461f41eeb58bd92983fb",
  enc1 = "000000000000000100000000000003e8037075740000000568656c6c6f",
  h1 = "7ac6859037978f826e3fb39e05de2067591e27e84f2be34d1cda1a67f1fb6f87",
  h2 = "8f51a6ba401cff46eb7a79b8afa578d989f835805a9ea3c173801446e2e7c656",
}

describe("storage test vectors", function()
  after_each(H.cleanup)

  it("match the code", function()
    local dir = H.tmpdir()
    local s = assert(Store.open(dir .. "/store", { node_id = "node-a" }))
    s:append(nil, { { type = "put", data = "hello", ts = 1000 }, { type = "x", data = "", ts = 1001 } })
    local evs = s:read("node-a")
    s:close()
    assert.equal(V.h0, H.hex(H.sha256("odo-journal chain v1\0node-a")))
    assert.equal(V.enc1, H.hex(H.encode_event(1, 1000, "put", "hello")))
    assert.equal(V.h1, H.hex(evs[1].hash))
    assert.equal(V.h2, H.hex(evs[2].hash))
    local recs = {}
    for _, r in ipairs(H.records(dir .. "/store")) do recs[H.hex(r.key)] = H.hex(r.value) end
    assert.equal("69d1728a01" .. "0000000000000001" .. "0000000000000001" .. "0000000000000000"
      .. "0000000000000000" .. V.h0, recs["636e6f64652d61"])
    assert.equal("d46d090e" .. V.h1 .. "00000000000003e8" .. "03" .. "707574" .. "68656c6c6f",
      recs["7a00000000000000010000000000000001"])
    assert.equal("32ec89f7" .. V.h2 .. "00000000000003e9" .. "01" .. "78",
      recs["7a00000000000000010000000000000002"])
  end)

  it("are the ones docs/STORAGE.md shows", function()
    local fh = assert(io.open(H.root .. "/docs/STORAGE.md"))
    local doc = fh:read("a")
    fh:close()
    for _, k in ipairs({ "h0", "enc1", "h1", "h2" }) do
      assert.truthy(doc:find(V[k], 1, true), k .. " is missing from docs/STORAGE.md")
    end
    assert.truthy(doc:find("d46d090e " .. V.h1, 1, true))
    assert.truthy(doc:find("32ec89f7 " .. V.h2, 1, true))
    assert.truthy(doc:find("69d1728a 01 0000000000000001 0000000000000001", 1, true))
  end)
end)
