--- The default adapter: luv's event loop.
--
-- An adapter is how the node reaches time, timers and sockets; the C core
-- never does (docs/ADAPTERS.md). This one drives luv. Callbacks passed to
-- it must not raise: the node wraps every callback it hands over.
--
-- @module odo.adapter.luv
local uv = require "luv"

local A = { name = "luv" }

--- Milliseconds on a monotonic clock.
function A.now()
  return uv.hrtime() / 1e6
end

--- Nanoseconds on a monotonic clock (for budgets and latency).
function A.hrtime()
  return uv.hrtime()
end

local function stopper(t)
  return {
    stop = function()
      if not t:is_closing() then
        t:stop()
        t:close()
      end
    end,
  }
end

--- Calls fn once after ms milliseconds; returns a handle with stop().
function A.timer(ms, fn)
  local t = uv.new_timer()
  uv.update_time() -- a host may not have stepped the loop for a while
  t:start(math.max(0, math.floor(ms)), 0, function()
    t:close()
    fn()
  end)
  return stopper(t)
end

--- Calls fn every ms milliseconds; returns a handle with stop().
function A.every(ms, fn)
  local t = uv.new_timer()
  uv.update_time()
  ms = math.max(1, math.floor(ms))
  t:start(ms, ms, fn)
  return stopper(t)
end

--- Calls fn(err) whenever file descriptor fd is readable; returns a
-- handle with stop().
function A.watch(fd, fn)
  local p = uv.new_poll(fd)
  p:start("r", fn)
  return {
    stop = function()
      if not p:is_closing() then
        p:stop()
        p:close()
      end
    end,
  }
end

--- Calls fn(readable, writable) whenever file descriptor fd is ready for
-- what `events` asks: "r" (reading), "w" (writing) or "rw"; an error on
-- the descriptor reports it ready for both, so its owner reads the error.
-- Returns a handle with stop(), or nil, "NAME: message", "NAME".
function A.poll(fd, events, fn)
  assert(events == "r" or events == "w" or events == "rw", "events must be \"r\", \"w\" or \"rw\"")
  local p, err, name = uv.new_poll(fd)
  if not p then return nil, err, name end
  local ok
  ok, err, name = p:start(events, function(perr, ready)
    if perr or not ready then return fn(true, true) end
    -- "d": the peer hung up, which a read reports
    fn(ready:find("[rd]") ~= nil, ready:find("w", 1, true) ~= nil)
  end)
  if not ok then
    p:close()
    return nil, err, name
  end
  return stopper(p)
end

-- Deferred calls run from an idle handle: on the next loop iteration,
-- after timers, without blocking for I/O while any are queued.
local queue, idle = {}, nil

local function run_deferred()
  local q = queue
  queue = {}
  for i = 1, #q do q[i]() end
  if #queue == 0 and idle then
    idle:stop()
  end
end

