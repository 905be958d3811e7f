--- The swarm: every peer's lifecycle, as the seed's discovery rules say.
--
-- States: connecting (we dial), incoming (they dialled; introductions under
-- way), active, lifesupport (waiting to retry), purgatory (refused for a
-- while: "self", "duplicate"), deleted (forgotten). A peer's address is the
-- IP it is reached at and the listen port it announces in HELLO. Every
-- transition is a "peer" event on the node: `(peer, old, new, reason)`,
-- and every entry's events run from "none" to "deleted" (an entry still
-- known when the node closes stops where it is). An incoming connection
-- whose peer turns out to be an address we already keep (a dial under
-- way, or waiting to retry) joins that entry: its own entry ends with
-- `incoming -> deleted` "merged", then the kept entry goes on (`connecting
-- -> active`). When the peer then ends that connection as "duplicate"
-- while our own dial to it is still being introduced, the entry goes
-- `active -> connecting` "duplicate" and on with our dial. Discovered
-- addresses beyond `dial_peers` live entries (`odo.mesh`) wait, unseen in
-- `node:peers()` (at most `max_candidates`), and are dialled in order as
-- slots free; a lifesupport retry that falls due meanwhile waits the same
-- way. Incoming peers beyond `target_peers` are refused "full" with a PEX
-- frame of addresses to try (`odo.pex`), and peers exchange such samples
-- (source "pex"). A refusal counts as a failure for backoff and is
-- remembered past the entry. Every timing and choice is a policy
-- (`odo.policy`); policy functions and the layers above run protected, so
-- a failure in one never leaves a transition half made.
--
-- @module odo.swarm
local Transport = require "odo.transport"
local policy_mod = require "odo.policy_set"
local policy_defaults = require "odo.policy"
local Pex = require "odo.pex"
local Mesh = require "odo.mesh"

-- Candidates learned from peers (the source name in logs and status).
local PEX_SOURCE = { name = "pex" }

local Swarm = {}
Swarm.__index = Swarm

--- A swarm for `node`, listening on `listen` ("host:port", optional).
function Swarm.new(node, opts)
  local self = setmetatable({
    node = node,
    adapter = node.adapter,
    policy = node.policy,
    id = node.id,
    peers = {},    -- by address "host:port"
    by_id = {},    -- active peers by node id
    floating = {}, -- peers with no address (incoming, not yet introduced)
    sources = {},
    waiting = {},      -- addresses and lifesupport entries waiting for a slot, in order
    waiting_keys = {}, -- their addresses
    refusals = {},     -- address -> {count, until_, at}: peers that refused us, remembered past their entry
    handlers = opts.handlers or {}, -- on_active(peer), on_inactive(peer), on_message(peer, type, payload)
    closed = false,
  }, Swarm)
  self.transport = Transport.new {
    adapter = self.adapter,
    tls = opts.tls,
    host = opts.host,
    handshake_timeout_ms = self.policy.handshake_timeout_ms,
    max_frame = self.policy.max_frame_bytes,
    socket_buffer = self.policy.peer_socket_buffer,
    tune_allocator = opts.tune_allocator,
    protect = function(fn, ...) return node:protect(fn, ...) end,
    admission = {
      max_handshakes = self.policy.max_handshakes,
      max_handshakes_per_host = self.policy.max_handshakes_per_host,
      first_byte_timeout_ms = self.policy.first_byte_timeout_ms,
      max_descriptors = self.policy.max_descriptors,
      notice = function(kind, message) node:emit("notice", kind, message) end,
    },
  }
  self.instance = self.transport.instance
  return self
end

local function now(self) return self.adapter.now() end

-- ---- bookkeeping -----------------------------------------------------------------

--- What `node:peers()` shows of a peer.
function Swarm.info(p)
  return {
    id = p.id,
    host = p.host,
    port = p.port,
    state = p.state,
    reason = p.reason,
    detail = p.detail,
    attempts = p.attempts,
    last_activity = p.conn and p.conn.last_rx or p.last_activity,
    rtt = p.rtt,
    incoming = p.conn and p.conn.incoming or false,
    pinned = p.pinned or false,
    failures = p.failures,
    refused = p.refused,
    source = p.source,
  }
end

local function is_live(state)
  return state == "connecting" or state == "incoming" or state == "active"
end

