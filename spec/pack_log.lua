-- What the packing specs (spec/pack_spec.lua, spec/pack_node_spec.lua)
-- share: a closed store's log read raw, and reads compared field by field.
local H = require "helper"
local assert = require "luassert"

local M = {}

--- The log records of stream number `num` (default: the one the
-- catalogue names `id`) in the closed store under node folder dir:
-- events (revisions), segments ({first, last}), heads (revisions), and
-- raw ("keyhex=valuehex", every record).
function M.records(dir, num, id)
  local recs = H.records(dir .. "/store")
  for _, rec in ipairs(recs) do
    if id and rec.key == "c" .. id then num = string.unpack(">I8", rec.value, 6) end
  end
  local prefix = "z" .. string.pack(">I8", num)
  local out = { events = {}, segments = {}, heads = {}, raw = {} }
  for _, rec in ipairs(recs) do
    local k = rec.key
    if k:sub(1, 9) == prefix then
      local rev = string.unpack(">I8", k, 10)
      out.raw[#out.raw + 1] = H.hex(k) .. "=" .. H.hex(rec.value)
      if #k == 17 then
        out.events[#out.events + 1] = rev
      elseif k:byte(18) == 1 then
        out.heads[#out.heads + 1] = rev
      else
        local count = string.unpack(">I4", rec.value, 6)
        out.segments[#out.segments + 1] = { rev - count + 1, rev }
      end
    end
  end
  return out
end

--- Fails unless both arrays of events are the same, field by field.
function M.same_events(want, got)
  assert.equal(#want, #got)
  for i = 1, #want do
    for _, f in ipairs({ "type", "data", "ts", "rev", "hash" }) do
      assert.equal(want[i][f], got[i][f], ("revision %d, %s"):format(want[i].rev, f))
    end
  end
end

return M
