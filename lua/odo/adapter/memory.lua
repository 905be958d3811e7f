--- An in-memory adapter with a manual clock.
--
-- Time moves only when a spec says so (`advance`), timers fire in order of
-- their deadlines, and deferred calls run on `drain`, so a node's state
-- machines can be tested deterministically, without real time. Like every
-- adapter its functions are called with a dot: `adapter.now()`.
--
-- @module odo.adapter.memory
local M = {}

--- A new adapter whose clock starts at `start_ms` (default 0).
function M.new(start_ms)
  local a = { name = "memory", t = start_ms or 0 }
  -- a simulation: the node may wait for the core's worker threads (the
  -- commit queue) when it polls them, so specs stay deterministic
  a.wait_for_workers = true
  local timers, seq, queue = {}, 0, {}

  function a.now() return a.t end

  function a.hrtime() return math.floor(a.t * 1e6) end

  -- due: a binary heap of the live timers by (at, seq), so a simulation
  -- of many nodes (thousands of timers) finds the next one in log time;
  -- a stopped timer leaves `timers` at once and the heap when it surfaces
  local due = {}
  local function earlier(x, y) return x.at < y.at or (x.at == y.at and x.seq < y.seq) end
  local function push(t)
    local i = #due + 1
    due[i] = t
    while i > 1 do
      local up = math.floor(i / 2)
      if not earlier(due[i], due[up]) then break end
      due[i], due[up] = due[up], due[i]
      i = up
    end
  end
  local function pop()
    local top, n = due[1], #due
    due[1] = due[n]
    due[n] = nil
    n = n - 1
    local i = 1
    while true do
      local l, m = 2 * i, i
      if l <= n and earlier(due[l], due[m]) then m = l end
      if l + 1 <= n and earlier(due[l + 1], due[m]) then m = l + 1 end
      if m == i then break end
      due[i], due[m] = due[m], due[i]
      i = m
    end
    return top
  end

  local function add_timer(ms, fn, every)
    seq = seq + 1
    local t = { at = a.t + math.max(0, ms), fn = fn, every = every, seq = seq }
    timers[t] = true
    t.stop = function() timers[t] = nil end
    push(t)
    return t
  end

  function a.timer(ms, fn) return add_timer(ms, fn, nil) end

  function a.every(ms, fn)
    ms = math.max(1, ms)
    return add_timer(ms, fn, ms)
  end

  function a.defer(fn) queue[#queue + 1] = fn end

  --- Runs deferred calls until none are queued (at most `max` rounds).
  function a.drain(max)
    for _ = 1, max or 100000 do
      if #queue == 0 then return true end
      local q = queue
      queue = {}
      for i = 1, #q do q[i]() end
    end
    return #queue == 0
  end

  local function next_timer(limit)
    while due[1] and not timers[due[1]] do pop() end
    local t = due[1]
    if t and t.at <= limit then return pop() end
  end

  --- Moves the clock forward by ms, firing every timer that falls due in
  -- order, and draining deferred calls after each.
  function a.advance(ms)
    local limit = a.t + ms
    a.drain()
    while true do
      local t = next_timer(limit)
      if not t then break end
      a.t = math.max(a.t, t.at)
      if t.every then
        t.at = t.at + t.every
        push(t)
      else
        timers[t] = nil
      end
      t.fn()
      a.drain()
    end
    a.t = limit
  end

  --- Advances in steps of `step_ms` (default 1) until cond() is true or
  -- `max_ms` (default 60000) passed; returns whether cond() became true.
  function a.run_until(cond, max_ms, step_ms)
    local stop = a.t + (max_ms or 60000)
    a.drain()
    while not cond() do
      if a.t >= stop then return false end
      a.advance(step_ms or 1)
    end
    return true
  end

  --- Number of live timers (specs check none are left behind).
  function a.pending_timers()
    local n = 0
    for _ in pairs(timers) do n = n + 1 end
    return n
  end

  -- ---- an in-memory network ---------------------------------------------
  -- Hosts are names ("10.0.0.1"); a write is delivered to the other end on
  -- a deferred call, in order. `a.hold(host)` keeps everything sent to or
  -- by a host in flight (a host that stopped answering) until
  -- `a.release(host)`; `a.tap(fn)` lets a spec see or change traffic:
  -- fn(from_host, to_host, data, from_port, to_port) returns the data to
  -- deliver, nil to drop it, or false to keep it in flight (with whatever
  -- follows it on that connection) until a later flush.
  local listeners, next_port, held, tap = {}, 40000, {}, nil
  local in_transit = {}

  local Sock = {}
  Sock.__index = Sock

  function Sock:read_start(fn)
    self.reader = fn
    local inbox = self.inbox
    self.inbox = {}
    for _, d in ipairs(inbox) do fn(d[1], d[2]) end
  end

  local function deliver(sock, err, data)
    if sock.closed then return end
    if sock.reader then sock.reader(err, data)
    else sock.inbox[#sock.inbox + 1] = { err, data } end
  end

  local function send(from, to, data, cb)
    in_transit[#in_transit + 1] = { from = from, to = to, data = data, cb = cb }
    a.defer(function() a.flush_network() end)
  end

  --- Delivers what is in transit, except to or from held hosts.
  function a.flush_network()
    local q = in_transit
    local kept = {} -- sockets whose earlier data stays in flight
    in_transit = {}
    for _, m in ipairs(q) do
      local data = m.data
      if held[m.from.host] or held[m.to.host] or kept[m.to] then
        data = false
      elseif data and tap then
        data = tap(m.from.host, m.to.host, data, m.from.port, m.to.port)
      end
      if data == false then
        kept[m.to] = true
        in_transit[#in_transit + 1] = m
      else
        if data or m.data == nil then deliver(m.to, nil, data) end
        if m.cb then m.cb() end
      end
    end
  end

  function Sock:write(data, cb)
    if self.closed or self.peer_sock.closed then
      if cb then a.defer(function() cb("EPIPE: the connection is closed") end) end
      return
    end
    send(self, self.peer_sock, data, cb)
  end

  function Sock.queued() return 0 end
  function Sock:peer() return self.remote_host, self.remote_port end
  function Sock:local_address() return self.host, self.port end

  function Sock:close()
    if self.closed then return end
    self.closed = true
    if not self.peer_sock.closed then send(self, self.peer_sock, nil, nil) end
  end

  --- Listens on host:port (port 0 picks one); on_conn(sock) per connection.
  function a.listen(host, port, on_conn)
    if port == 0 then
      repeat
        next_port = next_port + 1
      until not listeners[host .. ":" .. next_port]
      port = next_port
    end
    local key = host .. ":" .. port
    if listeners[key] then
      return nil, "EADDRINUSE: " .. key .. " is in use", "EADDRINUSE"
    end
    listeners[key] = on_conn
    return { host = host, port = port, close = function() listeners[key] = nil end }
  end

  --- Connects to host:port from `from` (a host name, default 127.0.0.1).
  function a.connect(host, port, cb, from)
    local cancelled = false
    a.defer(function()
      if cancelled then return end
      local on_conn = listeners[host .. ":" .. port]
      if not on_conn or held[host] then
        if held[host] then return end -- no answer at all: a timeout will tell
        return cb(nil, ("ECONNREFUSED: cannot connect to %s:%d"):format(host, port), "ECONNREFUSED")
      end
      next_port = next_port + 1
      from = from or "127.0.0.1"
      local c = setmetatable({ host = from, port = next_port, remote_host = host,
        remote_port = port, inbox = {} }, Sock)
      local s = setmetatable({ host = host, port = port, remote_host = from,
        remote_port = next_port, inbox = {} }, Sock)
      c.peer_sock, s.peer_sock = s, c
      on_conn(s)
      cb(c)
    end)
    return { cancel = function() cancelled = true end }
  end

  -- ---- datagrams ----------------------------------------------------------
  -- UDP sockets on the same in-memory hosts: a datagram is delivered on a
  -- deferred call; to a multicast group (224.0.0.0/4) it reaches every
  -- socket of that port that joined the group (the sender's own only with
  -- loop on), to an address the socket of that port last bound there (or
  -- on 0.0.0.0 with that interface). A held host's datagrams are dropped.
  -- The sender's address is its bound host, else its multicast interface.
  local udps = {}
  local Udp = {}
  Udp.__index = Udp

  local function multicast_addr(host)
    local first = tonumber(host:match("^(%d+)%."))
    return first and first >= 224 and first <= 239
  end

  function Udp:join(group, iface)
    self.groups[group] = iface
    self.iface = self.iface or iface
    return true
  end

  function Udp:leave(group)
    self.groups[group] = nil
    return true
  end

  function Udp:multicast(iface, _, loop)
    self.iface, self.loop = iface, loop ~= false
    return true
  end

  function Udp:send(data, host, port, cb)
    local from = self.host ~= "0.0.0.0" and self.host or self.iface or "127.0.0.1"
    a.defer(function()
      if not (held[from] or held[host]) then
        local targets = {}
        for _, u in ipairs(udps) do
          if not u.closed and u.port == port then
            if multicast_addr(host) then
              if u.groups[host] and (u ~= self or self.loop) then targets[#targets + 1] = u end
            elseif u.host == host or (u.host == "0.0.0.0" and u.iface == host) then
              targets = { u }
            end
          end
        end
        for _, u in ipairs(targets) do
          if u.reader and not held[u.iface or u.host] then u.reader(nil, data, from, self.port) end
        end
      end
      if cb then cb() end
    end)
    return true
  end

  function Udp:recv_start(fn) self.reader = fn end

  function Udp:close()
    self.closed = true
    for i, u in ipairs(udps) do
      if u == self then table.remove(udps, i) break end
    end
  end

  --- A UDP socket bound to host:port (see docs/ADAPTERS.md); `opts.reuse`
  -- lets sockets share a port.
  function a.udp(host, port, opts)
    local reuse = opts and opts.reuse or false
    if port == 0 then
      next_port = next_port + 1
      port = next_port
    end
    for _, u in ipairs(udps) do
      if u.port == port and (u.host == host or u.host == "0.0.0.0" or host == "0.0.0.0")
          and not (reuse and u.reuse) then
        return nil, ("EADDRINUSE: cannot bind UDP %s:%d: address already in use"):format(host, port), "EADDRINUSE"
      end
    end
    local u = setmetatable({ host = host, port = port, reuse = reuse, groups = {}, loop = true }, Udp)
    udps[#udps + 1] = u
    return u
  end

  function a.hold(host) held[host] = true end

  function a.release(host)
    held[host] = nil
    a.defer(function() a.flush_network() end)
  end

  function a.tap(fn) tap = fn end

  -- step(timeout_ms): runs what is queued; the manual clock never waits
  function a.step() return a.drain() end
  a.run = a.drain
  return a
end

return M
