--- Discovery through DNS records an operator publishes: `_odo._tcp.NAME`
-- SRV records (priority, weight, port, target; the targets' A and AAAA
-- records give the addresses), or, when NAME has none, NAME's own A and
-- AAAA records with a default port.
--
--     odo.node{ ..., discovery = {
--       odo.discovery.dns{ name = "swarm.example", server = "10.0.0.53:53" },
--     } }
--
-- Lookups never block the loop (`odo.resolver`, c-ares). The name is
-- looked up again when the records' shortest TTL runs out (bounded by the
-- policies `dns_ttl_floor_ms` and `dns_ttl_ceiling_ms`), so records added
-- later are found and a changed address is dialled; a lookup that fails
-- is retried after `dns_backoff`. Each outcome worth a person's attention
-- is a line for the node's "discovery" event (`odo run` logs them), and
-- `status()` tells what was found last, and when.
--
-- Needs an adapter with `poll` (luv's has it; the in-memory one has not,
-- so there a DNS source only reports that it cannot run).
--
-- @module odo.discovery.dns
local Resolver = require "odo.resolver"
local srv = require "odo.discovery.srv"
local policy_defaults = require "odo.policy"
local policy_set = require "odo.policy_set"
local compat = require "odo.compat"

local Dns = {}
Dns.__index = Dns
Dns.__name = "odo.discovery.dns"

local POLICIES = { "dns_ttl_floor_ms", "dns_ttl_ceiling_ms", "dns_backoff", "dns_timeout_ms", "dns_tries" }

local function check_name(name)
  assert(type(name) == "string" and #name >= 1 and #name <= 240 and name:match("^[%w_.-]+$")
    and not name:find("..", 1, true) and name:sub(1, 1) ~= ".",
    "dns{name=}: a DNS name (letters, digits, '-', '_' and dots) is required")
end

--- A DNS discovery source.
-- @tparam table opts
--   `name` (string, required): the name to look up (`_odo._tcp.NAME`
--   SRV, else NAME's A/AAAA).
--   `server` (string): DNS servers "IP:PORT" (or "[IPv6]:PORT"),
--   comma-separated; default: the system's resolver configuration.
--   `port` (integer): the port for addresses from A/AAAA records; default:
--   the node's own listen port.
--   `random` (function): `random(total)` returns an integer from 0 to
--   `total` inclusive, for RFC 2782's weighted order (default
--   `math.random`).
--   `adapter`, `policy` (the `dns_*` policies), `on_log`
--   (`function(message)`): default to the node's.
-- Wrong options raise, a server list c-ares cannot use included.
-- @treturn table a discovery source
function Dns.new(opts)
  assert(type(opts) == "table", "odo.discovery.dns takes a table of options")
  check_name(opts.name)
  assert(opts.server == nil or type(opts.server) == "string", "dns{server=} must be \"IP:PORT\"")
  assert(opts.port == nil or (compat.is_integer(opts.port) and opts.port >= 1 and opts.port <= 65535),
    "dns{port=} must be a port number")
  assert(opts.random == nil or type(opts.random) == "function", "dns{random=} must be a function")
  assert(opts.on_log == nil or type(opts.on_log) == "function", "dns{on_log=} must be a function")
  if opts.policy ~= nil then
    assert(type(opts.policy) == "table", "dns{policy=} must be a table")
    for k, v in pairs(opts.policy) do policy_set.check(k, v, 2) end
  end
  if opts.server then
    -- c-ares takes addresses only: say so now, not at the first lookup
    local probe, err = require("odo.core").dns_resolver { servers = opts.server }
    if not probe then error(tostring(err):gsub("^%u+: ", ""), 2) end
    probe:close()
  end
  return setmetatable({
    name = "dns " .. opts.name,
    kind = "dns",
    query_name = opts.name,
    server = opts.server,
    port = opts.port,
    random = opts.random,
    adapter = opts.adapter,
    policy = opts.policy,
    on_log = opts.on_log,
    failures = 0,
    found = {},
  }, Dns)
end

-- ---- helpers ---------------------------------------------------------------------------

local function seconds(ms)
  if ms % 1000 == 0 then return ("%d s"):format(ms / 1000) end
  return ("%.1f s"):format(ms / 1000)
end

local function wall_ms() return os.time() * 1000 end

-- "host:port" as a person reads it ([v6]:port).
local function address(host, port)
  if host:find(":", 1, true) then return ("[%s]:%d"):format(host, port) end
  return ("%s:%d"):format(host, port)
end

local function no_records(code) return code == "ENODATA" or code == "ENOTFOUND" end

