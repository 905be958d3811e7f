--- Discovery through a DHT (OpenDHT, through the optional module `odo.dht`).
--
-- The source announces this node's reachable address and node id under
-- the hash of its topic, listens to that key and looks it up now and then,
-- and reports every other node it finds as a candidate (which still has to
-- pass mutual TLS). It re-announces before its value expires and stops
-- announcing on a clean stop. Values that are not ours are ignored and
-- counted; candidates taken are capped per lookup and per minute (policy
-- `dht_*` entries in `odo.policy`).
--
-- `odo.dht` links OpenDHT, which is GPL-3.0+: a program that loads it is
-- bound by the GPL (README, "Discovery through a DHT"). This file (MIT)
-- loads it only when a DHT source is made.
--
--     local node = odo.node{ ..., listen = "0.0.0.0:4000" }
--     local src = assert(require("odo.discovery.dht").new{ node = node,
--       topic = "my-swarm", bootstrap = { "203.0.113.7:4222" } })
--     node:add_source(src)
--
-- @module odo.discovery.dht
local discovery = require "odo.discovery"

local M = {}

--- The network id used unless one is given: a fixed private id of ours
-- (0x6f646f31, "odo1"). 0 is OpenDHT's public network.
M.DEFAULT_NETWORK = 0x6f646f31

-- How long a bootstrap ping may go unanswered before it counts as failed.
local PING_TIMEOUT_MS = 30000

local Source = {}
Source.__index = Source
Source.__name = "odo.discovery.dht"

--- Loads `odo.dht`: the module, or nil and a message saying how to build it.
function M.load()
  local ok, mod = pcall(require, "odo.dht")
  if ok then return mod end
  return nil, "ENOTBUILT: odo.dht (DHT discovery) is not built: install OpenDHT (libopendht-dev) and run `make dht`"
    .. " (or install the odo-journal-dht rock)", "ENOTBUILT"
end

local function positive(policy, k)
  local v = policy[k]
  assert(type(v) == "number" and v > 0, ("policy '%s' must be a number greater than 0"):format(k))
  return v
end

