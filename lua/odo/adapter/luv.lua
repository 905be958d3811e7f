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
  t:start(math.max(0, math.floor(ms)), 0, function()
    t:close()
    fn()
  end)
  return stopper(t)
end

--- Calls fn every ms milliseconds; returns a handle with stop().
function A.every(ms, fn)
  local t = uv.new_timer()
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

--- Runs the loop until nothing is left to do.
function A.run()
  return uv.run()
end

--- Runs one loop iteration without blocking (for hosts with their own loop).
function A.step()
  return uv.run("nowait")
end

--- Closes the adapter's own handles (call after the last node closed).
function A.shutdown()
  if idle and not idle:is_closing() then
    idle:close()
  end
  idle = nil
  queue = {}
end

return A
