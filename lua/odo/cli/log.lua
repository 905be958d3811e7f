--- The log lines of `odo run`, on stderr: human text (the default), or
-- with `--log-format json` one JSON object per line, `{"time", "level",
-- "event", "peer", "stream", "message"}` in that order (absent fields are
-- null), for operators who ship logs to a collector.
--
-- `Log.write(message, fields)` writes a line with fields (`event`,
-- `peer`, `stream`, `level`); `Log.printf(fmt, ...)` is `odo run`'s
-- `log`, whose fields are read from the line itself: "error: ..." is an
-- error; "peer ID ..." a peer's transition (the peer's whole id, once
-- `attach` gave the node to look it up in); "stream ID caught up ..." a
-- catch-up. Something drawing on the terminal (catch-up progress) sets
-- `Log.around`, told before and after each line.
--
-- @module odo.cli.log
local cjson = require "cjson"

local Log = { format = "text", out = io.stderr }

-- Called as `around("before")` and `around("after")` for each line.
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
-- @tparam string message
-- @tparam[opt] table fields `event` (default "node"), `peer`, `stream`,
--   `level` (default "info")
-- @treturn string
function Log.json_line(message, fields)
  fields = fields or {}
  local t = {
    time = iso_time(), level = fields.level or "info", event = fields.event or "node",
    peer = fields.peer, stream = fields.stream, message = message,
  }
  local parts = {}
  for i, k in ipairs(FIELDS) do
    local v = t[k]
    parts[i] = cjson.encode(k) .. ":" .. (v == nil and "null" or cjson.encode(v))
  end
  return (("{" .. table.concat(parts, ",") .. "}"):gsub("\\/", "/"))
end

--- Writes one line.
-- @tparam string message
-- @tparam[opt] table fields as for `json_line`
function Log.write(message, fields)
  local line
  if Log.format == "json" then
    line = Log.json_line(message, fields)
  else
    line = os.date("!%Y-%m-%dT%H:%M:%SZ ") .. message
  end
  if Log.around then Log.around("before") end
  Log.out:write(line, "\n")
  Log.out:flush()
  if Log.around then Log.around("after") end
end

-- Whole peer ids by the prefix a text line shows (16 characters).
local known = {}
local node_seen

--- Gives the running node, whose peers' whole ids JSON lines carry.
function Log.attach(node)
  node_seen = node
  node:on("peer", function(p)
    if p.id then known[p.id:sub(1, 16)] = p.id end
  end)
end

local function whole_peer_id(prefix)
  if known[prefix] then return known[prefix] end
  if node_seen and not node_seen.closed then
    for _, p in ipairs(node_seen:peers()) do
      if p.id and p.id:sub(1, #prefix) == prefix then
        known[prefix] = p.id
        return p.id
      end
    end
  end
  return prefix
end

-- The fields of a line of `odo run`, read from the line.
local function fields_of(message)
  if message:match("^error: ") then return { level = "error", event = "error" } end
  local peer = message:match("^peer (%x+) ")
  if peer then return { event = "peer", peer = whole_peer_id(peer) } end
  if message:match("^peer %? ") then return { event = "peer" } end
  local stream = message:match("^stream (%S+) caught up with the swarm")
  if stream then return { event = "caught_up", stream = stream } end
  return nil
end

--- `log(fmt, ...)` as `odo run` calls it.
function Log.printf(fmt, ...)
  local message = fmt:format(...)
  Log.write(message, Log.format == "json" and fields_of(message) or nil)
end

return Log
