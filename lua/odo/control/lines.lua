--- The lines `odo tail` prints, written by hand so the keys keep their
-- order: `{"stream","rev","ts","type","data"}` per event (or
-- `"data_base64"` instead of `"data"` when the bytes are not UTF-8), and
-- `{"kind":"snapshot","stream","rev","format","origin","data"}` for a
-- snapshot. Each value is encoded by lua-cjson. The same text comes from
-- the store and through a running node.
--
-- @module odo.control.lines

-- (plain Lua 5.1: odo-journal runs on 5.1 to 5.4 and LuaJIT; see odo.compat)
local cjson = require "cjson"
local compat = require "odo.compat"

local Lines = {}

local encode = cjson.encode
local utf8_valid = compat.utf8_valid
local concat = table.concat
local floor = math.floor

--- A string as JSON text (with "/" left unescaped).
-- @tparam string s
-- @treturn string
function Lines.json_string(s)
  return (encode(s):gsub("\\/", "/"))
end
local json_string = Lines.json_string

-- The base64 alphabet by 6-bit value, 0..63.
local B64 = {}
for v = 0, 63 do
  B64[v] = ("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"):sub(v + 1, v + 1)
end

--- Base64 (RFC 4648, with padding).
-- @tparam string s
-- @treturn string
function Lines.base64(s)
  local out = {}
  for i = 1, #s, 3 do
    -- 3 bytes a, b, c are 4 values of 6 bits: a's top 6; a's low 2 and
    -- b's top 4; b's low 4 and c's top 2; c's low 6
    local a, b, c = s:byte(i, i + 2)
    local q1, q2 = B64[floor(a / 4)], B64[a % 4 * 16 + floor((b or 0) / 16)]
    local q3 = b and B64[b % 16 * 4 + floor((c or 0) / 64)] or "="
    local q4 = c and B64[c % 64] or "="
    out[#out + 1] = q1 .. q2 .. q3 .. q4
  end
  return concat(out)
end

-- `"data":"..."` for UTF-8 bytes, else `"data_base64":"..."`.
local function data_field(data)
  if utf8_valid(data) then return '"data":' .. json_string(data) end
  return '"data_base64":"' .. Lines.base64(data) .. '"'
end

local EVENT = '{"stream":%s,"rev":%d,"ts":%d,"type":%s,%s}\n'

--- The lines of events `evs` (`{rev, ts, type, data}` each) of `stream`,
-- each ending with a newline, as one string.
-- @tparam string stream
-- @tparam table evs
-- @treturn string
function Lines.events(stream, evs)
  local sj = json_string(stream)
  local out = {}
  for i, ev in ipairs(evs) do
    out[i] = EVENT:format(sj, ev.rev, ev.ts, json_string(ev.type), data_field(ev.data))
  end
  return concat(out)
end

--- The line of a snapshot `snap` (`{rev, format, origin, data}`) of
-- `stream`, ending with a newline.
-- @tparam string stream
-- @tparam table snap
-- @treturn string
function Lines.snapshot(stream, snap)
  return ('{"kind":"snapshot","stream":%s,"rev":%d,"format":%s,"origin":%s,%s}\n'):format(json_string(stream),
    snap.rev, json_string(snap.format or ""), json_string(snap.origin or ""), data_field(snap.data or ""))
end

return Lines
