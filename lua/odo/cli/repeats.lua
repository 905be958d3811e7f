--- A log that says a repeated line once with a count: the first line of a
-- kind is written, the same kind again within `window_ms` only counted,
-- and the next one after the window carries the count of those held back
-- ("(and 586 more like it in the last 60 s)"). Kinds are keys the caller
-- gives (a peer transition without its changing detail, say), so a cycle
-- of three lines repeated is three kinds, each said once a window.
--
-- @module odo.cli.repeats
local Repeats = {}
Repeats.__index = Repeats

--- A limiter writing through `write(line)`, timed by `clock()` (ms);
-- `max_kinds` bounds what it remembers (default 4096).
function Repeats.new(write, clock, window_ms, max_kinds)
  return setmetatable({ write = write, clock = clock, window_ms = window_ms or 60000,
    max_kinds = max_kinds or 4096, kinds = {}, n = 0 }, Repeats)
end

--- Writes `line` unless a line of kind `key` was written within the window
-- (then counts it). Returns whether it wrote.
function Repeats:say(key, line)
  local t = self.clock()
  local k = self.kinds[key]
  if k and t - k.at < self.window_ms then
    k.held = k.held + 1
    return false
  end
  if k and k.held > 0 then
    line = ("%s (and %d more like it in the last %d s)"):format(line, k.held,
      math.floor((t - k.at) / 1000 + 0.5))
  end
  if not k then
    if self.n >= self.max_kinds then self.kinds, self.n = {}, 0 end
    self.n = self.n + 1
    k = {}
    self.kinds[key] = k
  end
  k.at, k.held = t, 0
  self.write(line)
  return true
end

return Repeats
