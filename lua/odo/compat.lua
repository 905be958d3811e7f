-- luacheck: std max

--- The few helpers that differ between Lua 5.1 (LuaJIT) and 5.4.
-- @module odo.compat
local C = {}

C.unpack = table.unpack or unpack

--- Whether the running code is a coroutine that may yield.
function C.in_coroutine()
  local co, main = coroutine.running()
  if not co or main then return false end
  return coroutine.isyieldable == nil or coroutine.isyieldable()
end

function C.pack(...)
  return { n = select("#", ...), ... }
end

--- Whether x is an integer-valued number.
function C.is_integer(x)
  if math.type then return math.type(x) == "integer" end
  return type(x) == "number" and x % 1 == 0
end

return C