function Swarm:_set(p, new, reason, detail)
  local old = p.state or "none"
  p.state, p.reason, p.detail, p.since = new, reason, detail, now(self)
  if is_live(old) and not is_live(new) then self:_schedule_fill() end
  self.node:emit("peer", Swarm.info(p), old, new, reason)
end

function Swarm:_live_count()
  local n = 0
  local function count(p)
    if is_live(p.state) then n = n + 1 end
  end
  for _, p in pairs(self.peers) do count(p) end
  for p in pairs(self.floating) do count(p) end
  return n
end

function Swarm._stop_timer(_, p)
  if p.timer then
    p.timer.stop()
    p.timer = nil
  end
end

-- Forgets a peer (state "deleted").
function Swarm:_forget(p, reason, detail)
  self:_stop_timer(p)
  if p.addr and self.peers[p.addr] == p then self.peers[p.addr] = nil end
  self.floating[p] = nil
  if p.id and self.by_id[p.id] == p then
    self.by_id[p.id] = nil
    if p.state == "active" then self:_inactive(p) end
  end
  self:_set(p, "deleted", reason, detail)
end

-- The layers above (sync) learn that a peer came and went; a failure
-- there goes to the node's error handler, not through the transition.
function Swarm:_inactive(p)
  if self.handlers.on_inactive then self.node:protect(self.handlers.on_inactive, p) end
end

function Swarm:_on_active(p)
  if self.handlers.on_active then self.node:protect(self.handlers.on_active, p) end
end

-- ---- slots (max_peers) ---------------------------------------------------------------

-- Waits for a slot: `w` is {key, host, port, source} (a discovered
-- address) or {key, peer} (a lifesupport entry whose retry fell due).
function Swarm:_wait_for_slot(w)
  if self.waiting_keys[w.key] then return end
  if not w.peer and #self.waiting >= self.policy.max_candidates then
    -- bounded: the oldest waiting address goes
    for i, old in ipairs(self.waiting) do
      if not old.peer then
        table.remove(self.waiting, i)
        self.waiting_keys[old.key] = nil
        break
      end
    end
  end
  self.waiting_keys[w.key] = true
  self.waiting[#self.waiting + 1] = w
end

-- A live entry ended: on the next loop turn, dial what waits.
function Swarm:_schedule_fill()
  if self.fill_scheduled or self.closed or #self.waiting == 0 then return end
  self.fill_scheduled = true
  self.adapter.defer(function() self.node:protect(self._fill_slots, self) end)
end

function Swarm:_fill_slots()
  self.fill_scheduled = false
  local _, dial = Mesh.limits(self.policy)
  while not self.closed and #self.waiting > 0 and self:_live_count() < dial do
    local w = table.remove(self.waiting, 1)
    self.waiting_keys[w.key] = nil
    local p = w.peer
    if not p then
      self:discover(w.host, w.port, w.source)
    elseif p.state == "lifesupport" and not p.timer and self.peers[p.addr] == p then
      self:_retry(p)
    end
  end
end

-- ---- discovery (rule 1) --------------------------------------------------------------

--- Offers a candidate address. An address that matches a known peer's (in
-- any state) is ignored; a new one is dialled. Each offer is the node's
-- "candidate" event `(host, port, source name)` (for odo.metrics).
function Swarm:discover(host, port, source, limit)
  if self.closed then return end
  port = tonumber(port)
  if type(host) ~= "string" or not port then return end
  self.node:emit("candidate", host, port, source and source.name)
  if not policy_mod.call(self.node, "accept_address", host, port, self.node) then return end
  local key = host .. ":" .. port
  if self.peers[key] or self.waiting_keys[key] then return end
  local memo = self:_refusal(key)
  if memo and memo.until_ > now(self) then return end -- it refused us lately: not yet
  local _, dial = Mesh.limits(self.policy)
  if self:_live_count() >= (limit or dial) then
    return self:_wait_for_slot { key = key, host = host, port = port, source = source }
  end
  local p = { addr = key, host = host, port = port, attempts = 0, failures = memo and memo.count or 0,
    refused = memo and memo.reason, pinned = source and source.pinned or false, dialled = true,
    source = source and source.name }
  self.peers[key] = p
  self:_set(p, "connecting", "discovered", source and source.name)
  self:_dial(p) -- not when a "peer" handler closed the node