-- ---- the source ------------------------------------------------------------------------

--- Starts looking up (called by the node with its `report`; `node` gives
-- the adapter, the policies, the listen port and the "discovery" event).
function Dns:start(report, node)
  self.report = report
  self.node = node
  self.stopped = false
  local pol = {}
  for _, k in ipairs(POLICIES) do
    pol[k] = (self.policy and self.policy[k]) or (node and node.policy and node.policy[k]) or policy_defaults[k]
  end
  self.pol = pol
  local adapter = self.adapter or (node and node.adapter) or require("odo.adapter.luv")
  self.clock = adapter
  self.log = self.on_log or (node and function(msg) node:emit("discovery", self.name, msg) end) or function() end
  local protect = node and function(fn, ...) return node:protect(fn, ...) end
  self.default_port = self.port or (node and node.listen and node.listen.port)
  local resolver, err = Resolver.new(adapter, {
    servers = self.server,
    timeout_ms = pol.dns_timeout_ms,
    tries = pol.dns_tries,
    protect = protect,
    on_error = function(msg) self.log(msg) end,
  })
  if not resolver then
    self:_error(("cannot look up %s: %s"):format(self.query_name, tostring(err):gsub("^%u+: ", "")))
    return
  end
  self.resolver = resolver
  self.servers = resolver:servers()
  self:_lookup()
end

--- Stops: no more lookups, sockets closed. Idempotent.
function Dns:stop()
  self.stopped = true
  if self.timer then self.timer.stop() end
  self.timer = nil
  if self.resolver then self.resolver:close() end
end

--- What the source found last and when, and its last error: `{name,
-- kind = "dns", query, servers, via ("SRV" or "A/AAAA"), found = {{host,
-- port}...}, found_at (wall clock, ms), error, error_at, next_lookup_ms}`.
function Dns:status()
  local found = {}
  for i, a in ipairs(self.found) do found[i] = { host = a.host, port = a.port } end
  return {
    name = self.name,
    kind = self.kind,
    query = self.query_name,
    servers = self.servers or self.server,
    via = self.via,
    found = found,
    found_at = self.found_at,
    error = self.last_error,
    error_at = self.error_at,
    next_lookup_ms = self.next_at and math.max(0, math.floor(self.next_at - self.clock.now())) or nil,
  }
end

function Dns:_schedule(ms)
  if self.stopped then return end
  ms = math.floor(ms)
  self.next_at = self.clock.now() + ms
  self.timer = self.clock.timer(ms, function()
    self.timer = nil
    self.next_at = nil
    if not self.stopped then self:_lookup() end
  end)
end

function Dns:_error(msg, at)
  self.last_error = msg
  self.error_at = at or wall_ms()
  self.log(msg)
end

