--- Catch-up progress in `odo run`: while a stream this node replicates
-- is fetched from its upstream, and the catch-up has run for more than
-- `after_ms` (default 2000), a terminal shows one line per such stream
-- (revisions done/total, rate, time left), redrawn in place at most four
-- times a second; nothing is drawn when stderr is not a terminal. The
-- line goes when the stream is caught up with the swarm (its upstream's
-- CAUGHT_UP at or past what it advertised when the catch-up began). One
-- log line then says so either way (events, time, rate): `odo.catchup`'s,
-- where that module is part of the build; else this module writes it.
-- ODO_PROGRESS_AFTER_MS in the environment sets `after_ms` (0: from the
-- first moment).
--
-- @module odo.cli.progress
local Log = require "odo.cli.log"

-- whether odo.catchup logs the end of each catch-up (see above)
local catchup_logs = pcall(require, "odo.catchup")

local P = {}
P.__index = P

local function fmt_time(s)
  local floor = math.floor
  if s >= 3600 then return ("%dh%02dm"):format(floor(s / 3600), floor(s % 3600 / 60)) end
  if s >= 60 then return ("%dm%02ds"):format(floor(s / 60), floor(s % 60)) end
  return ("%ds"):format(math.floor(s + 0.5))
end

local function label(id)
  local src, rest = id:match("^([^/]+)(.*)$")
  return src:sub(1, 16) .. rest
end

-- What the upstream advertised of a stream (its catalogue's last).
local function advertised(node, stream, peer_id)
  local rec = node.sync and peer_id and node.sync.peers[peer_id]
  local e = rec and rec.catalogue[stream]
  return e and e.last
end

--- Follows `node`'s catch-ups. opts: `tty` (draw progress lines;
-- default: whether stderr is a terminal), `out` (default io.stderr),
-- `after_ms`, `log` (`function(message, fields)`, default `Log.write`).
function P.attach(node, opts)
  opts = opts or {}
  local tty = opts.tty
  if tty == nil then
    local ok, uv = pcall(require, "luv")
    tty = ok and uv.guess_handle(2) == "tty"
  end
  local self = setmetatable({
    node = node,
    tty = tty,
    out = opts.out or io.stderr,
    after_ms = opts.after_ms or tonumber(os.getenv("ODO_PROGRESS_AFTER_MS")) or 2000,
    log = opts.log or Log.write,
    active = {},  -- stream -> {start_rev, done, total, t0, peer, events}
    drawn = 0,    -- lines drawn below the cursor's line
    last_draw = 0,
  }, P)
  node:on("upstream", function(stream, new) self:_begin(stream, new) end)
  node:on("replicated", function(stream, last, peer_id, count, kind)
    self:_advance(stream, last, peer_id, kind == "events" and count or 0)
  end)
  node:on("caught_up", function(stream, rev, peer_id) self:_caught_up(stream, rev, peer_id) end)
  if tty then
    Log.around = function(when)
      if when == "before" then self:_clear() else self:_draw(true) end
    end
    self.ticker = node.adapter.every(250, function() node:protect(self._draw, self) end)
    node:on("close", function() self:close() end)
  end
  return self
end

function P:_begin(stream, peer_id)
  if not peer_id then
    self.active[stream] = nil
    return
  end
  local st = self.node.store:stream(stream)
  local ours = st and st.last or 0
  self.active[stream] = { start_rev = ours, done = ours, total = advertised(self.node, stream, peer_id) or ours,
    t0 = self.node.adapter.now(), peer = peer_id, events = 0 }
end

function P:_advance(stream, last, peer_id, events)
  local a = self.active[stream]
  if not a or a.peer ~= peer_id or a.finished then return end
  a.events = a.events + (events or 0)
  a.done = math.max(a.done, last)
  local total = advertised(self.node, stream, peer_id)
  if total and total > a.total then a.total = total end
end

--- The line of a stream's catch-up now.
function P:line(stream, a)
  local secs = math.max(0.001, (self.node.adapter.now() - a.t0) / 1000)
  local rate = a.events / secs
  local left = a.total - a.done
  local eta = rate > 0 and fmt_time(left / rate) or "?"
  local pct = a.total > a.start_rev and 100 * (a.done - a.start_rev) / (a.total - a.start_rev) or 100
  return ("catching up %s: %d/%d revisions (%.0f%%), %.0f events/s, %s left"):format(label(stream), a.done,
    a.total, pct, rate, eta)
end

function P:_caught_up(stream, rev, peer_id)
  local a = self.active[stream]
  if not a or a.peer ~= peer_id or a.finished or rev < a.total then return end
  a.finished = true
  self.active[stream] = nil
  if a.events == 0 or catchup_logs then return end
  local ms = self.node.adapter.now() - a.t0
  local took = ms >= 1000 and ("%.1f s"):format(ms / 1000) or ("%d ms"):format(math.floor(ms + 0.5))
  self.log(("stream %s caught up with the swarm at revision %d: %d events in %s (%d events/s) from %s"):format(
    stream, rev, a.events, took, math.floor(a.events / (math.max(ms, 1) / 1000) + 0.5), peer_id:sub(1, 16)),
    { event = "caught_up", stream = stream })
end

-- Erases the progress lines (the cursor goes back where they began).
function P:_clear()
  if self.drawn == 0 then return end
  self.out:write("\r\27[2K", ("\27[1A\27[2K"):rep(self.drawn - 1))
  self.drawn = 0
end

-- Draws the progress lines of catch-ups older than after_ms.
function P:_draw(force)
  local now = self.node.adapter.now()
  if not force and now - self.last_draw < 240 then return end
  self.last_draw = now
  local lines = {}
  local ids = {}
  for id, a in pairs(self.active) do
    if now - a.t0 >= self.after_ms and a.done < a.total then ids[#ids + 1] = id end
  end
  table.sort(ids)
  for _, id in ipairs(ids) do lines[#lines + 1] = self:line(id, self.active[id]) end
  self:_clear()
  if #lines == 0 then return end
  self.out:write(table.concat(lines, "\n"))
  self.out:flush()
  self.drawn = #lines
end

function P:close()
  if self.ticker then self.ticker.stop() end
  self.ticker = nil
  if self.tty then
    self:_clear()
    Log.around = nil
  end
end

return P
