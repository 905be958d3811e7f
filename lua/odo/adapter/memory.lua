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
  local timers, seq, queue = {}, 0, {}

  function a.now() return a.t end

  function a.hrtime() return math.floor(a.t * 1e6) end

  local function add_timer(ms, fn, every)
    seq = seq + 1
    local t = { at = a.t + math.max(0, ms), fn = fn, every = every, seq = seq }
    timers[t] = true
    t.stop = function() timers[t] = nil end
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
    local best
    for t in pairs(timers) do
      if t.at <= limit and (not best or t.at < best.at or (t.at == best.at and t.seq < best.seq)) then
        best = t
      end
    end
    return best
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

  a.step = a.drain
  a.run = a.drain
  return a
end

return M