--- Calls fn soon: after the current callback returns, before the loop
-- next waits for I/O. Many calls are run in order on one loop turn.
function A.defer(fn)
  queue[#queue + 1] = fn
  if not idle then
    idle = uv.new_idle()
  end
  if not idle:is_active() then
    idle:start(run_deferred)
  end
end

-- ---- sockets ------------------------------------------------------------------

-- Writing to a socket whose peer is gone raises SIGPIPE, which ends the
-- process unless handled; libuv leaves it alone. A (never called, unref'd)
-- handler turns it into EPIPE from the write, as every network program
-- needs. Installed with the first socket.
local sigpipe
local function ignore_sigpipe()
  if sigpipe then return end
  sigpipe = uv.new_signal()
  sigpipe:start("sigpipe", function() end)
  sigpipe:unref()
end

-- Whether host is an IP address (v4 dotted, or v6), not a name.
local function is_ip(host)
  return host:match("^%d+%.%d+%.%d+%.%d+$") or host:find(":", 1, true)
end

-- A stream socket as the transport sees it.
local Sock = {}
Sock.__index = Sock

local function wrap(tcp)
  return setmetatable({ tcp = tcp }, Sock)
end

--- The most time (ms) a socket's reads may take before it yields to the
-- rest of the loop: libuv reads a ready socket many times in one loop
-- turn, and each 64 KiB chunk of a catch-up costs the node about 0.7 ms,
-- so without a budget one turn (a host's `step`) could run for 20 ms and
-- more. Past the budget the socket stops reading until the next loop
-- turn (a deferred call); nil: no budget. 0.5 ms keeps a host's step
-- under 2 ms at the 99th percentile while catching up (`make
-- bench-embed`: 1 ms gave 2.05-2.61 ms on a quiet machine, 0.5 ms
-- 1.36-1.57) and costs a catch-up nothing measurable (bench-sync's
-- ratio to the C pipe 0.87-0.89 with 1 ms, 0.90-0.92 with 0.5 ms).
A.read_budget_ms = 0.5

--- Starts reading: fn(err, data); data is nil at end of stream.
function Sock:read_start(fn)
  local tcp, spent = self.tcp, 0
  local on_read
  local function resume()
    spent = 0
    if not tcp:is_closing() and not self.stopped then tcp:read_start(on_read) end
  end
  on_read = function(err, data)
    local t0 = uv.hrtime()
    fn(err, data)
    local budget = A.read_budget_ms
    if not data or not budget or tcp:is_closing() then return end
    spent = spent + (uv.hrtime() - t0) / 1e6
    if spent > budget then
      tcp:read_stop()
      A.defer(resume)
    end
  end
  self.stopped = false
  tcp:read_start(on_read)
end

--- Stops reading until the next `read_start`.
function Sock:read_stop()
  self.stopped = true
  self.tcp:read_stop()
end

--- Writes data; cb(err) once it reached the kernel.
function Sock:write(data, cb)
  local ok, err = self.tcp:write(data, cb)
  if not ok and cb then A.defer(function() cb(err or "write failed") end) end
end

--- Sets the kernel's send and receive buffers (SO_SNDBUF, SO_RCVBUF;
-- Linux doubles them for its own bookkeeping); false when it could not.
function Sock:buffer_size(bytes)
  local ok = pcall(uv.send_buffer_size, self.tcp, bytes)
  local ok2 = pcall(uv.recv_buffer_size, self.tcp, bytes)
  return ok and ok2
end

--- Bytes queued in libuv, not yet written.
function Sock:queued()
  return self.tcp:get_write_queue_size()
end

--- The remote address: host, port.
function Sock:peer()
  if not self.tcp.getpeername then return nil end
  local a = self.tcp:getpeername()
  if type(a) ~= "table" then return nil end
  return a.ip, a.port
end

--- The local address: host, port.
function Sock:local_address()
  local a = self.tcp:getsockname()
  if not a then return nil end
  return a.ip, a.port
end

--- Closes the socket (idempotent).
function Sock:close()
  if not self.tcp:is_closing() then self.tcp:close() end
end

-- The address to bind for a listen host: an IP as it is; a host name
-- ("localhost") resolved once, now, preferring IPv4 (this blocks, once, at
-- start). nil, why when there is none.
local function listen_ip(host)
  if is_ip(host) then return host end
  if not host:match("^%w[%w%.%-]*$") or host:match("^[%d%.]+$") then
    return nil, "not an IP address or host name"
  end
  local res, err = uv.getaddrinfo(host, nil, { socktype = "stream", family = "inet" })
  if not (res and res[1]) then res, err = uv.getaddrinfo(host, nil, { socktype = "stream" }) end
  if not (res and res[1]) then return nil, "cannot resolve it (" .. tostring(err) .. ")" end
  return res[1].addr
end

--- Listens on host:port (an IP, or a name resolved now; port 0: any free
-- port); on_conn(sock) for each accepted connection. Returns {host = the
-- IP bound, port = the port bound, close = function}, or nil,
-- "NAME: message", "NAME".
function A.listen(host, port, on_conn)
  local function einval(why)
    return nil, ("EINVAL: cannot listen on %s:%s: %s"):format(host, tostring(port), tostring(why)), "EINVAL"
  end
  local ip, why = listen_ip(host)
  if not ip then return einval(why) end
  ignore_sigpipe()
  local server = uv.new_tcp()
  -- luv raises on an address it cannot parse ("300.1.1.1", a bad port)
  local called, ok, err, name = pcall(server.bind, server, ip, port)
  if not called then ok, err, name = einval(ok) end
  if ok then ok, err, name = server:listen(128, function(lerr)
    if lerr then return end
    local client = uv.new_tcp()
    if server:accept(client) then
      client:nodelay(true)
      on_conn(wrap(client))
    else
      client:close()
    end
  end) end
  if not ok then
    server:close()
    name = name or tostring(err):match("^(%u+)") or "EIO"
    return nil, ("%s: cannot listen on %s:%s: %s"):format(name, ip, tostring(port),
      (tostring(err):gsub("^%u+: ", ""))), name
  end
  return {
    port = server:getsockname().port,
    host = ip,
    close = function()
      if not server:is_closing() then server:close() end
    end,
  }
end

--- Listens on a unix socket at `path` (mode 0600), replacing a stale
-- socket file no one answers on; on_conn(sock) per connection. Returns
-- {path, close} or nil, "NAME: message", "NAME".
function A.listen_unix(path, on_conn)
  ignore_sigpipe()
  local probe = uv.new_pipe(false)
  local alive
  -- a socket file left by a node that died: connecting to it fails at once
  if uv.fs_stat(path) then
    local ok = pcall(probe.connect, probe, path, function(err) alive = not err end)
    if ok then
      while alive == nil do uv.run("once") end
    end
    if alive then
      probe:close()
      return nil, "EADDRINUSE: a node is already running with " .. path, "EADDRINUSE"
    end
    os.remove(path)
  end
  probe:close()
  local server = uv.new_pipe(false)
  local ok, err, name = server:bind(path)
  if ok then
    uv.fs_chmod(path, 384) -- 0600
    -- a long queue: many `odo` commands may connect at once
    ok, err, name = server:listen(511, function(lerr)
      if lerr then return end
      local client = uv.new_pipe(false)
      if server:accept(client) then on_conn(wrap(client)) else client:close() end
    end)
  end
  if not ok then
    server:close()
    return nil, ("%s: cannot listen on %s: %s"):format(name or "EIO", path, tostring(err)), name or "EIO"
  end
  return {
    path = path,
    close = function()
      if not server:is_closing() then server:close() end
      os.remove(path)
    end,
  }
end

--- Connects to host:port (an IP address or a name to resolve); cb(sock)
-- or cb(nil, "NAME: message", "NAME"). Returns a handle with cancel().
function A.connect(host, port, cb)
  ignore_sigpipe()
  local tcp, done = nil, false
  local function finish(sock, err, name)
    if done then
      if sock then sock:close() end
      return
    end
    done = true
    cb(sock, err, name)
  end
  local function dial(ip)
    tcp = uv.new_tcp()
    local ok, err = pcall(tcp.connect, tcp, ip, port, function(cerr)
      -- cancelled: cancel() closed the handle, and libuv reports ECANCELED
      if done then
        if not tcp:is_closing() then tcp:close() end
        return
      end
      if cerr then
        tcp:close()
        local name = tostring(cerr):match("^(%u+)") or "ECONNECT"
        return finish(nil, ("%s: cannot connect to %s:%d"):format(name, host, port), name)
      end
      tcp:nodelay(true)
      finish(wrap(tcp))
    end)
    if not ok or not err then
      if not tcp:is_closing() then tcp:close() end
      A.defer(function() finish(nil, "EINVAL: " .. tostring(err), "EINVAL") end)
    end
  end
  if is_ip(host) then
    dial(host)
  else
    uv.getaddrinfo(host, nil, { socktype = "stream" }, function(err, res)
      if done then return end
      if err or not res or not res[1] then
        return finish(nil, ("ENOTFOUND: cannot resolve %s (%s)"):format(host, tostring(err)), "ENOTFOUND")
      end
      dial(res[1].addr)
    end)
  end
  return {
    cancel = function()
      if not done then
        done = true
        if tcp and not tcp:is_closing() then tcp:close() end
      end
    end,
  }
end

-- ---- datagrams (UDP) ------------------------------------------------------------

-- A luv call's failure as nil, "NAME: what: message", "NAME"; luv raises
-- for an argument it cannot parse (a bad address), returns nil, err, name
-- for a failure of the system call.
local function udp_call(what, f, ...)
  local called, ok, err, name = pcall(f, ...)
  if not called then return nil, ("EINVAL: %s: %s"):format(what, tostring(ok)), "EINVAL" end
  if not ok then
    name = name or tostring(err):match("^(%u+)") or "EIO"
    return nil, ("%s: %s: %s"):format(name, what, tostring(err)), name
  end
  return true
end

-- A UDP socket as a discovery back-end sees it.
local Udp = {}
Udp.__index = Udp

--- Joins multicast group `group` on the interface with IPv4 address
-- `iface`; true or nil, "NAME: message", "NAME".
function Udp:join(group, iface)
  return udp_call(("cannot join %s on %s"):format(group, iface), self.udp.set_membership, self.udp,
    group, iface, "join")
end

--- Leaves multicast group `group` on interface `iface`.
function Udp:leave(group, iface)
  return udp_call(("cannot leave %s on %s"):format(group, iface), self.udp.set_membership, self.udp,
    group, iface, "leave")
end

--- Sends multicast through interface `iface` (an IPv4 address), with IP
-- TTL `ttl` (mDNS: 255) for multicast and unicast alike; `loop` (default
-- true) delivers it to the host's own sockets too.
function Udp:multicast(iface, ttl, loop)
  local u = self.udp
  local ok, err, name = udp_call("cannot send multicast through " .. tostring(iface),
    u.set_multicast_interface, u, iface)
  if ok then ok, err, name = udp_call("cannot set the multicast TTL", u.set_multicast_ttl, u, ttl) end
  if ok then ok, err, name = udp_call("cannot set the TTL", u.set_ttl, u, ttl) end
  if ok then ok, err, name = udp_call("cannot set multicast loop", u.set_multicast_loop, u, loop ~= false) end
  return ok, err, name
end

--- Sends one datagram to host:port (IP addresses); `cb(err)` once sent
-- (optional). Returns true or nil, "NAME: message", "NAME".
function Udp:send(data, host, port, cb)
  local ok, err, name = udp_call(("cannot send to %s:%s"):format(host, tostring(port)), self.udp.send,
    self.udp, data, host, port, function(serr) if cb then cb(serr) end end)
  return ok, err, name
end

--- Calls fn(err, data, host, port) for each datagram received.
function Udp:recv_start(fn)
  self.udp:recv_start(function(err, data, addr)
    if err then return fn(err) end
    -- luv calls with no data once a read finds nothing more
    if data and addr then fn(nil, data, addr.ip, addr.port) end
  end)
end

--- Closes the socket (idempotent).
function Udp:close()
  if not self.udp:is_closing() then self.udp:close() end
end

--- Opens a UDP socket (IPv4) bound to host:port (port 0: any free port).
-- `opts.reuse` binds with SO_REUSEADDR, so the port is shared with other
-- sockets (an mDNS responder on 5353 next to an avahi-daemon). Returns a
-- socket {port, join, leave, multicast, send, recv_start, close}, or nil,
-- "NAME: message", "NAME" (`EADDRINUSE`, `EACCES`, `EINVAL`).
function A.udp(host, port, opts)
  local u = uv.new_udp("inet")
  local ok, err, name = udp_call(("cannot bind UDP %s:%s"):format(host, tostring(port)), u.bind, u, host, port,
    { reuseaddr = opts and opts.reuse or nil })
  if not ok then
    u:close()
    return nil, err, name
  end
  return setmetatable({ udp = u, port = u:getsockname().port }, Udp)
end

--- Runs the loop until nothing is left to do.
function A.run()
  return uv.run()
end

-- Wakes a step that waits for I/O once its timeout is up (unref'd: it
-- never keeps the loop alive by itself).
local step_timer

--- Runs one loop iteration (for hosts with their own loop): what is ready
-- now, waiting at most `timeout_ms` (default 0: not at all) for I/O or a
-- timer when nothing is. Not from inside a loop callback.
function A.step(timeout_ms)
  if not timeout_ms or timeout_ms <= 0 then return uv.run("nowait") end
  if not step_timer then
    step_timer = uv.new_timer()
    step_timer:unref()
  end
  step_timer:start(math.max(1, math.floor(timeout_ms)), 0, function() end)
  local r = uv.run("once")
  step_timer:stop()
  return r
end

--- Milliseconds until the loop next has work (0: now), nil when only
-- I/O can bring more (no timer due).
function A.timeout()
  local ms = uv.backend_timeout()
  if ms < 0 then return nil end
  return ms
end

--- The loop's backend descriptor (epoll): readable when `step` has I/O
-- to handle.
function A.pollfd()
  local fd = uv.backend_fd()
  if fd and fd >= 0 then return fd end
  return nil
end

-- Whether a handle of the loop is closing: closed, its close callback not
-- run yet.
local function closing_left()
  local any = false
  uv.walk(function(h)
    if h:is_closing() then any = true end
  end)
  return any
end

--- Lets the handles closed so far finish closing, when no loop is running
-- (a node closed at the end of a script, outside `uv.run`). libuv runs a
-- close callback on a later loop turn; until then luv holds the handle's
-- memory. When the interpreter ends first, `lua_close` frees every handle,
-- and luv's own loop collector then runs the loop, which calls the close
-- callbacks of freed handles: a crash (exit 139). luv's rule is to run the
-- loop after closing; this runs it for as many non-blocking turns as the
-- closing takes. Inside a running loop it does nothing: that loop runs
-- the callbacks itself on its next turn.
function A.settle()
  if uv.loop_mode() ~= nil then return end
  while closing_left() do uv.run("nowait") end
end

--- Closes the adapter's own handles (call after the last node closed).
function A.shutdown()
  if idle and not idle:is_closing() then
    idle:close()
  end
  if sigpipe and not sigpipe:is_closing() then
    sigpipe:close()
  end
  if step_timer and not step_timer:is_closing() then
    step_timer:close()
  end
  idle, sigpipe, step_timer = nil, nil, nil
  queue = {}
  A.settle()
end

return A