end

-- ---- dialling (rules 2, 3, 8) -----------------------------------------------------

local function error_reason(name)
  if name == "ECONNREFUSED" then return "refused" end
  if name == "ETIMEDOUT" then return "timeout" end
  return name and name:lower() or "error"
end

-- The transport handlers of a connection (its entry is `conn.entry`).
function Swarm:_handlers()
  return {
    on_hello = function(conn, hello) self:_introduced(conn, hello) end,
    on_message = function(conn, t, payload) self:_message(conn, t, payload) end,
    on_pong = function(conn, rtt)
      local e = conn.entry
      if e then e.rtt, e.ping_at = rtt, nil end
      if e and e.await_first == conn and e.conn == conn and e.state == "active" then
        e.await_first = nil
        self:_on_active(e)
      end
    end,
    on_drain = function(conn)
      local e = conn.entry
      if e and e.conn == conn and self.handlers.on_drain then self.handlers.on_drain(e) end
    end,
    on_close = function(conn, info) self:_closed(conn, info) end,
  }
end

-- Our dial's TCP connection is up. Usually the attempt goes on (TLS,
-- HELLO). But the peer may have become active meanwhile through its own
-- connection to us: then ours is a second connection, and once both are
-- introduced the simultaneous-dial rule (`_resolve`) keeps one of them.
function Swarm._dial_connected(_, p, attempt, conn)
  conn.entry = p
  if p.attempt_id == attempt and p.state == "connecting" then
    p.conn = conn
    return
  end
  if p.attempt_id == attempt then
    p.attempt_id = nil
    if p.state == "active" and p.conn ~= conn and not p.dial_conn then
      p.dial_conn = conn
      return
    end
  end
  conn.superseded = true
  conn:close("a stale attempt")
end

-- Our dial failed before TCP was up. Nothing failed when the peer became
-- active meanwhile through its own connection to us.
function Swarm:_dial_failed(p, attempt, err, name)
  if p.attempt_id ~= attempt then return end
  if p.state ~= "connecting" then
    p.attempt_id = nil
    return
  end
  self:_attempt_failed(p, nil, error_reason(name), err)
end

function Swarm:_dial(p)
  if self.closed then return end -- a handler closed the node
  p.attempts = p.attempts + 1
  local attempt = {}
  p.attempt_id = attempt
  local handlers = self:_handlers()
  handlers.on_connect = function(conn) self:_dial_connected(p, attempt, conn) end
  handlers.on_error = function(err, name) self:_dial_failed(p, attempt, err, name) end
  p.dial = self.transport:dial(p.host, p.port, handlers)
  -- the whole attempt (TCP, TLS, HELLO) must finish in time
  self:_stop_timer(p)
  p.timer = self.adapter.timer(self.policy.handshake_timeout_ms, function()
    self.node:protect(function()
      p.timer = nil
      if p.attempt_id == attempt and p.state == "connecting" then
        self:_attempt_failed(p, p.conn, "timeout",
          ("introductions did not finish within %d ms"):format(self.policy.handshake_timeout_ms))
      end
    end)
  end)
end

-- The backoff policy's delay for p's next retry (nil: give up). A backoff
-- function that raises or answers something else than a number or nil is
-- reported, and the default table decides.
local function a_delay(d) return d == nil or (type(d) == "number" and d == d) end

