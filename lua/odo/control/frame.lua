--- The control socket's framing: a message is one JSON object on one line,
-- followed, when the object has `"bytes": N`, by exactly N raw bytes (its
-- payload). See docs/CLI.md, "The control protocol".
--
-- @module odo.control.frame

-- (plain Lua 5.1: odo-journal runs on 5.1 to 5.4 and LuaJIT; see odo.compat)
local cjson = require "cjson"
local compat = require "odo.compat"

local Frame = {}

--- The longest header line a reader takes (bytes).
Frame.max_header = 1048576

--- The largest payload a reader takes by default (bytes): an event's
-- data limit and some room. (A client reading a node's tail lines takes
-- more: a snapshot line carries a whole snapshot.)
Frame.max_payload = 8388608

--- Marks a table as a JSON array (so an empty one encodes as [], which
-- lua-cjson 2.1 cannot tell from an empty object).
Frame.array_mt = {}

local EMPTY = "\0odo-empty-array\0"

local function mark_empty(v)
  if type(v) ~= "table" then return v end
  if getmetatable(v) == Frame.array_mt and next(v) == nil then return EMPTY end
  local out = {}
  for k, x in pairs(v) do out[k] = mark_empty(x) end
  return out
end

--- JSON text of v, with arrays marked by `Frame.array_mt` kept arrays, and
-- "/" unescaped.
-- @param v a table, string, number or boolean
-- @treturn string
function Frame.encode(v)
  local text = cjson.encode(mark_empty(v))
  text = text:gsub('"\\u0000odo%-empty%-array\\u0000"', "[]")
  -- lua-cjson escapes "/" as "\/"; both are JSON, the plain one reads better
  return (text:gsub("\\/", "/"))
end

--- One message: the header `obj` on a line, then `payload` (when given,
-- the header gets `bytes`).
-- @tparam table obj
-- @tparam[opt] string payload
-- @treturn string
function Frame.message(obj, payload)
  if payload == nil then return Frame.encode(obj) .. "\n" end
  obj.bytes = #payload
  return Frame.encode(obj) .. "\n" .. payload
end

--- A reader for a stream socket's read callback `fn(err, data)`: calls
-- `on_message(obj, payload)` for each whole message (payload nil when the
-- header has no `bytes`), `on_message(nil, why)` once at the end of the
-- stream, and `on_bad(why)` for a line that is not a JSON object (skipped)
-- or a header or payload over the limits (the stream cannot go on: then
-- `on_message(nil, why)` follows and the reader takes nothing more).
-- @tparam function on_message
-- @tparam function on_bad
-- @tparam[opt] integer max_payload default `Frame.max_payload`
-- @treturn function
function Frame.reader(on_message, on_bad, max_payload)
  max_payload = max_payload or Frame.max_payload
  local buf, pos = "", 1
  local want -- a header whose payload is still coming
  local pieces, have = {}, 0 -- the payload's bytes so far (not copied until whole)
  local ended = false
  local function stop(why)
    ended = true
    on_bad(why)
    on_message(nil, why)
  end
  return function(err, data)
    if ended then return end
    if err or not data then
      ended = true
      return on_message(nil, err or "EOF")
    end
    if want then
      pieces[#pieces + 1] = data
      have = have + #data
      if have < want.bytes then return end
      buf, pos = table.concat(pieces), 1
      pieces, have = {}, 0
    else
      buf = (pos > 1 and buf:sub(pos) or buf) .. data
      pos = 1
    end
    while not ended do
      if want then
        if #buf - pos + 1 < want.bytes then
          -- the rest comes later: keep what is here as the first piece
          pieces[1] = buf:sub(pos)
          have = #pieces[1]
          buf, pos = "", 1
          return
        end
        local h, payload = want, buf:sub(pos, pos + want.bytes - 1)
        pos = pos + want.bytes
        want = nil
        on_message(h, payload)
      else
        local nl = buf:find("\n", pos, true)
        if not nl then
          if #buf - pos + 1 > Frame.max_header then
            return stop("EPROTO: a header line is over " .. Frame.max_header .. " bytes")
          end
          return
        end
        local line = buf:sub(pos, nl - 1)
        pos = nl + 1
        local ok, obj = pcall(cjson.decode, line)
        if not ok or type(obj) ~= "table" then
          on_bad("EINVAL: a message is one JSON object per line")
        elseif obj.bytes ~= nil then
          local n = compat.tointeger(obj.bytes)
          if not n or n < 0 or n > max_payload then
            return stop("EPROTO: a payload of " .. tostring(n or obj.bytes) .. " bytes (at most " .. max_payload .. ")")
          end
          obj.bytes = n
          want = obj
        else
          on_message(obj)
        end
      end
    end
  end
end

return Frame
