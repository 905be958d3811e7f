--- The log lines of `odo run`, on stderr: human text (the default), or
-- with `--log-format json` one JSON object per line, `{"time", "level",
-- "event", "peer", "stream", "message"}` (absent fields are null), for
-- operators who ship logs to a collector.
--
-- A line may carry fields: `Log.write(message, {event =, peer =, stream
-- =, level =})`; a text line shows the message alone, as before. Without
-- an explicit level, a message starting "error: " is an error. Something
-- that draws on the terminal (catch-up progress) sets `Log.around` to be
-- told before and after each line.
--
-- @module odo.cli.log
local cjson = require "cjson"

local Log = { format = "text", out = io.stderr }

--- Called as `around("before")` and `around("after")` for each line.
Log.around = nil

local function iso_time()
  local ok, uv = pcall(require, "luv")
  if ok and uv.gettimeofday then
    local s, us = uv.gettimeofday()
    return os.date("!%Y-%m-%dT%H:%M:%S", s) .. (".%03dZ"):format(math.floor(us / 1000))
  end
  return os.date("!%Y-%m-%dT%H:%M:%SZ")
end

local FIELDS = { "time", "level", "event", "peer", "stream", "message" }

--- The JSON line of a message and its fields (keys in a fixed order).
function Log.json_line(message, fields)
  fields = fields or {}
  local level = fields.level or (message:match("^error: ") and "error" or "info")
  local t = {
    time = iso_time(), level = level, event = fields.event or "node",
    peer = fields.peer, stream = fields.stream, message = message,
  }
  local parts = {}
  for i, k in ipairs(FIELDS) do
    local v = t[k]
    parts[i] = cjson.encode(k) .. ":" .. (v == nil and "null" or cjson.encode(v))
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

--- Writes one line.
-- @tparam string message
-- @tparam[opt] table fields `event`, `peer`, `stream`, `level`
function Log.write(message, fields)
  local line
  if Log.format == "json" then
    line = Log.json_line(message, fields):gsub("\\/", "/")
  else
    line = os.date("!%Y-%m-%dT%H:%M:%SZ ") .. message
  end
  if Log.around then Log.around("before") end
  Log.out:write(line, "\n")
  Log.out:flush()
  if Log.around then Log.around("after") end
end

--- Fields for the lines `printf` writes (set by call sites that only
-- pass a message, such as `odo run`'s peer lines).
Log.context = nil

--- `log(fmt, ...)` as `odo run` calls it: the message, with the current
-- context's fields.
function Log.printf(fmt, ...)
  Log.write(fmt:format(...), Log.context)
end

return Log
