-- A peer that writes raw bytes into a TLS stream to a session, for the
-- cases a session never sends by itself: no HELLO, a HELLO that lies, a
-- cut or malformed frame, a flood. It is odo.core's tls_pipe (the bare
-- TLS channel under a session) driven from the spec, so no fault
-- injection lives in the session.
local core = require "odo.core"

local Raw = {}
Raw.__index = Raw

--- A raw client with TLS context `tls`, its handshake with server
-- session `b` done; `hello` (a table for wire_encode) is written first
-- when given.
function Raw.connect(tls, b, hello)
  local self = setmetatable({ pipe = assert(core.tls_pipe(tls)), b = b, received = "" }, Raw)
  if hello then self:write(core.wire_encode("hello", hello)) end
  self:pump()
  return self
end

--- Writes bytes into the stream.
function Raw:write(bytes) assert(self.pipe:write(bytes)) end

--- Moves ciphertext both ways until neither side has any; returns the
-- session's events (what it received is in self.received).
function Raw:pump(now)
  local events = {}
  for _ = 1, 1000 do
    local moved = false
    local o = self.pipe:output()
    if o then
      moved = true
      for _, e in ipairs(self.b:feed(o, now or 0)) do events[#events + 1] = e end
    end
    o = self.b:output()
    if o then
      moved = true
      self.b:written(#o)
      self.received = self.received .. assert(self.pipe:feed(o))
    end
    if not moved then break end
  end
  return events
end

--- The whole frames the session sent, decoded (core.wire_decode).
function Raw:frames()
  local out, at = {}, 1
  while at <= #self.received do
    local f = core.wire_decode(self.received:sub(at))
    if not f then break end
    out[#out + 1] = f
    at = at + f.size
  end
  return out
end

--- Ends the stream with TLS close_notify.
function Raw:close() self.pipe:close() end

return Raw
