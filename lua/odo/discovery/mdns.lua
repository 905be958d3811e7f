--- Multicast DNS discovery (RFC 6762/6763): peers on the local link.
--
-- Announces this node as an instance of `_odo._tcp.local` (PTR, SRV with
-- its listen port, TXT with its node id and swarm name, A), answers
-- queries for it, browses for the others and reports each one whose swarm
-- name is ours; on a clean stop it says goodbye (TTL 0), and an instance
-- that said goodbye, or whose records expired, is forgotten. The protocol
-- is libmdnsd's, in the core (`odo.core.mdns`, IPv4 only); the UDP socket
-- on port 5353 is the adapter's (`adapter.udp`, shared with an
-- avahi-daemon through SO_REUSEADDR).
--
--     odo.node{ ..., discovery = { odo.discovery.mdns{ swarm = "lab" } } }
--
-- @module odo.discovery.mdns
local core = require "odo.core"

local GROUP = "224.0.0.251"
-- An instance still announced is offered to the swarm again this often
-- (the swarm ignores addresses it knows; one it deleted is dialled anew).
local REPORT_AGAIN_MS = 60000

local Source = {}
Source.__index = Source

--- The IPv4 address to announce and to multicast through: `want` when
-- given, else the listen host when it is one, else the first address of a
-- non-internal interface. nil, why when there is none.
local function pick_interface(want, listen_host)
  if want then return want end
  if listen_host and listen_host:match("^%d+%.%d+%.%d+%.%d+$") and listen_host ~= "0.0.0.0"
      and not listen_host:match("^127%.") then
    return listen_host
  end
  local ok, uv = pcall(require, "luv")
  if ok then
    local names = {}
    local ifs = uv.interface_addresses() or {}
    for name in pairs(ifs) do names[#names + 1] = name end
    table.sort(names)
    for _, name in ipairs(names) do
      for _, a in ipairs(ifs[name]) do
        if a.family == "inet" and not a.internal then return a.ip end
      end
    end
  end
  return nil, "no IPv4 interface to announce on (set interface = \"ADDRESS\")"
end

-- The netmask of the interface whose address is `ip`, when luv knows it.
local function netmask_of(ip)
  local ok, uv = pcall(require, "luv")
  if not ok then return nil end
  for _, list in pairs(uv.interface_addresses() or {}) do
    for _, a in ipairs(list) do
      if a.family == "inet" and a.ip == ip then return a.netmask end
    end
  end
end

-- Whether IPv4 `ip` is in the subnet of `iface` with `mask` (no bit
-- operators: Lua 5.1 has none). A valid mask octet is 256 - 2^k.
local function same_subnet(ip, iface, mask)
  local a, b, m = { ip:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$") }, { iface:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$") },
    { mask:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$") }
  if #a ~= 4 or #b ~= 4 or #m ~= 4 then return true end
  for i = 1, 4 do
    local x, y, k = tonumber(a[i]), tonumber(b[i]), tonumber(m[i])
    if k > 0 then
      local block = 256 - k
      if x - x % block ~= y - y % block then return false end
    end
  end
  return true
end

--- A new mDNS discovery source.
-- @tparam[opt] table opts `swarm` (default "odo": only instances with this
--   swarm name are reported), `interface` (the IPv4 address of the
--   interface to use; default: the listen address, else the first
--   non-loopback one), `ip6` (an IPv6 address to publish in an AAAA
--   record too; the protocol itself runs over IPv4), `ttl` (seconds,
--   default 120), `port` (default 5353;
--   another only for tests), `adapter` (default the node's), `log`
--   (function(line), for what it finds and loses; default: the node's
--   "discovery" event, which `odo run` logs), `max_instances` (default 64)
-- @return a discovery source with `start`, `stop` and `status`
local function new(opts)
  opts = opts or {}
  assert(type(opts) == "table", "odo.discovery.mdns takes a table of options")
  local swarm = opts.swarm or "odo"
  assert(type(swarm) == "string" and #swarm >= 1 and #swarm <= 200 and not swarm:find("[%z\1-\31]"),
    "mdns: swarm must be a printable string of 1 to 200 bytes")
  assert(opts.interface == nil or (type(opts.interface) == "string" and opts.interface:match("^%d+%.%d+%.%d+%.%d+$")),
    "mdns: interface must be an IPv4 address")
  assert(opts.log == nil or type(opts.log) == "function", "mdns: log must be a function")
  assert(opts.ip6 == nil or (type(opts.ip6) == "string" and opts.ip6:find(":", 1, true)),
    "mdns: ip6 must be an IPv6 address")
  return setmetatable({
    name = "mdns",
    swarm = swarm,
    interface = opts.interface,
    ip6 = opts.ip6,
    ttl = opts.ttl or 120,
    port = opts.port or 5353,
    max_instances = opts.max_instances,
    adapter = opts.adapter,
    log = opts.log,
    found = {},
    ignored = {},
    pending = 0,
  }, Source)
end

-- A line worth logging: to opts.log ("mdns: " .. line), else as the
-- node's "discovery" event (which `odo run` logs).
function Source:_say(line)
  if self.log then
    self.log("mdns: " .. line)
  elseif self.node and self.node.emit then
    self.node:emit("discovery", self.name, line)
  end
end

local function wall_ms() return os.time() * 1000 end

-- Sends what the engine has due, then wakes up when it says.
function Source:_pump()
  if not self.engine then return end
  while true do
    local pkt, ip, port = self.engine:output()
    if not pkt then break end
    self.pending = self.pending + 1
    local ok, err = self.sock:send(pkt, ip, port, function()
      self.pending = self.pending - 1
      if self.closing and self.pending == 0 then self.sock:close() end
    end)
    if not ok then
      self.pending = self.pending - 1
      self.error, self.error_at = err, wall_ms()
      self:_say(tostring(err))
    end
  end
  if self.stopped then return end
  self:_update()
  if self.timer then self.timer.stop() end
  local ms = math.min(math.max(self.engine:sleep(), 20), 10000)
  self.timer = self.adapter.timer(ms, function()
    self.timer = nil
    self:_pump()
  end)
end

-- Reports the instances of our swarm found, logs those gone.
function Source:_update()
  local now, seen = {}, {}
  for _, inst in ipairs(self.engine:instances()) do
    seen[inst.name] = true
    local id = inst.txt.id
    local theirs = inst.txt.swarm
    if theirs ~= self.swarm and not self.ignored[inst.name] then
      self.ignored[inst.name] = true
      self:_say(("ignored %s at %s:%d (swarm %s, not %s)"):format(inst.instance, inst.ip, inst.port,
        type(theirs) == "string" and ("'" .. theirs .. "'") or "none", "'" .. self.swarm .. "'"))
    end
    if theirs == self.swarm and type(id) == "string" and id ~= self.id then
      local key = inst.name
      now[key] = true
      local old = self.found[key]
      if not old or old.host ~= inst.ip or old.port ~= inst.port then
        local entry = { id = id, host = inst.ip, port = inst.port, instance = inst.instance, at = wall_ms(),
          reported = self.adapter.now() }
        self.found[key] = entry
        self.last = entry
        self.found_at = entry.at
        self:_say(("found %s at %s:%d (%s)"):format(id:sub(1, 16), inst.ip, inst.port, inst.instance))
        self.report(inst.ip, inst.port)
      elseif self.adapter.now() - old.reported >= REPORT_AGAIN_MS then
        -- still announced: offered again, in case the swarm gave up on it
        old.reported = self.adapter.now()
        self.report(inst.ip, inst.port)
      end
    end
  end
  for key in pairs(self.ignored) do
    if not seen[key] then self.ignored[key] = nil end
  end
  for key, old in pairs(self.found) do
    if not now[key] then
      self.found[key] = nil
      self:_say(("gone %s at %s:%d (%s)"):format(old.id:sub(1, 16), old.host, old.port, old.instance))
    end
  end
end

--- Starts: opens UDP port 5353 (shared), joins 224.0.0.251 on the
-- interface, announces this node and browses. A failure is logged and
-- kept in `status().error`.
function Source:start(report, node)
  self.report = report
  self.node = node
  node = node or {}
  self.adapter = self.adapter or node.adapter or require("odo.adapter.luv")
  self.id = self.id or node.id
  local listen = node.listen or {}
  local lport = self.listen_port or listen.port
  local function fail(msg)
    self.error, self.error_at = msg, wall_ms()
    self:_say(msg)
  end
  if type(self.adapter.udp) ~= "function" then
    return fail("the adapter has no udp() (docs/ADAPTERS.md): mDNS cannot start")
  end
  local iface, why = pick_interface(self.interface, listen.host)
  if not iface then return fail(why) end
  self.interface = iface
  local publish = self.id and lport
  local engine, err = core.mdns {
    instance = publish and ("odo-" .. self.id:sub(1, 16)) or nil,
    ip = iface, ip6 = publish and self.ip6 or nil, port = lport, ttl = self.ttl, max_instances = self.max_instances,
    txt = publish and { "id=" .. self.id, "swarm=" .. self.swarm } or nil,
  }
  if not engine then return fail(err) end
  local sock
  sock, err = self.adapter.udp("0.0.0.0", self.port, { reuse = true })
  if not sock then
    engine:close()
    return fail(err)
  end
  local ok
  ok, err = sock:join(GROUP, iface)
  if ok then ok, err = sock:multicast(iface, 255) end
  if not ok then
    sock:close()
    engine:close()
    return fail(err)
  end
  self.engine, self.sock = engine, sock
  -- RFC 6762 §11: only packets from the link (when the netmask is known;
  -- Linux delivers the group's packets from every interface some socket
  -- joined it on)
  local mask = netmask_of(iface)
  sock:recv_start(function(rerr, data, host, port)
    if rerr or not self.engine or self.stopped then return end
    if mask and not same_subnet(host, iface, mask) then
      self.off_link = (self.off_link or 0) + 1
      return
    end
    local fine, reason = self.engine:input(data, host, port)
    if not fine then
      self.refused = (self.refused or 0) + 1
      self.refused_why = reason
      return
    end
    self:_pump()
  end)
  self:_pump()
end

--- Stops: says goodbye (TTL 0 for every record announced), leaves the
-- group and closes the socket once the goodbye is sent.
function Source:stop()
  if self.stopped then return end
  self.stopped = true
  if self.timer then self.timer.stop() end
  self.timer = nil
  if not self.engine then return end
  self.engine:stop()
  self:_pump()
  self.engine:close()
  self.engine = nil
  self.sock:leave(GROUP, self.interface)
  self.closing = true
  if self.pending == 0 then self.sock:close() end
end

--- What this source found, as `node:status().discovery` lists it:
-- `{name, swarm, interface, found, found_at, last, error, error_at,
-- refused, last_refused, off_link}`. `found` lists the instances of our
-- swarm known now (`{host, port, id, instance, at}`), `last` the one found
-- last, `found_at` when (wall clock, ms, as every `at`); `error` why the
-- source could not start or send; `refused` counts packets the engine
-- refused (the last one's reason in `last_refused`), `off_link` packets
-- from outside the interface's subnet, ignored (RFC 6762 §11).
function Source:status()
  local function public(f)
    return f and { id = f.id, host = f.host, port = f.port, instance = f.instance, at = f.at }
  end
  local list = {}
  for _, f in pairs(self.found) do list[#list + 1] = public(f) end
  table.sort(list, function(a, b) return a.id < b.id end)
  return { name = self.name, swarm = self.swarm, interface = self.interface, found = list,
    found_at = self.found_at, last = public(self.last), error = self.error, error_at = self.error_at,
    refused = self.refused or 0, last_refused = self.refused_why, off_link = self.off_link or 0 }
end

-- The module is the constructor; its parts are reachable for specs.
return setmetatable({ same_subnet = same_subnet }, {
  __call = function(_, opts) return new(opts) end,
})
