--- An adapter for OpenResty (lua-nginx-module): a node inside one nginx
-- worker, in one long-lived `ngx.timer.at` context.
--
-- A cosocket belongs to the context that made it, so everything the node
-- does lives in the context that calls `new`: its timers and deferred
-- calls run in `run`, the scheduler (the context's entry thread, which
-- sleeps on a semaphore until the next timer or a deferred call); each
-- socket has one reader and one writer light thread. The node's code runs
-- only in the scheduler, never in an I/O thread: a reader hands a chunk
-- to the scheduler and waits until it was consumed (one chunk in flight
-- per socket); `sock:write` only queues and wakes the writer, so no
-- callback ever yields. Lua in nginx cannot listen on a raw port, so the
-- node dials out only (`listen` returns ENOTSUP); nginx cannot watch a
-- raw descriptor either, so there is no `watch` (snapshot writes run in
-- the scheduler).
--
-- Needs the `ngx` API of a timer context (`ngx.timer.at`), and
-- `lua_socket_log_errors off` in nginx.conf: readers wake every
-- `read_poll_ms` to see whether their socket was closed, and nginx would
-- log each of those timeouts.
-- @module odo.adapter.ngx
local M = {}

-- LuaJIT's ffi and lua-resty-core's semaphore, loaded by `new` (inside
-- nginx), so that this module loads under any Lua
local ffi, semaphore, ts
local CLOCK_MONOTONIC = 1

local function load_nginx_parts()
  if ffi then return end
  ffi = require "ffi"
  semaphore = require "ngx.semaphore"
  pcall(ffi.cdef, [[
    typedef struct { long tv_sec; long tv_nsec; } odo_ngx_timespec;
    int clock_gettime(int clk_id, odo_ngx_timespec *tp);
  ]])
  ts = ffi.new("odo_ngx_timespec")
end

local function hrtime()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) * 1e9 + tonumber(ts.tv_nsec)
end

-- "connection refused" and the like as luv-style names.
local function error_name(err)
  err = tostring(err)
  if err:find("refused", 1, true) then return "ECONNREFUSED" end
  if err:find("timeout", 1, true) or err:find("timed out", 1, true) then return "ETIMEDOUT" end
  if err:find("resolve", 1, true) or err:find("resolver", 1, true) then return "ENOTFOUND" end
  if err:find("closed", 1, true) then return "EPIPE" end
  return "ECONNECT"
end