-- The delay (ms) after the n-th failure in a row.
function Dns:_backoff(n)
  local b = self.pol.dns_backoff
  if type(b) == "function" then
    local ok, ms = pcall(b, n)
    if ok and type(ms) == "number" and ms >= 0 then return ms end
    b = policy_defaults.dns_backoff
  end
  return b[math.min(n, #b)] or 1000
end

-- A lookup that found nothing usable or got no answer: says why, in words
-- a person can act on, and tries again after the backoff.
function Dns:_failed(res, what)
  self.failures = self.failures + 1
  local delay = self:_backoff(self.failures)
  local servers = self.servers or "the system's DNS servers"
  local code, msg = res and res.code
  if code == "ETIMEDOUT" then
    msg = ("DNS server %s did not answer"):format(servers)
  elseif code == "ECONNREFUSED" then
    msg = ("DNS server %s did not answer (nothing listens on its port)"):format(servers)
  elseif code == "EREFUSED" then
    msg = ("DNS server %s refused to answer for %s (REFUSED: it serves no such zone and does not recurse)")
      :format(servers, res.name)
  elseif code == "ESERVFAIL" then
    msg = ("DNS server %s failed to answer for %s (SERVFAIL)"):format(servers, res.name)
  elseif res then
    msg = tostring(res.err)
  else
    msg = what
  end
  self:_error(("%s; retrying in %s"):format(msg, seconds(delay)), res and res.at)
  self:_schedule(delay)
end

-- A lookup that found addresses: reports them in order, says so when they
-- changed, and looks again when the shortest TTL runs out.
function Dns:_found(list, via, ttl, at)
  self.failures = 0
  local before, now = {}, {}
  for _, a in ipairs(self.found) do before[#before + 1] = address(a.host, a.port) end
  for _, a in ipairs(list) do now[#now + 1] = address(a.host, a.port) end
  self.found, self.via, self.found_at = list, via, at or wall_ms()
  local delay = math.max(self.pol.dns_ttl_floor_ms, math.min(ttl * 1000, self.pol.dns_ttl_ceiling_ms))
  table.sort(before)
  local sorted = {}
  for i, a in ipairs(now) do sorted[i] = a end
  table.sort(sorted)
  if table.concat(before, " ") ~= table.concat(sorted, " ") then
    local where = via == "SRV" and ("_odo._tcp." .. self.query_name .. " SRV") or (self.query_name .. " A/AAAA")
    self.log(("found %d peer address%s through %s: %s; looking again in %s"):format(#list,
      #list == 1 and "" or "es", where, #now > 0 and table.concat(now, ", ") or "none", seconds(delay)))
  end
  for _, a in ipairs(list) do self.report(a.host, a.port) end
  self:_schedule(delay)
end

-- A and AAAA of each host at once; done(addrs, err) where addrs[host] is
-- an array of {address, ttl} (IPv4 first) and err the first failure that
-- is not "no such records" (a server that did not answer...), if any.
function Dns:_addresses(hosts, done)
  local left, addrs, first_err = 2 * #hosts, {}, nil
  local per = {}
  for _, h in ipairs(hosts) do per[h] = {} end
  local function one(h, i)
    return function(res)
      if res.err then
        if not no_records(res.code) then first_err = first_err or res end
      else
        per[h][i] = res.records
      end
      left = left - 1
      if left > 0 then return end
      for _, host in ipairs(hosts) do
        local list = {}
        for j = 1, 2 do
          for _, r in ipairs(per[host][j] or {}) do list[#list + 1] = r end
        end
        addrs[host] = list
      end
      done(addrs, first_err)
    end
  end
  for _, h in ipairs(hosts) do
    self.resolver:query(h, "A", one(h, 1))
    self.resolver:query(h, "AAAA", one(h, 2))
  end
end

function Dns:_lookup()
  if self.stopped then return end
  self.resolver:query("_odo._tcp." .. self.query_name, "SRV", function(res)
    if self.stopped then return end
    if res.err and not no_records(res.code) then return self:_failed(res) end
    local records = {}
    for _, r in ipairs(res.records or {}) do
      if r.target ~= "." then records[#records + 1] = r end -- ".": no service there
    end
    if #records > 0 then return self:_from_srv(records, res.at) end
    if res.records and #res.records > 0 then
      return self:_found({}, "SRV", res.records[1].ttl, res.at) -- the zone says: no service here
    end
    self:_from_a(res.at)
  end)
end

-- SRV records found: the targets' addresses, in RFC 2782 order.
function Dns:_from_srv(records, at)
  local ordered = srv.order(records, self.random)
  local hosts, seen = {}, {}
  for _, r in ipairs(ordered) do
    if not seen[r.target] then
      seen[r.target] = true
      hosts[#hosts + 1] = r.target
    end
  end
  self:_addresses(hosts, function(addrs, err)
    if self.stopped then return end
    local list, ttl = {}, math.huge
    for _, r in ipairs(ordered) do
      for _, a in ipairs(addrs[r.target]) do
        list[#list + 1] = { host = a.address, port = r.port }
        ttl = math.min(ttl, r.ttl, a.ttl)
      end
    end
    if #list == 0 then
      if err then return self:_failed(err) end
      return self:_failed(nil, ("_odo._tcp.%s SRV names %s, which %s no A or AAAA records"):format(
        self.query_name, table.concat(hosts, ", "), #hosts == 1 and "has" or "have"))
    end
    self:_found(list, "SRV", ttl, at)
  end)
end

-- No SRV records: NAME's own addresses with the default port.
function Dns:_from_a(at)
  self:_addresses({ self.query_name }, function(addrs, err)
    if self.stopped then return end
    local list, ttl = {}, math.huge
    local port = self.default_port
    for _, a in ipairs(addrs[self.query_name]) do
      list[#list + 1] = { host = a.address, port = port }
      ttl = math.min(ttl, a.ttl)
    end
    if #list == 0 then
      if err then return self:_failed(err) end
      return self:_failed(nil, ("no _odo._tcp SRV or A records for %s"):format(self.query_name))
    end
    if not port then
      return self:_failed(nil, ("%s has A/AAAA records but no SRV records, and no default port is set"
        .. " (the node does not listen; give a port)"):format(self.query_name))
    end
    self:_found(list, "A/AAAA", ttl, at)
  end)
end

return setmetatable(Dns, { __call = function(_, opts) return Dns.new(opts) end })
