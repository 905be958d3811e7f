-- luacheck: std max

--- The few helpers that differ between Lua 5.1 (LuaJIT) and 5.4.
-- Each takes the interpreter's own function when it has one, so Lua 5.4
-- behaves exactly as without them; the fallbacks are plain Lua 5.1.
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

--- `math.tointeger`: x (a number, or a string that reads as one) as an
-- integer when its value is whole, else nil. On Lua 5.1 every number is a
-- float; the result is the same whole number, which prints without ".0".
-- @function tointeger
C.tointeger = math.tointeger or function(x)
  if type(x) == "string" then x = tonumber(x) end
  if type(x) == "number" and x % 1 == 0 then return x end -- NaN and infinities fail: x % 1 is NaN
  return nil
end

--- `xpcall(f, msgh, ...)` passing the arguments to f, as Lua 5.2+ and
-- LuaJIT do (Lua 5.1's xpcall calls f with none).
-- @function xpcall
C.xpcall = xpcall
if not select(2, xpcall(function(v) return v end, function() end, true)) then
  C.xpcall = function(f, msgh, ...)
    local n = select("#", ...)
    if n == 0 then return xpcall(f, msgh) end
    local args = { ... }
    return xpcall(function() return f(C.unpack(args, 1, n)) end, msgh)
  end
end

-- Whether s is well-formed UTF-8 (RFC 3629: no overlong forms, no
-- surrogates, nothing above U+10FFFF), in plain Lua.
local function utf8_valid(s)
  local i, n = 1, #s
  while i <= n do
    i = s:find("[\128-\255]", i) -- ASCII runs are skipped in C
    if not i then return true end
    local c, c2, c3, c4 = s:byte(i, i + 3)
    if c >= 0xC2 and c <= 0xDF then
      if not c2 or c2 < 0x80 or c2 > 0xBF then return false end
      i = i + 2
    elseif c >= 0xE0 and c <= 0xEF then
      if not c3 or c2 < (c == 0xE0 and 0xA0 or 0x80) or c2 > (c == 0xED and 0x9F or 0xBF)
        or c3 < 0x80 or c3 > 0xBF then
        return false
      end
      i = i + 3
    elseif c >= 0xF0 and c <= 0xF4 then
      if not c4 or c2 < (c == 0xF0 and 0x90 or 0x80) or c2 > (c == 0xF4 and 0x8F or 0xBF)
        or c3 < 0x80 or c3 > 0xBF or c4 < 0x80 or c4 > 0xBF then
        return false
      end
      i = i + 4
    else
      return false -- a continuation byte first, C0/C1 (overlong) or F5..FF
    end
  end
  return true
end

--- Whether the string s is well-formed UTF-8 (what `utf8.len` accepts).
-- @function utf8_valid
C.utf8_valid = utf8_valid
if utf8 and utf8.len then
  local len = utf8.len
  C.utf8_valid = function(s) return len(s) ~= nil end
end
C._utf8_valid_lua = utf8_valid -- the fallback itself, for the compatibility smoke

--- `loadfile(path, "t", env)`: a Lua text file as a function whose
-- global environment is env (on Lua 5.1 through setfenv).
-- @treturn function|nil
-- @treturn[2] string the error
function C.loadfile(path, env)
  if not setfenv then
    if env == nil then return loadfile(path, "t") end -- an explicit nil would be the environment
    return loadfile(path, "t", env)
  end
  local f = io.open(path, "rb")
  if f then
    local first = f:read(1)
    f:close()
    if first == "\27" then
      return nil, "attempt to load a binary chunk (mode is 't') from " .. path
    end
  end
  local chunk, err = loadfile(path)
  if chunk and env then setfenv(chunk, env) end
  return chunk, err
end

return C