--- A new adapter bound to the calling context (call it inside the
-- `ngx.timer.at` handler that will run the node).
-- @tparam[opt] table opts `read_poll_ms` (default 200: how often a
--   reader waiting for data checks whether its socket was closed),
--   `connect_timeout_ms` (10000), `send_timeout_ms` (60000),
--   `max_wait_ms` (100: the longest the scheduler sleeps before it looks
--   at `stop` again), `busy_ms` (5: the longest the scheduler runs
--   queued work before it lets nginx and the I/O threads run), `log`
--   (`function(msg)`, default ngx.log at ERR)
-- @treturn table the adapter
function M.new(opts)
  load_nginx_parts()
  local ngx = rawget(_G, "ngx") -- the nginx API
  opts = opts or {}
  local a = { name = "ngx" }
  local read_poll_ms = opts.read_poll_ms or 200
  local connect_ms = opts.connect_timeout_ms or 10000
  local send_ms = opts.send_timeout_ms or 60000
  local max_wait = (opts.max_wait_ms or 100) / 1000
  local busy_ms = opts.busy_ms or 5
  local log = opts.log or function(msg) ngx.log(ngx.ERR, "odo: ", msg) end

  local wake = assert(semaphore.new(0))
  local sleeping = false
  local queue = {}          -- deferred calls, in order
  local timers = {}         -- set of {at = ms, fn, every = ms or nil}
  local socks = {}          -- open sockets (set)
  local threads = 0         -- I/O light threads still running
  -- scheduler turns; of them, those that ran nothing (woken early); timers run
  local stats = { turns = 0, idle = 0, timers = 0 }

  local function poke()
    if sleeping then
      sleeping = false
      wake:post(1)
    end
  end

  -- Runs fn in a light thread of this context; errors are logged.
  local function spawn(fn, ...)
    threads = threads + 1
    local th, err = ngx.thread.spawn(function(...)
      local ok, e = pcall(fn, ...)
      threads = threads - 1
      if not ok then log("I/O thread failed: " .. tostring(e)) end
      poke()
    end, ...)
    if not th then
      threads = threads - 1
      log("cannot spawn a light thread: " .. tostring(err))
    end
    return th
  end

  --- Milliseconds on a monotonic clock.
  function a.now() return hrtime() / 1e6 end

  --- Nanoseconds on a monotonic clock.
  function a.hrtime() return hrtime() end

  local function add_timer(ms, fn, every)
    local t = { at = a.now() + math.max(0, ms), fn = fn, every = every }
    timers[t] = true
    t.stop = function() timers[t] = nil end
    poke()
    return { stop = t.stop }
  end

  --- Calls fn once after ms; returns {stop}.
  function a.timer(ms, fn) return add_timer(ms, fn, nil) end

  --- Calls fn every ms; returns {stop}.
  function a.every(ms, fn)
    ms = math.max(1, ms)
    return add_timer(ms, fn, ms)
  end

  --- Calls fn soon, in the scheduler, in order.
  function a.defer(fn)
    queue[#queue + 1] = fn
    poke()
  end

  -- ---- sockets ----------------------------------------------------------------

  local Sock = {}
  Sock.__index = Sock

  local function wrap(tcp, host, port)
    local s = setmetatable({
      tcp = tcp, host = host, port = port,
      out = {}, cbs = {}, out_bytes = 0,
      wsema = assert(semaphore.new(0)), rsema = assert(semaphore.new(0)),
      closed = false, failed = nil,
    }, Sock)
    socks[s] = true
    s.live = 1 -- the writer; the reader adds itself in read_start
    -- the writer: sends what is queued, then calls each write's callback
    spawn(function()
      while true do
        if #s.out == 0 then
          if s.closed then break end
          s.wsema:wait(max_wait)
        else
          local chunks, cbs, n = s.out, s.cbs, s.out_bytes
          s.out, s.cbs = {}, {}
          local err
          if s.failed then err = s.failed
          else
            local sent, e = tcp:send(chunks)
            if not sent then
              err = e
              s.failed = e
            end
          end
          s.out_bytes = s.out_bytes - n
          for _, cb in ipairs(cbs) do a.defer(function() cb(err) end) end
        end
      end
      s:_release()
    end)
    return s
  end

  -- The last of the socket's threads to end closes the cosocket.
  function Sock:_release()
    self.live = self.live - 1
    if self.live == 0 then
      self.tcp:close()
      socks[self] = nil
    end
  end

  --- fn(err, data) for each chunk received; data nil at the end.
  function Sock:read_start(fn)
    assert(not self.reading, "read_start called twice")
    self.reading = true
    self.live = self.live + 1
    spawn(function()
      while not self.closed do
        local data, err = self.tcp:receiveany(65536)
        if data then
          local consumed = false
          a.defer(function()
            consumed = true
            self.rsema:post(1)
            if not self.closed then fn(nil, data) end
          end)
          while not consumed and not self.closed do self.rsema:wait(max_wait) end
        elseif err ~= "timeout" then
          if not self.closed then
            local e = err ~= "closed" and err or nil
            a.defer(function() if not self.closed then fn(e, nil) end end)
          end
          break
        end
      end
      self:_release()
    end)
  end

  --- Queues data; cb(err) once sent (never yields).
  function Sock:write(data, cb)
    if self.closed or self.failed then
      if cb then a.defer(function() cb(self.failed or "closed") end) end
      return
    end
    self.out[#self.out + 1] = data
    self.cbs[#self.cbs + 1] = cb
    self.out_bytes = self.out_bytes + #data
    self.wsema:post(1)
  end

  --- Bytes queued, not yet handed to nginx.
  function Sock:queued() return self.out_bytes end

  --- The address dialled.
  function Sock:peer() return self.host, self.port end

  --- Closes: queued writes go out first (idempotent).
  function Sock:close()
    if self.closed then return end
    self.closed = true
    self.wsema:post(1)
    self.rsema:post(1)
  end

  --- Lua in nginx cannot listen on a raw port: this adapter dials out only.
  function a.listen(host, port)
    return nil, ("ENOTSUP: cannot listen on %s:%s inside nginx (the ngx adapter dials out only)")
      :format(tostring(host), tostring(port)), "ENOTSUP"
  end

  --- Connects over a cosocket (a name needs nginx's `resolver`); cb(sock)
  -- or cb(nil, "NAME: message", "NAME"), in the scheduler. Returns
  -- {cancel}: after cancel(), cb is never called.
  function a.connect(host, port, cb)
    local h = { cancelled = false }
    spawn(function()
      local tcp = ngx.socket.tcp()
      tcp:settimeouts(connect_ms, send_ms, read_poll_ms)
      local ok, err = tcp:connect(host, port)
      if h.cancelled then
        if ok then tcp:close() end
        return
      end
      if not ok then
        local name = error_name(err)
        a.defer(function()
          if not h.cancelled then cb(nil, ("%s: cannot connect to %s:%d (%s)"):format(name, host, port, err), name) end
        end)
        return
      end
      local s = wrap(tcp, host, port)
      a.defer(function()
        if h.cancelled then return s:close() end
        cb(s)
      end)
    end)
    return { cancel = function() h.cancelled = true end }
  end

  -- ---- the scheduler ---------------------------------------------------------------

  -- Runs the deferred calls queued now and the timers due; returns the
  -- seconds until the next timer (nil: none).
  local function turn()
    local q = queue
    queue = {}
    stats.turns = stats.turns + 1
    for i = 1, #q do
      local ok, e = pcall(q[i])
      if not ok then log("a deferred call failed: " .. tostring(e)) end
    end
    local now = a.now()
    local due = {}
    for t in pairs(timers) do
      if t.at <= now then due[#due + 1] = t end
    end
    table.sort(due, function(x, y) return x.at < y.at end)
    stats.timers = stats.timers + #due
    if #q == 0 and #due == 0 then stats.idle = stats.idle + 1 end
    for _, t in ipairs(due) do
      if timers[t] then
        if t.every then
          t.at = math.max(t.at + t.every, now)
        else
          timers[t] = nil
        end
        local ok, e = pcall(t.fn)
        if not ok then log("a timer failed: " .. tostring(e)) end
      end
    end
    local next_at
    for t in pairs(timers) do
      if not next_at or t.at < next_at then next_at = t.at end
    end
    return next_at and math.max(0, next_at - a.now()) / 1000
  end

  --- Runs the scheduler in the calling thread until `stop()` is true
  -- (checked at least every `max_wait_ms`).
  function a.run(stop)
    local busy_since = a.now()
    while not stop() do
      local wait = turn()
      if #queue > 0 then
        -- work keeps coming: let the I/O threads and nginx run once a
        -- while (ngx.sleep(0) needs OpenResty's own nginx patch)
        if a.now() - busy_since > busy_ms then
          ngx.sleep(0.001)
          busy_since = a.now()
        end
      elseif wait == nil or wait > 0 then
        sleeping = true
        -- nginx's timers count whole milliseconds: a wait for less than
        -- one returns at once, and the loop would spin until the timer
        -- is due (half a CPU for a poll every 2 ms)
        wake:wait(math.max(0.001, math.min(wait or max_wait, max_wait)))
        sleeping = false
        busy_since = a.now()
      end
    end
  end

  --- One scheduler turn without waiting.
  function a.step()
    turn()
  end

  --- Closes every socket and runs the scheduler until their threads have
  -- ended (queued writes sent), at most `ms` (default 2000). Returns true
  -- when they all ended.
  function a.shutdown(ms)
    for s in pairs(socks) do s:close() end
    local deadline = a.now() + (ms or 2000)
    a.run(function() return (threads == 0 and #queue == 0) or a.now() > deadline end)
    return threads == 0
  end

  --- The I/O light threads still running (for tests and the runner).
  function a.threads() return threads end

  --- The scheduler's counts so far: `turns`, of them `idle` (turns that
  -- found no deferred call and no timer due: a wait that ended early),
  -- and `timers` run. Idle turns stay few against timers run; many more
  -- mean the scheduler spins instead of sleeping.
  function a.stats() return { turns = stats.turns, idle = stats.idle, timers = stats.timers } end

  return a
end

return M
