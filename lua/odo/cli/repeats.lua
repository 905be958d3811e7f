--- A log that says a repeated line a few times, then once a window with a
-- count: of the lines of one kind within `window_ms`, the first `burst`
-- are written, the rest only counted, and the next one written after the
-- window carries the count of those held back ("(and 583 more like it
-- in the last 60 s)"). Kinds are keys the caller gives (a peer transition
-- without its changing detail, say), so a cycle of three lines repeated
-- hundreds of times is three kinds, each said a few times a window.
--
-- @module odo.cli.repeats
local Repeats = {}
Repeats.__index = Repeats

--- A limiter writing through `write(line)`, timed by `clock()` (ms);
-- `burst` lines of a kind per window (default 3); `max_kinds` bounds what
-- it remembers (default 4096).
function Repeats.new(write, clock, window_ms, burst, max_kinds)
  return setmetatable({ write = write, clock = clock, window_ms = window_ms or 60000, burst = burst or 3,
    max_kinds = max_kinds or 4096, kinds = {}, n = 0 }, Repeats)
end

--- Writes `line` unless `burst` lines of kind `key` were written within
-- the window (then counts it). Returns whether it wrote.
function Repeats:say(key, line)
  local t = self.clock()
  local k = self.kinds[key]
  if not k then
    if self.n >= self.max_kinds then self.kinds, self.n = {}, 0 end
    self.n = self.n + 1
    k = { at = t, said = 0, held = 0 }
    self.kinds[key] = k
  elseif t - k.at >= self.window_ms then
    if k.held > 0 then
      line = ("%s (and %d more like it in the last %d s)"):format(line, k.held,
        math.floor((t - k.at) / 1000 + 0.5))
    end
    k.at, k.said, k.held = t, 0, 0
  end
  if k.said >= self.burst then
    k.held = k.held + 1
    return false
  end
  k.said = k.said + 1
  self.write(line)
  return true
end

return Repeats
