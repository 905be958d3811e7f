--- The order in which to try SRV records, as RFC 2782 says: lowest
-- priority first; within one priority, a weighted random order, where a
-- record's chance to come next is its weight over the weights left.
--
-- @module odo.discovery.srv
local S = {}

--- The default random source: an integer from 0 to `total`, inclusive.
function S.random(total)
  return math.random(0, total)
end

-- One priority's records in weighted random order (RFC 2782's selection:
-- records of weight 0 first, running sums, the first whose sum reaches a
-- random number from 0 to the total).
local function weighted(list, random)
  local left, out = {}, {}
  for _, r in ipairs(list) do if r.weight == 0 then left[#left + 1] = r end end
  for _, r in ipairs(list) do if r.weight ~= 0 then left[#left + 1] = r end end
  while #left > 0 do
    local total = 0
    for _, r in ipairs(left) do total = total + r.weight end
    local pick = random(total)
    assert(type(pick) == "number" and pick >= 0 and pick <= total and pick == math.floor(pick),
      ("the SRV random source must return an integer from 0 to %d, got %s"):format(total, tostring(pick)))
    local sum, chosen = 0, #left
    for i, r in ipairs(left) do
      sum = sum + r.weight
      if sum >= pick then
        chosen = i
        break
      end
    end
    out[#out + 1] = table.remove(left, chosen)
  end
  return out
end

--- Orders SRV records (`{target, port, priority, weight, ...}`, in any
-- order) for trying: a new array; `records` is left as it is.
-- @tparam table records
-- @tparam[opt] function random `random(total)` returns an integer from 0
--   to `total` inclusive (default `S.random`); a spec passes a fixed one
-- @treturn table
function S.order(records, random)
  random = random or S.random
  local by_priority, priorities = {}, {}
  for _, r in ipairs(records) do
    local p = r.priority
    if not by_priority[p] then
      by_priority[p] = {}
      priorities[#priorities + 1] = p
    end
    table.insert(by_priority[p], r)
  end
  table.sort(priorities)
  local out = {}
  for _, p in ipairs(priorities) do
    for _, r in ipairs(weighted(by_priority[p], random)) do out[#out + 1] = r end
  end
  return out
end

return S
