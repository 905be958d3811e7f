--- Admission: what incoming connections that have not proven who they are
-- may cost a node.
--
-- Until its TLS handshake completes, an incoming connection is *pending*:
-- anyone who can reach the port can open one, so pending connections are
-- bounded overall (`max_handshakes`) and per IP address
-- (`max_handshakes_per_host`); when a bound is reached, the next connection
-- evicts the least active pending one (one that never sent a byte first,
-- then the one silent for longest), so a flood of idle connections can
-- never keep an honest peer, whose handshake is moving, waiting. A pending connection that sends no
-- byte within `first_byte_timeout_ms` is closed. Every socket the
-- transport holds counts against a descriptor budget (`max_descriptors`,
-- by default below the process's limit); an incoming connection over it,
-- with no pending one to evict, is closed at once. Repeated notices are
-- said once, then at most every `notice_every_ms` with a count.
--
-- @module odo.admission
local A = {}
A.__index = A

--- The process's limit on open descriptors (the soft RLIMIT_NOFILE), read
-- from /proc on Linux; 1024 where it cannot be read.
function A.descriptor_limit()
  local f = io.open("/proc/self/limits", "r")
  if not f then return 1024 end
  local text = f:read("*a")
  f:close()
  local soft = text:match("Max open files%s+(%d+)")
  return tonumber(soft) or 1024
end

--- The descriptor budget for a `max_descriptors` policy value: itself when
-- above 0, else nine tenths of the process's limit less 32 (room for the
-- store, the control socket and the loop's own descriptors).
function A.budget(max_descriptors)
  if max_descriptors and max_descriptors > 0 then return max_descriptors end
  return math.max(16, math.floor(A.descriptor_limit() * 0.9) - 32)
end

--- Admission for a transport.
-- @tparam table opts `adapter`; `max_handshakes`, `max_handshakes_per_host`,
--   `first_byte_timeout_ms`, `max_descriptors` (policy values);
--   `notice(kind, message)` (optional) hears evictions and refusals;
--   `notice_every_ms` (default 10000)
function A.new(opts)
  return setmetatable({
    adapter = opts.adapter,
    max_pending = opts.max_handshakes or 64,
    max_per_host = opts.max_handshakes_per_host or 16,
    first_byte_ms = opts.first_byte_timeout_ms or 3000,
    budget = A.budget(opts.max_descriptors),
    notice_fn = opts.notice,
    notice_every_ms = opts.notice_every_ms or 10000,
    notices = {}, -- by kind: { at = ms, held = count not said yet }
    pending = {}, -- conn -> true
    pending_n = 0,
    per_host = {}, -- host -> count
    open = 0,      -- sockets the transport holds
    counts = { admitted = 0, evicted = 0, refused = 0, silent = 0 },
  }, A)
end

--- Says `message` now, or counts it until notice_every_ms has passed since
-- the last notice of its kind.
function A:notice(kind, message)
  if not self.notice_fn then return end
  local now = self.adapter.now()
  local n = self.notices[kind]
  if n and now - n.at < self.notice_every_ms then
    n.held = n.held + 1
    return
  end
  local held = n and n.held or 0
  self.notices[kind] = { at = now, held = 0 }
  if held > 0 then message = ("%s (and %d more like it since the last notice)"):format(message, held) end
  self.notice_fn(kind, message)
end

-- Whether pending connection a is less active than b: one that never
-- sent a byte before one that did, then the one silent for longer.
local function less_active(a, b)
  if (a.got_bytes or false) ~= (b.got_bytes or false) then return not a.got_bytes end
  return a.last_rx_ms < b.last_rx_ms
end

-- The least active pending connection, among all of them or those from
-- `host`.
function A:_least_active(host)
  local best
  for conn in pairs(self.pending) do
    if (host == nil or conn.remote_host == host) and (not best or less_active(conn, best)) then
      best = conn
    end
  end
  return best
end

function A:_evict(conn, why)
  self.counts.evicted = self.counts.evicted + 1
  self:notice("evicted", ("evicted an unauthenticated connection from %s (%s)")
    :format(tostring(conn.remote_host), why))
  conn:close("evicted: " .. why)
end

--- Makes room for a new incoming connection from `host`: evicts a pending
-- one when a bound is reached. Returns true when it may be accepted; false
-- when the descriptor budget is spent on connections that are not pending
-- (the caller closes the socket).
function A:make_room(host)
  if self.open >= self.budget then
    local victim = self:_least_active()
    if not victim then
      self.counts.refused = self.counts.refused + 1
      self:notice("descriptors", ("refused a connection from %s: this node holds %d sockets, its budget "
        .. "(policy max_descriptors; the process allows %d descriptors: raise `ulimit -n`)")
        :format(tostring(host), self.open, A.descriptor_limit()))
      return false
    end
    self:_evict(victim, ("the budget of %d sockets is reached"):format(self.budget))
  end
  if self.pending_n >= self.max_pending then
    self:_evict(self:_least_active(), ("%d connections are in their handshake"):format(self.pending_n))
  end
  if (self.per_host[host] or 0) >= self.max_per_host then
    self:_evict(self:_least_active(host),
      ("%d connections from %s are in their handshake"):format(self.per_host[host], tostring(host)))
  end
  return true
end

--- Registers an accepted connection as pending; it is closed if it sends
-- nothing within the first-byte timeout.
function A:add(conn)
  self.counts.admitted = self.counts.admitted + 1
  self.pending[conn] = true
  self.pending_n = self.pending_n + 1
  local host = conn.remote_host
  self.per_host[host] = (self.per_host[host] or 0) + 1
  conn.last_rx_ms = self.adapter.now()
  conn.first_byte_timer = self.adapter.timer(self.first_byte_ms, function()
    conn.first_byte_timer = nil
    if self.pending[conn] and not conn.got_bytes then
      self.counts.silent = self.counts.silent + 1
      conn:close(("sent nothing within %d ms"):format(self.first_byte_ms))
    end
  end)
end

--- Notes bytes received on a pending connection.
function A.progress(_, conn)
  conn.got_bytes = true
  if conn.first_byte_timer then
    conn.first_byte_timer.stop()
    conn.first_byte_timer = nil
  end
end

--- Ends a connection's pending time (its handshake completed, or it closed).
function A:done(conn)
  if conn.first_byte_timer then
    conn.first_byte_timer.stop()
    conn.first_byte_timer = nil
  end
  if not self.pending[conn] then return end
  self.pending[conn] = nil
  self.pending_n = self.pending_n - 1
  local host = conn.remote_host
  local n = (self.per_host[host] or 1) - 1
  self.per_host[host] = n > 0 and n or nil
end

--- What admission holds and has done: `{open, budget, pending, admitted,
-- evicted, refused, silent}`.
function A:status()
  return {
    open = self.open,
    budget = self.budget,
    pending = self.pending_n,
    admitted = self.counts.admitted,
    evicted = self.counts.evicted,
    refused = self.counts.refused,
    silent = self.counts.silent,
  }
end

return A