local function check_policy(p)
  for _, k in ipairs({ "dht_value_expiry_ms", "dht_announce_every_ms", "dht_lookup_every_ms",
    "dht_max_candidates_per_lookup", "dht_max_candidates_per_minute", "dht_shutdown_timeout_ms" }) do
    positive(p, k)
  end
  assert(p.dht_announce_every_ms < p.dht_value_expiry_ms,
    "policy 'dht_announce_every_ms' must be less than 'dht_value_expiry_ms' (re-announce before values expire)")
  local b = p.dht_bootstrap_backoff
  assert(type(b) == "table" and #b > 0, "policy 'dht_bootstrap_backoff' must be a non-empty array of delays (ms)")
  for i, d in ipairs(b) do
    assert(type(d) == "number" and d > 0, ("policy 'dht_bootstrap_backoff[%d]' must be greater than 0"):format(i))
  end
end

local function is_unspecified(host)
  return host == nil or host == "0.0.0.0" or host == "::" or host == ""
end

--- Makes a DHT discovery source and starts its DHT node (on a UDP port).
-- @tparam table opts
--   `node` (Node, required): the node whose address is announced, whose
--   adapter (with `watch`) and policy the source uses.
--   `topic` (string, required): nodes on the same topic find each other.
--   `bootstrap` (table): DHT nodes to join through, "host:port".
--   `network` (integer): OpenDHT network id (default `DEFAULT_NETWORK`).
--   `port` (integer): the DHT's UDP port (default 0: any).
--   `bind` (string): the IPv4 address it binds (default "0.0.0.0").
--   `host` (string): the address announced (default: the node's listen
--   host, or, when that is 0.0.0.0, the address DHT peers see).
--   `peer_discovery` (boolean): OpenDHT's multicast peer discovery
--   (default false).
--   `log` (function): `log(message)` for the lines an operator needs
--   (default: the node's "discovery" event, `("dht", message)`).
-- Wrong options raise. When `odo.dht` is not built or the port cannot be
-- bound: nil, "NAME: message", NAME.
-- @treturn Source
function M.new(opts)
  assert(type(opts) == "table", "odo.discovery.dht.new takes a table of options")
  local node = opts.node
  assert(type(node) == "table" and node.adapter and node.policy and node.id, "opts.node (an odo node) is required")
  assert(type(opts.topic) == "string" and opts.topic ~= "", "opts.topic must be a non-empty string")
  assert(type(node.adapter.watch) == "function", "the node's adapter has no watch(fd, fn): the DHT needs one")
  assert(node.listen, "the node does not listen: there is nothing to announce")
  assert(node.id:match("^%x+$") and #node.id == 64, "the node id must be 64 hex digits (a node with a certificate)")
  local network = opts.network or M.DEFAULT_NETWORK
  assert(type(network) == "number" and network % 1 == 0 and network >= 0 and network <= 4294967295,
    "opts.network must be an integer 0..4294967295")
  local boots = {}
  for i, a in ipairs(opts.bootstrap or {}) do
    local host, port = discovery.parse_address(a)
    assert(host, port)
    boots[i] = { host = host, port = port, failures = 0, state = "pending" }
  end
  assert(opts.log == nil or type(opts.log) == "function", "opts.log must be a function")
  check_policy(node.policy)
  local mod, err, name = M.load()
  if not mod then return nil, err, name end
  local dht
  dht, err, name = mod.new { port = opts.port or 0, bind = opts.bind, network = network,
    expiry_ms = node.policy.dht_value_expiry_ms, peer_discovery = opts.peer_discovery == true }
  if not dht then return nil, err, name end
  return setmetatable({
    name = "dht",
    mod = mod,
    dht = dht,
    node = node,
    policy = node.policy,
    adapter = node.adapter,
    topic = opts.topic,
    network = network,
    host = opts.host,
    boots = boots,
    -- default: the node's "discovery" event, which `odo run` logs
    log = opts.log or function(msg) node:emit("discovery", "dht", msg) end,
    state = "disconnected",
    candidates = {}, -- node id -> {host, port, expires (wall ms), issued}
    counts = { taken = 0, bad = 0, stale = 0, capped = 0, self = 0 },
    window = {}, -- wall ms of candidates taken in the last minute
    timers = {},
  }, Source)
end

--- The DHT's UDP port.
function Source:port()
  return self.dht and self.dht:port()
end

-- ---- announcing ----------------------------------------------------------------------

-- The address to announce: the configured host, the listen host, or the
-- one DHT peers see this node at (once one told us).
function Source:_announce_host()
  if self.host then return self.host end
  local listen = self.node.listen.host
  if not is_unspecified(listen) then return listen end
  return self.dht:public_address()
end

function Source:_announce()
  if not self.dht or self.stopping then return end
  local host = self:_announce_host()
  if not host then
    -- listening on 0.0.0.0: announce the address DHT peers see, once one
    -- has told; until then, try again every second
    if not self.warned_host then
      self.warned_host = true
      self.log("the node listens on " .. tostring(self.node.listen.host) .. ": announcing the address DHT peers"
        .. " see once one tells (or give --listen HOST:PORT with the address peers can reach)")
    end
    if not self.host_retry then
      self.host_retry = self.adapter.timer(1000, function()
        self.host_retry = nil
        self.node:protect(self._announce, self)
      end)
    end
    return
  end
  if host ~= self.announced_host and not self.host and is_unspecified(self.node.listen.host) then
    self.log("announcing " .. host .. " (the address DHT peers see this node at)")
  end
  self.announced_host = host
  local ok, err = self.dht:announce(self.topic, host, self.node.listen.port, self.node.id,
    math.floor(self.policy.dht_value_expiry_ms))
  if not ok then self.log("announce failed: " .. tostring(err)) end
  self.announced_at = self.mod.now_ms()
end

-- ---- bootstrap with backoff ------------------------------------------------------------

function Source:_ping(b)
  if not self.dht or self.stopping then return end
  b.timer = nil
  local ok, err = self.dht:bootstrap(b.host, b.port)
  if not ok then return self:_bootstrap_failed(b, err) end
  b.pinging = true
  -- OpenDHT answers a ping within seconds, but may drop its callback (a
  -- node that reached us by another way first): a ping unanswered this
  -- long counts as failed, so the bootstrap node is tried again
  b.timer = self.adapter.timer(PING_TIMEOUT_MS, function()
    b.timer, b.pinging = nil, false
    if b.state ~= "answered" then self.node:protect(self._bootstrap_failed, self, b) end
  end)
end

function Source:_bootstrap_failed(b, why)
  b.failures = b.failures + 1
  b.state = "no answer"
  self.error = ("bootstrap node %s:%d %s"):format(b.host, b.port, why or "does not answer")
  self.error_at = self.mod.now_ms()
  local list = self.policy.dht_bootstrap_backoff
  local delay = list[math.min(b.failures, #list)]
  self.log(("bootstrap node %s:%d %s; retrying in %.1f s"):format(b.host, b.port,
    why or "does not answer", delay / 1000))
  if b.timer then b.timer.stop() end
  b.timer = self.adapter.timer(delay, function() self.node:protect(self._ping, self, b) end)
end

function Source:_on_ping(ev)
  for _, b in ipairs(self.boots) do
    if b.host == ev.host and b.port == ev.port and b.pinging then
      b.pinging = false
      if b.timer then b.timer.stop() end
      b.timer = nil
      if ev.ok then
        if b.state ~= "answered" then self.log(("bootstrap node %s:%d answered"):format(b.host, b.port)) end
        b.state, b.failures = "answered", 0
      elseif not self.stopping then
        self:_bootstrap_failed(b)
      end
    end
  end
end

-- ---- candidates ----------------------------------------------------------------------------

-- Takes the records of one lookup or listen batch; reports new ones within
-- the caps.
function Source:_on_values(ev)
  local now = self.mod.now_ms()
  local taken = 0
  for _, r in ipairs(ev.values) do
    local c = self.candidates[r.id]
    local expires = r.issued_ms + r.ttl_ms
    if r.id == self.node.id then
      self.counts.self = self.counts.self + 1
    elseif ev.expired then -- luacheck: ignore 542
      -- OpenDHT saw one value expire; the node may have announced a newer
      -- one already: each candidate expires by its own newest value
      -- (_housekeep)
    elseif r.issued_ms > now + self.policy.dht_value_expiry_ms or r.ttl_ms > 2 * self.policy.dht_value_expiry_ms then
      self.counts.bad = self.counts.bad + 1 -- from the future, or claims to live far longer than ours do
    elseif expires <= now then
      self.counts.stale = self.counts.stale + 1
    elseif c and c.host == r.host and c.port == r.port then
      if r.issued_ms > c.issued then c.issued, c.expires = r.issued_ms, expires end
    elseif (c and r.issued_ms <= c.issued) then
      self.counts.stale = self.counts.stale + 1 -- an older address of a node we know
    elseif taken >= self.policy.dht_max_candidates_per_lookup or not self:_window_ok(now) then
      self.counts.capped = self.counts.capped + 1
    else
      taken = taken + 1
      self.window[#self.window + 1] = now
      self.candidates[r.id] = { host = r.host, port = r.port, issued = r.issued_ms, expires = expires }
      self.counts.taken = self.counts.taken + 1
      self.found_at = now
      self.report(r.host, r.port)
    end
  end
end

function Source:_window_ok(now)
  local keep = {}
  for _, t in ipairs(self.window) do
    if now - t < 60000 then keep[#keep + 1] = t end
  end
  self.window = keep
  return #keep < self.policy.dht_max_candidates_per_minute
end

-- Candidates whose value expired are no longer reported; live ones are
-- offered again (a peer the swarm gave up on may be back).
function Source:_housekeep(reoffer)
  local now = self.mod.now_ms()
  for id, c in pairs(self.candidates) do
    if c.expires <= now then
      self.candidates[id] = nil
    elseif reoffer then
      self.report(c.host, c.port)
    end
  end
end

function Source:_lookup()
  if not self.dht or self.stopping then return end
  self:_housekeep(true)
  self.dht:lookup(self.topic)
end

-- ---- the loop side ----------------------------------------------------------------------------

function Source:_on_status(status)
  local was = self.state
  self.state = status
  if status == was then return end
  -- "connecting" comes and goes with every ping: only joining and leaving
  -- the network are worth a line
  if status == "connected" or was == "connected" then
    self.log(("DHT %s (network id %d, %s)"):format(status, self.network, self:_stats_line()))
  end
  if status == "connected" then
    self:_announce()
    self:_lookup()
  elseif status == "disconnected" and not self.stopping then
    -- no node left: join again through the bootstrap nodes not already
    -- being pinged or waiting for their next try
    for _, b in ipairs(self.boots) do
      if not b.timer and not b.pinging then self:_ping(b) end
    end
  end
end

function Source:_stats_line()
  local s = self.dht and self.dht:stats() or {}
  return ("%d good, %d dubious nodes"):format(s.good or 0, s.dubious or 0)
end

function Source:_drain()
  if not self.dht then return end
  for _, ev in ipairs(self.dht:poll()) do
    if ev.kind == "values" then
      self:_on_values(ev)
    elseif ev.kind == "status" then
      self:_on_status(ev.status)
    elseif ev.kind == "ping" then
      self:_on_ping(ev)
    elseif ev.kind == "put" then
      self.last_put_ok = ev.ok
    elseif ev.kind == "shutdown" then
      self:_finish()
      return
    end
  end
end

--- Starts: bootstraps, listens to the topic, announces (discovery
-- interface).
function Source:start(report)
  assert(self.dht, "this DHT source was stopped")
  self.report = report
  local protect = function(fn, ...) return self.node:protect(fn, ...) end
  self.watch = self.adapter.watch(self.dht:fd(), function() protect(self._drain, self) end)
  self.log(("DHT node on UDP port %d, network id %d (0x%08x), topic '%s'"):format(self.dht:port(), self.network,
    self.network, self.topic))
  if #self.boots == 0 then self.log("no bootstrap node: waiting for other nodes to bootstrap from this one") end
  for _, b in ipairs(self.boots) do self:_ping(b) end
  self.listen_token = self.dht:listen(self.topic)
  self:_announce()
  local p = self.policy
  self.timers = {
    self.adapter.every(p.dht_announce_every_ms, function() protect(self._announce, self) end),
    self.adapter.every(p.dht_lookup_every_ms, function() protect(self._lookup, self) end),
    self.adapter.every(math.min(1000, p.dht_value_expiry_ms), function() protect(self._housekeep, self) end),
  }
end

-- Joins OpenDHT and frees it (on the loop, never from OpenDHT's threads).
function Source:_finish()
  if not self.dht then return end
  if self.watch then self.watch.stop() end
  if self.deadline then self.deadline.stop() end
  self.watch, self.deadline = nil, nil
  self.dht:close()
  self.dht = nil
  self.state = "stopped"
end

--- Stops: no more announces (values already stored expire), no more
-- candidates; OpenDHT shuts down asynchronously and is joined on the
-- loop once it has (or after `dht_shutdown_timeout_ms`). Idempotent.
function Source:stop()
  if self.stopping or not self.dht then return end
  self.stopping = true
  for _, t in ipairs(self.timers) do t.stop() end
  if self.host_retry then self.host_retry.stop() end
  for _, b in ipairs(self.boots) do
    if b.timer then b.timer.stop() end
  end
  self.dht:unannounce(self.topic)
  if self.announced_at then
    self.log(("stopped announcing; values already stored expire within %d s"):format(
      math.ceil(self.policy.dht_value_expiry_ms / 1000)))
  end
  if self.listen_token then self.dht:unlisten(self.listen_token) end
  self.candidates = {}
  if not self.watch then return self:_finish() end -- never started
  self.dht:shutdown()
  self.deadline = self.adapter.timer(self.policy.dht_shutdown_timeout_ms, function()
    self.node:protect(self._finish, self)
  end)
end

--- What `odo status` shows (the `odo.discovery` status fields and the
-- DHT's own): `{name = "dht", found = {{host, port, id}...} (live
-- candidates), found_at (wall ms of the last one taken), error, error_at
-- (the last bootstrap failure), state, good, dubious, network, topic,
-- port, last_announce (Unix s or nil), candidates (how many live), taken
-- (in all), bad_values, stale, capped, bootstrap = {"host:port" =
-- state}}`.
-- A wall-clock time (ms) of the module's on the node's adapter clock.
local function on_node_clock(self, wall_ms)
  return wall_ms and (wall_ms - self.mod.now_ms() + self.adapter.now()) or nil
end

function Source:status()
  local s = self.dht and self.dht:stats() or {}
  local live, found = 0, {}
  for id, c in pairs(self.candidates) do
    live = live + 1
    found[live] = { host = c.host, port = c.port, id = id }
  end
  local boots = {}
  for _, b in ipairs(self.boots) do boots[("%s:%d"):format(b.host, b.port)] = b.state end
  return {
    name = "dht",
    state = self.state,
    good = s.good or 0,
    dubious = s.dubious or 0,
    network = self.network,
    topic = self.topic,
    port = self.dht and self.dht:port() or nil,
    last_announce = self.announced_at and math.floor(self.announced_at / 1000) or nil,
    candidates = live,
    found = found,
    -- the *_at times on the node's clock, as every source's status gives
    -- them (the module keeps wall-clock milliseconds)
    found_at = on_node_clock(self, self.found_at),
    announced_at = on_node_clock(self, self.announced_at),
    error = self.error,
    error_at = on_node_clock(self, self.error_at),
    taken = self.counts.taken,
    bad_values = (s.bad_values or 0) + self.counts.bad,
    stale = self.counts.stale,
    capped = self.counts.capped,
    bootstrap = boots,
  }
end

return M