local function backoff_delay(self, p)
  local b, pol = self.policy.backoff, self.policy
  local delay
  if type(b) == "function" then
    local ok, d = policy_mod.try(self.node, "backoff", a_delay, p.failures, Swarm.info(p))
    if ok then delay = d else b = policy_defaults.backoff end
  end
  if type(b) == "table" then
    delay = b[p.failures]
    if delay == nil and p.pinned then delay = b[#b] end
  end
  if delay == nil and p.pinned then delay = pol.backoff_cap_ms end
  if delay == nil then return nil end
  delay = math.min(delay, pol.backoff_cap_ms)
  local j = pol.backoff_jitter or 0
  if j > 0 then delay = delay * (1 - j + 2 * j * math.random()) end
  return math.max(0, math.floor(delay))
end

-- Why a peer may end a connection that are refusals, not failures of the
-- network: they count for backoff even though the peer answered.
local REFUSALS = { full = true, duplicate = true, self = true, purgatory = true }

-- What the swarm remembers of an address that refused it (or nil).
function Swarm:_refusal(key)
  local m = self.refusals[key]
  if m and now(self) - m.at > self.policy.refusal_memory_ms then
    self.refusals[key] = nil
    return nil
  end
  return m
end

-- Remembers that `p` refused us, past the entry's own life.
function Swarm:_remember_refusal(p, reason, delay)
  if not p.addr then return end
  local t = now(self)
  self.refusals[p.addr] = { count = p.failures, reason = reason, at = t, until_ = t + (delay or 0) }
  self.refusal_count = (self.refusal_count or 0) + 1
  if self.refusal_count > 4 * self.policy.max_candidates then
    -- bounded: drop what is no longer remembered
    self.refusal_count = 0
    for k in pairs(self.refusals) do
      if self:_refusal(k) then self.refusal_count = self.refusal_count + 1 end
    end
    if self.refusal_count > 2 * self.policy.max_candidates then
      self.refusals, self.refusal_count = {}, 0 -- still too many: start over
    end
  end
end

-- An outgoing attempt or an outgoing connection failed: lifesupport, and a
-- retry after the backoff (rule 3, rule 7, rule 8). A refusal ("full",
-- "duplicate"...) is a failure like any other, however briefly the peer
-- was active; a peer that stayed active `peer_stable_ms` starts over.
function Swarm:_attempt_failed(p, conn, reason, detail)
  if p.state == "deleted" or p.state == "purgatory" then return end
  local refusal = REFUSALS[reason]
  if p.active_at and not refusal and now(self) - p.active_at >= self.policy.peer_stable_ms then
    p.failures, p.refused = 0, nil
  end
  p.active_at = nil
  if refusal then p.refused = reason end
  self:_stop_timer(p)
  p.attempt_id = nil
  if p.dial then p.dial.cancel() end
  if conn and not conn.closed then
    conn.superseded = true
    if reason == "timeout" then conn:bye("timeout", detail) else conn:close(detail) end
  end
  if p.conn == conn then p.conn = nil end
  if p.dial_conn then
    -- a second connection under way goes with the first
    local second = p.dial_conn
    p.dial_conn = nil
    second.superseded = true
    second:close(detail)
  end
  if p.state == "active" and self.by_id[p.id] == p then
    self.by_id[p.id] = nil
    self:_inactive(p)
  end
  p.failures = p.failures + 1
  self:_set(p, "lifesupport", reason, detail)
  if self.closed then return end -- a handler closed the node
  local delay = backoff_delay(self, p)
  if refusal then self:_remember_refusal(p, reason, delay or self.policy.backoff_cap_ms) end
  if not delay then
    return self:_forget(p, "exhausted", ("no answer after %d attempts (last: %s)"):format(p.attempts, tostring(reason)))
  end
  p.retry_at = now(self) + delay
  p.timer = self.adapter.timer(delay, function()
    self.node:protect(function()
      p.timer = nil
      if p.state ~= "lifesupport" or self.closed then return end
      local _, dial = Mesh.limits(self.policy)
      if self:_live_count() >= dial then
        return self:_wait_for_slot { key = p.addr, peer = p }
      end
      self:_retry(p)
    end)
  end)
end

-- Dials a lifesupport entry again.
function Swarm:_retry(p)
  self:_set(p, "connecting", "retry", ("attempt %d"):format(p.attempts + 1))
  self:_dial(p) -- not when a "peer" handler closed the node
end

-- ---- incoming connections ----------------------------------------------------------

function Swarm:_accept(conn)
  if self.closed then return conn:close("the node is stopping") end
  local p = { host = conn.remote_host, port = nil, attempts = 0, failures = 0,
    conn = conn, dialled = false }
  -- at the target (or the maximum): refused once introduced (a BYE needs
  -- TLS first), with addresses to try instead
  local target = Mesh.limits(self.policy)
  if self:_live_count() >= target then p.refuse = "full" end
  conn.entry = p
  conn.handlers = self:_handlers()
  self.floating[p] = true
  self:_set(p, "incoming", "accepted", ("from %s:%s"):format(tostring(conn.remote_host), tostring(conn.remote_port)))
end

-- ---- introductions (rules 4, 5) ---------------------------------------------------------

function Swarm:_introduced(conn, hello)
  local p = conn.entry
  if not p or conn.superseded then return end
  if p.dial_conn == conn and hello.id ~= p.id then
    -- our late dial reached another node than the one now active here
    p.dial_conn = nil
    conn.superseded = true
    return conn:bye("normal", "this address now leads to another node")
  end
  if hello.id == self.id then
    -- shared keys end in the transport; this is us, dialling ourselves
    conn.superseded = true
    conn:bye("self", "this address is this node")
    if p.dialled then
      self:_stop_timer(p)
      p.conn, p.attempt_id = nil, nil
      p.id = hello.id
      self:_purgatory(p, "self", "dialled its own address")
    else
      self:_forget(p, "self", "an incoming connection from this node itself")
    end
    return
  end
  p.id = hello.id
  if p.refuse then
    conn.superseded = true
    local target = Mesh.limits(self.policy)
    local why = target < self.policy.max_peers and ("this node has its target of %d peers"):format(target)
      or ("this node has its maximum of %d peers"):format(self.policy.max_peers)
    self:_send_pex(conn, hello.id, Pex.FULL)
    conn:bye(p.refuse, why)
    if p.refuse == "full" and not p.dialled then
      Mesh.refused(self, { id = hello.id, host = p.host, port = hello.port }, now(self))
    end
    return self:_forget(p, p.refuse, why)
  end
  if not p.dialled then
    p.port = hello.port ~= 0 and hello.port or nil
  end
  local existing = self.by_id[hello.id]
  if existing then return self:_resolve(existing, p, conn) end
  if not p.dialled then
    -- an introduced incoming peer gets its address, or joins the entry we
    -- keep for that address (a dial under way, or waiting to retry)
    local key = p.port and (p.host .. ":" .. p.port)
    local e = key and self.peers[key]
    if e and (e.state == "connecting" or e.state == "lifesupport") then
      self.floating[p] = nil
      self:_stop_timer(e)
      if e.state == "connecting" and e.conn and e.conn ~= conn then
        -- our dial's connection is up: a second one, resolved once introduced
        e.dial_conn, e.attempt_id = e.conn, nil
      end
      e.conn, e.id = conn, hello.id
      conn.entry = e
      -- the incoming entry ends here; its connection goes on as e's
      self:_set(p, "deleted", "merged", "its connection now serves the entry for " .. key)
      p.conn = nil
      if self.closed then return end
      p = e
    elseif key and not e then
      self.floating[p] = nil
      p.addr = key
      self.peers[key] = p
    end
  end
  self:_activate(p, conn)
end

function Swarm:_activate(p, conn)
  self:_stop_timer(p)
  p.conn = conn
  -- failures are forgotten only once the peer stays (`_attempt_failed`):
  -- one that refuses right after introductions keeps backing off
  if p.failures == 0 then p.attempts = 0 end
  p.active_at, p.seen_active = now(self), now(self)
  p.pex_sent_at = now(self)
  p.ping_at, p.await_first = nil, nil
  self.by_id[p.id] = p
  self:_set(p, "active", "introduced", conn.incoming and "incoming" or "outgoing")
  if self.closed then return end -- a handler closed the node
  if p.host and p.port then
    local ok, err = self.node.store:peer_put { id = p.id, host = p.host, port = p.port, reason = "active" }
    if not ok then self.node:report_error("peer history: " .. tostring(err)) end
  end
  self:_send_pex(conn, p.id, 0)
  if conn.incoming then return self:_on_active(p) end
  -- a peer we dialled may be about to refuse us (a PEX "full", then BYE):
  -- the layers above start once it sends anything else (or answers a
  -- heartbeat), so a refused dial costs no catalogue (_message)
  p.await_first = conn
end

-- ---- peer exchange (odo.pex) and the target degree (odo.mesh) ---------------------------

-- Sends `to` (a peer id) a sample of good addresses on `conn`; with
-- Pex.FULL even an empty one (the BYE "full" that follows says why).
function Swarm:_send_pex(conn, to, flags)
  local sample = Mesh.good_addresses(self, to, self.policy.pex_per_message, now(self), flags == Pex.FULL)
  if #sample == 0 and flags == 0 then return end
  conn:send(Pex.TYPE, Pex.encode(sample, flags))
end

-- A PEX frame from p: its addresses, bounded, become candidates (source
-- "pex"); a malformed one ends the session as a protocol violation.
function Swarm:_pex(p, payload)
  local msg, why = Pex.decode(payload)
  if not msg then return p.conn:bye("protocol", why) end
  local own = { id = self.id, addr = self.listen and (self.listen.host .. ":" .. self.listen.port) }
  local taken = Pex.take(p, msg.entries, now(self), self.policy, own)
  self.pex_taken = (self.pex_taken or 0) + #taken
  for _, e in ipairs(taken) do
    if self.closed then return end
    self:discover(e.host, e.port, PEX_SOURCE)
  end
end

-- Whether sync says this node is cut off from a stream's source (a look
-- over every peer's catalogue: at most once a `pex_interval_ms`).
local function cut_off(self, sync, t)
  if not (sync and sync.cut_off) or t - (self.cut_checked_at or 0) < self.policy.pex_interval_ms then
    return false
  end
  self.cut_checked_at = t
  return sync:cut_off()
end

-- Every tick: refresh the peers' address samples, shed peers above the
-- target (keeping those that serve followed streams), and dial waiting
-- candidates while below the dialling limit.
function Swarm:_mesh_tick(t)
  local serving = {}
  local sync = self.node.sync
  for _, up in pairs(sync and sync.upstream or {}) do serving[up] = true end
  for _, p in ipairs(Mesh.to_shed(self, serving)) do
    self:_shed(p)
    if self.closed then return end
  end
  for _, p in pairs(self.by_id) do
    if p.state == "active" and p.conn then
      p.seen_active = t
      if t - (p.pex_sent_at or 0) >= self.policy.pex_interval_ms then
        p.pex_sent_at = t
        self:_send_pex(p.conn, p.id, 0)
      end
    end
  end
  local target, dial = Mesh.limits(self.policy)
  local live = self:_live_count()
  if #self.waiting > 0 and live < dial then self:_schedule_fill() end
  -- long-range links: past the dialling limit, one random waiting candidate
  -- an interval, up to `long_range_peers` more (never past the target),
  -- so the mesh grown from one seed does not stay layered around it
  local far = math.min(target, dial + self.policy.long_range_peers)
  local due = t - (self.long_range_at or 0) >= self.policy.pex_interval_ms
  if live >= dial and live < far and #self.waiting > 0 and due then
    self.long_range_at = t
    local addrs = {}
    for i, w in ipairs(self.waiting) do if not w.peer then addrs[#addrs + 1] = i end end
    if #addrs > 0 then
      local w = table.remove(self.waiting, addrs[math.random(#addrs)])
      self.waiting_keys[w.key] = nil
      self:discover(w.host, w.port, w.source, far)
    end
  elseif due and #self.waiting > 0 and cut_off(self, sync, t) then
    -- repair: no peer has a path to the source of a stream we hold, so
    -- the mesh may be split (the nodes that joined its parts died, and
    -- each part is at its target): one waiting candidate an interval
    -- (an address, or a peer's retry held for a slot, such as a seed's),
    -- dialled past the target up to `max_peers`; shedding keeps it if it
    -- serves what this part lacked
    self.long_range_at = t
    local w = table.remove(self.waiting, math.random(#self.waiting))
    self.waiting_keys[w.key] = nil
    local p = w.peer
    if not p then
      self:discover(w.host, w.port, w.source, self.policy.max_peers)
    elseif p.state == "lifesupport" and not p.timer and self.peers[p.addr] == p then
      if live < self.policy.max_peers then self:_retry(p) else self:_wait_for_slot(w) end
    end
  end
end

-- Ends an active peer politely (BYE "full": it backs off and tries the
-- addresses it has); its address is not dialled again for a while.
function Swarm:_shed(p)
  local conn = p.conn
  local target = Mesh.limits(self.policy)
  local why = ("this node has more than its target of %d peers"):format(target)
  if conn then
    conn.superseded = true
    self:_send_pex(conn, p.id, Pex.FULL)
    conn:bye("full", why)
  end
  p.conn = nil
  if p.dialled then
    p.failures = p.failures + 1
    self:_remember_refusal(p, "shed", self.policy.backoff_cap_ms)
  end
  self:_forget(p, "shed", why)
end

function Swarm:_purgatory(p, reason, detail)
  self:_stop_timer(p)
  self:_set(p, "purgatory", reason, detail)
  if self.closed then return end -- a handler closed the node
  p.timer = self.adapter.timer(self.policy.purgatory_ms, function()
    self.node:protect(function()
      p.timer = nil
      if p.state == "purgatory" then self:_forget(p, "purgatory over") end
    end)
  end)
end

-- Two connections to one peer. Between a connection we dialled and one it
-- dialled, the one dialled by the lower node id survives, on both sides
-- alike, and the other ends as "duplicate" without touching the survivor.
-- Two in the same direction: the newer one ends, and (ours) its address
-- goes to purgatory "duplicate" (rule 4).
function Swarm:_resolve(e, p, conn)
  local old = e.conn
  local keep_new = false
  if old and old.incoming ~= conn.incoming then
    local lower = self.id < e.id and self.id or e.id
    local dialler = conn.incoming and e.id or self.id
    keep_new = dialler == lower
  end
  local why = "already connected to this peer; kept the connection dialled by the lower node id"
  if not keep_new then
    conn.superseded = true
    conn:bye("duplicate", why)
    if p == e then
      e.dial_conn = nil
    elseif not p.dialled then
      self:_forget(p, "duplicate", why)
    elseif old and old.incoming ~= conn.incoming then
      self:_forget(p, "duplicate", why) -- the pair resolved: no purgatory
    else
      self:_stop_timer(p)
      p.conn, p.attempt_id = nil, nil
      self:_purgatory(p, "duplicate", "this address leads to a peer already connected")
    end
    return
  end
  -- the new connection survives: the entry with an address keeps it
  if old then
    old.superseded = true
    old:bye("duplicate", why)
  end
  local keeper, other = e, p
  if not e.addr and p.addr then keeper, other = p, e end
  keeper.dial_conn = nil
  conn.entry = keeper
  if other ~= keeper then self:_forget(other, "duplicate", why) end
  if self.closed then return end
  if keeper.state == "active" then
    -- same peer, another connection: layers above start over on it
    self:_inactive(keeper)
    keeper.conn, keeper.ping_at, keeper.await_first = conn, nil, nil
    if self.closed then return end
    self:_on_active(keeper)
  else
    self:_activate(keeper, conn)
  end
end

-- ---- connections ending (rule 7) ----------------------------------------------------------

function Swarm:_closed(conn, info)
  if conn.superseded or self.closed then return end
  local p = conn.entry
  if not p then return end
  if p.dial_conn == conn then
    p.dial_conn = nil
    return
  end
  if p.conn ~= conn then return end
  local reason = info.name
  if info.name == "eof" or info.name == "normal" then reason = "closed" end
  -- whatever comes next, the peer is no longer active
  if p.state == "active" and self.by_id[p.id] == p then
    self.by_id[p.id] = nil
    self:_inactive(p)
    if self.closed then return end
  end
  if info.name == "verification failed" then
    -- it sent what its source did not write: not to be trusted for a while
    p.conn = nil
    if p.dialled then
      self:_stop_timer(p)
      p.attempt_id = nil
      return self:_purgatory(p, "verification failed", info.reason)
    end
    return self:_forget(p, "verification failed", info.reason)
  end
  if info.name == "shared key" then
    p.conn = nil
    if p.dialled then return self:_purgatory(p, "shared key", info.reason) end
    return self:_forget(p, "shared key", info.reason)
  end
  if not p.dialled then
    -- the side that dialled reconnects
    p.conn = nil
    return self:_forget(p, reason, info.reason)
  end
  if p.dial_conn then
    -- our own dial to this address is still being introduced (both nodes
    -- dialled at once, and the peer ended the other connection, keeping
    -- this one): it carries on for the entry
    p.conn, p.dial_conn = p.dial_conn, nil
    p.conn.entry = p
    return self:_set(p, "connecting", reason, "the other connection to this peer goes on")
  end
  self:_attempt_failed(p, conn, reason, info.reason)
end

function Swarm:_message(conn, t, payload)
  local p = conn.entry
  if conn.superseded or not p or p.conn ~= conn or p.state ~= "active" then return end
  if p.await_first == conn and not (t == Pex.TYPE and payload:byte(1) == Pex.FULL) then
    p.await_first = nil
    self:_on_active(p)
    if self.closed or conn.superseded or p.conn ~= conn or p.state ~= "active" then return end
  end
  if t == Pex.TYPE then return self:_pex(p, payload) end
  if self.handlers.on_message then self.handlers.on_message(p, t, payload) end
end

-- ---- heartbeats (rules 6, 7) and purgatory (rule 9) ---------------------------------------

function Swarm:_tick()
  if self.closed then return end
  local t, pol = now(self), self.policy
  -- a copy: a transition (or a handler) may add and remove entries
  local all = {}
  for _, p in pairs(self.peers) do all[#all + 1] = p end
  for p in pairs(self.floating) do all[#all + 1] = p end
  for _, p in ipairs(all) do self:_heartbeat(p, t, pol) end
  self:_mesh_tick(t)
end

function Swarm:_heartbeat(p, t, pol)
  if self.closed or p.state ~= "active" or not p.conn then return end
  local last = p.conn.last_rx or p.since
  if p.ping_at then
    if last >= p.ping_at then
      p.ping_at = nil -- it spoke since: alive
    elseif t - p.ping_at >= pol.heartbeat_timeout_ms then
      local detail = ("no answer to a heartbeat for %.0f ms"):format(t - p.ping_at)
      if p.dialled then
        return self:_attempt_failed(p, p.conn, "heartbeat", detail)
      end
      local conn = p.conn
      conn.superseded = true
      conn:bye("timeout", detail)
      p.conn = nil
      return self:_forget(p, "heartbeat", detail)
    end
  end
  if not p.ping_at and t - last >= pol.heartbeat_interval_ms then
    p.ping_at = t
    p.conn:ping()
  end
end

-- ---- lifecycle -----------------------------------------------------------------------------

--- Starts listening (`listen` = {host, port}, optional) and the discovery
-- sources. Returns true, or nil, err, name when the address is taken.
function Swarm:start(listen, sources)
  if listen then
    local server, err, name = self.transport:listen(listen.host, listen.port, function(conn)
      self:_accept(conn)
    end)
    if not server then return nil, err, name end
    self.server = server
    self.transport.port = server.port
    self.listen = { host = listen.host, port = server.port }
  end
  self.ticker = self.adapter.every(math.min(self.policy.tick_ms, self.policy.heartbeat_interval_ms), function()
    self.node:protect(self._tick, self)
  end)
  -- sources start on the next loop turn, so whoever made the node can
  -- listen for "peer" events from the first one on
  self.adapter.defer(function()
    if self.closed then return end
    for _, src in ipairs(sources or {}) do self.node:protect(self.add_source, self, src) end
  end)
  return true
end

--- Adds a discovery source (see `odo.discovery`) and starts it.
function Swarm:add_source(src)
  assert(type(src) == "table" and type(src.start) == "function" and type(src.stop) == "function",
    "a discovery source has start(self, report) and stop(self)")
  self.sources[#self.sources + 1] = src
  src:start(function(host, port)
    self.node:protect(self.discover, self, host, port, src)
  end, self.node)
end

--- Every peer, as `info` shows them, sorted by address then id.
function Swarm:list()
  local out = {}
  for _, p in pairs(self.peers) do out[#out + 1] = Swarm.info(p) end
  for p in pairs(self.floating) do out[#out + 1] = Swarm.info(p) end
  table.sort(out, function(a, b)
    local ka = (a.host or "") .. ":" .. (a.port or 0) .. (a.id or "")
    local kb = (b.host or "") .. ":" .. (b.port or 0) .. (b.id or "")
    return ka < kb
  end)
  return out
end

--- The active peer with node id `id`, or nil.
function Swarm:active(id)
  return self.by_id[id]
end

--- Says BYE to every peer, stops listening, discovery and timers.
function Swarm:close(reason)
  if self.closed then return end
  self.closed = true
  for _, src in ipairs(self.sources) do self.node:protect(src.stop, src) end
  if self.ticker then self.ticker.stop() end
  local all = {}
  for _, p in pairs(self.peers) do all[#all + 1] = p end
  for p in pairs(self.floating) do all[#all + 1] = p end
  for _, p in ipairs(all) do
    self:_stop_timer(p)
    if p.dial then p.dial.cancel() end
  end
  self.waiting, self.waiting_keys = {}, {}
  self.transport:close(reason or "the node is stopping")
  if self.server then self.server.close() end
end

return Swarm
