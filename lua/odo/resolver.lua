--- DNS lookups that never block the loop: the core's c-ares resolver
-- (`core.dns_resolver`) driven through an adapter.
--
-- c-ares 1.18 has no thread of its own. After every call into it this
-- module asks which sockets to poll (and for what), polls them with the
-- adapter's `poll`, lets c-ares read or write a socket when it is ready,
-- arms one timer for c-ares's next timeout (retries, a server that does not
-- answer), and hands the finished queries to their callbacks. An adapter
-- without `poll` (the in-memory one) cannot resolve.
--
-- @module odo.resolver
local core = require "odo.core"

local Resolver = {}
Resolver.__index = Resolver
Resolver.__name = "odo.Resolver"

local function report_error(fn, ...)
  local ok, err = pcall(fn, ...)
  if not ok then io.stderr:write("odo.resolver: ", tostring(err), "\n") end
end

--- A resolver on `adapter`.
-- @tparam table adapter an adapter with `poll`, `timer` and `defer`
--   (docs/ADAPTERS.md)
-- @tparam[opt] table opts `servers` ("IP:PORT,[IPv6]:PORT,...", default:
--   the system's resolver configuration), `timeout_ms`, `tries` (see
--   `core.dns_resolver`), `protect` (`function(fn, ...)` that runs a
--   callback protected; default: pcall, errors to stderr), `on_error`
--   (`function(message)`; default: stderr)
-- @treturn Resolver
-- @treturn[2] nil
-- @treturn[2] string "ENOTSUP: ..." (the adapter cannot poll), "EINVAL:
--   ..." (servers c-ares cannot use), "EDNS: ..."
-- @treturn[2] string NAME
function Resolver.new(adapter, opts)
  assert(type(adapter) == "table", "Resolver.new needs an adapter")
  opts = opts or {}
  if type(adapter.poll) ~= "function" then
    return nil, ("ENOTSUP: the %s adapter has no poll(fd, events, fn), which DNS lookups need"
      .. " (docs/ADAPTERS.md)"):format(tostring(adapter.name or "given")), "ENOTSUP"
  end
  local c, err, name = core.dns_resolver { servers = opts.servers, timeout_ms = opts.timeout_ms, tries = opts.tries }
  if not c then return nil, err, name end
  return setmetatable({
    core = c,
    adapter = adapter,
    protect = opts.protect or report_error,
    on_error = opts.on_error or function(msg) io.stderr:write("odo.resolver: ", msg, "\n") end,
    polls = {},   -- fd -> the adapter's poll handle
    pending = {}, -- query id -> callback
    closed = false,
  }, Resolver)
end

--- Looks `name` up; `cb(res)` runs once with `res` as `core`'s
-- `DnsResolver:results` gives it: `res.records`, or `res.err` ("NAME:
-- message") and `res.code` (NAME). Never after `close`.
-- @tparam string name
-- @tparam string qtype "SRV", "A" or "AAAA"
-- @tparam function cb
function Resolver:query(name, qtype, cb)
  assert(not self.closed, "attempt to use a closed resolver")
  assert(type(cb) == "function", "query needs a callback")
  local id, err, code = self.core:query(name, qtype)
  if not id then
    self.adapter.defer(function()
      if not self.closed then self.protect(cb, { name = name, type = qtype, err = err, code = code }) end
    end)
    return
  end
  self.pending[id] = cb
  self:_after()
end

--- The servers asked, "IP:PORT,...".
function Resolver:servers()
  return self.core:servers()
end

-- Polls what c-ares asks for: each change stops the descriptor's poll and,
-- unless it says "", starts a new one (c-ares may have closed a socket and
-- opened another on the same number since).
function Resolver:_watch()
  local changes, reset = self.core:sockets()
  if reset then self:_stop_polls() end
  for _, ch in ipairs(changes) do
    local fd = ch.fd
    if self.polls[fd] then
      self.polls[fd].stop()
      self.polls[fd] = nil
    end
    if ch.events ~= "" then
      local h, err = self.adapter.poll(fd, ch.events, function(readable, writable)
        self.protect(self._ready, self, fd, readable, writable)
      end)
      -- not polled, the query times out (and says so)
      if not h then self.on_error("cannot poll a DNS socket: " .. tostring(err)) end
      self.polls[fd] = h
    end
  end
end

-- After every call into c-ares: poll what it asks, arm its timeout, then
-- run the callbacks of the queries that finished (which may query again).
function Resolver:_after()
  if self.closed then return end
  self:_watch()
  if self.timer then self.timer.stop() end
  self.timer = nil
  local ms = self.core:timeout()
  if ms then
    self.timer = self.adapter.timer(ms, function()
      self.timer = nil
      self.protect(self._step, self)
    end)
  end
  for _, res in ipairs(self.core:results()) do
    if self.closed then return end
    local cb = self.pending[res.id]
    self.pending[res.id] = nil
    if cb then self.protect(cb, res) end
  end
end

function Resolver:_ready(fd, readable, writable)
  if self.closed then return end
  self.core:process(fd, readable, writable)
  self:_after()
end

function Resolver:_step()
  if self.closed then return end
  self.core:process()
  self:_after()
end

function Resolver:_stop_polls()
  for fd, h in pairs(self.polls) do
    h.stop()
    self.polls[fd] = nil
  end
end

--- Stops every poll and timer, then closes c-ares's sockets; queries in
-- flight are dropped (their callbacks never run). Idempotent.
function Resolver:close()
  if self.closed then return end
  self.closed = true
  self:_stop_polls()
  if self.timer then self.timer.stop() end
  self.timer = nil
  self.pending = {}
  self.core:close()
end

return Resolver
