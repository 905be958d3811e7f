--- Peer exchange (PEX): the swarm-level frame in which peers share
-- addresses they know to be good, and the bounds on what is taken from it.
--
-- PEX (frame type 0x30, docs/PROTOCOL.md "Peer exchange"):
--
--     u8 flags (1: sent just before a BYE "full") | u8 count | entry * count
--     entry = id[32] | str8 host (an IPv4 or IPv6 literal, as text) | u16be port
--
-- A swarm-level frame, not a sync message: it is about peers, not
-- streams, and a node with sync turned off still exchanges addresses. The
-- decoder takes a message only whole and well-formed (no names, no port 0,
-- no bytes left over); `Pex.take` then bounds what one peer hands over
-- (per message and per minute) and drops the node's own addresses.
--
-- @module odo.pex
local Pex = {}

--- The frame type.
Pex.TYPE = 0x30
--- Flag: the sender is refusing us as full; these are addresses to try.
Pex.FULL = 1
--- Entries one frame can carry (its count is a byte).
Pex.MAX_ENTRIES = 255

local function ipv4(h)
  local a, b, c, d = h:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
  if not a then return false end
  for _, o in ipairs({ a, b, c, d }) do
    if #o > 3 or tonumber(o) > 255 or (#o > 1 and o:sub(1, 1) == "0") then return false end
  end
  return h ~= "0.0.0.0"
end

local function ipv6(h)
  if #h < 2 or #h > 45 or not h:find(":", 1, true) or h:find("[^%x:%.]") then return false end
  if h == "::" or h:find(":::", 1, true) then return false end
  local _, doubles = h:gsub("::", "")
  local groups = 0
  for g in (h .. ":"):gmatch("([^:]*):") do
    if g ~= "" then
      if g:find(".", 1, true) then groups = groups + 2 -- an IPv4 tail
      elseif #g > 4 then return false
      else groups = groups + 1 end
    end
  end
  if doubles > 1 then return false end
  if doubles == 1 then return groups < 8 end
  return groups == 8
end

--- Whether `host` is an IP address literal (no names: a PEX entry never
-- makes a node look a name up) and `port` a port number.
function Pex.well_formed(host, port)
  return type(host) == "string" and (ipv4(host) or ipv6(host))
    and type(port) == "number" and port >= 1 and port <= 65535 and port % 1 == 0
end

local function unhex(h)
  return (h:gsub("..", function(x) return string.char(tonumber(x, 16)) end))
end

local function hex(s)
  return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end))
end

--- Encodes a PEX payload: `entries` = { {id = hex, host =, port =}, ... }
-- (at most 255, each well-formed, else it raises), `flags` a number.
function Pex.encode(entries, flags)
  assert(#entries <= Pex.MAX_ENTRIES, "a PEX frame carries at most 255 addresses")
  local out = { string.char(flags or 0, #entries) }
  for _, e in ipairs(entries) do
    assert(type(e.id) == "string" and #e.id == 64 and not e.id:find("%X"), "a PEX entry's id is 64 hex digits")
    assert(Pex.well_formed(e.host, e.port), "a PEX entry's host is an IP address and its port 1-65535")
    out[#out + 1] = unhex(e.id) .. string.char(#e.host) .. e.host
      .. string.char(math.floor(e.port / 256), e.port % 256)
  end
  return table.concat(out)
end

--- Decodes a PEX payload: `{flags =, entries = {{id, host, port}...}}`, or
-- nil and why it is malformed.
function Pex.decode(s)
  if type(s) ~= "string" or #s < 2 then return nil, "a PEX frame shorter than its header" end
  local flags, count = s:byte(1, 2)
  local pos, entries = 3, {}
  for i = 1, count do
    if pos + 33 > #s then return nil, ("PEX entry %d is cut short"):format(i) end
    local id = hex(s:sub(pos, pos + 31))
    local hlen = s:byte(pos + 32)
    local host = s:sub(pos + 33, pos + 32 + hlen)
    if pos + 32 + hlen + 2 > #s then return nil, ("PEX entry %d is cut short"):format(i) end
    local hi, lo = s:byte(pos + 33 + hlen, pos + 34 + hlen)
    local port = hi * 256 + lo
    if not Pex.well_formed(host, port) then
      return nil, ("PEX entry %d is not an IP address and port (%q, %d)"):format(i, host, port)
    end
    entries[i] = { id = id, host = host, port = port }
    pos = pos + 35 + hlen
  end
  if pos ~= #s + 1 then return nil, ("%d bytes after the last PEX entry"):format(#s + 1 - pos) end
  return { flags = flags, entries = entries }
end

--- Of the decoded `entries` a peer `p` sent, those to take as candidates:
-- at most `policy.pex_per_message` of this frame, at most
-- `policy.pex_per_minute` from this peer in a minute (counted in `p`),
-- never the node's own id or listen address, nor the sender itself.
function Pex.take(p, entries, now, policy, own)
  if not p.pex_window or now - p.pex_window >= 60000 then p.pex_window, p.pex_taken = now, 0 end
  local out = {}
  for _, e in ipairs(entries) do
    if #out >= policy.pex_per_message or p.pex_taken >= policy.pex_per_minute then break end
    local key = e.host .. ":" .. e.port
    if e.id ~= own.id and e.id ~= p.id and key ~= own.addr then
      out[#out + 1] = e
      p.pex_taken = p.pex_taken + 1
    end
  end
  return out
end

--- A random sample of at most `n` of `candidates` (an array; it is shuffled in place).
function Pex.sample(candidates, n)
  for i = #candidates, 2, -1 do
    local j = math.random(i)
    candidates[i], candidates[j] = candidates[j], candidates[i]
  end
  for i = #candidates, n + 1, -1 do candidates[i] = nil end
  return candidates
end

return Pex
