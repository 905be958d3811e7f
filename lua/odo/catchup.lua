--- Catch-up with the swarm, per stream: from the moment a node subscribes
-- to a stream's upstream to the upstream's first CAUGHT_UP after it (the
-- node then holds everything that upstream had). The engine's CAUGHT_UP
-- also follows every live batch; only the first one after a subscription
-- ends a catch-up.
--
-- `odo run` logs one line per stream with it (`Catchup.describe`);
-- anything else may watch the same reports.
--
-- @module odo.catchup
local Catchup = {}

--- Calls `fn(report)` each time a stream of `node` has caught up with
-- its upstream: the first time in this process for each stream, and
-- afterwards (a new upstream) when the catch-up brought anything.
-- `report` is `{stream, rev, events, snapshot, ms, peer}`: the revision
-- reached, the events received during the catch-up, whether a snapshot
-- came first, the milliseconds it took, the upstream's node id.
-- @param node an `odo.node` with a network
-- @tparam function fn
-- @treturn function stops watching
function Catchup.watch(node, fn)
  assert(type(fn) == "function", "Catchup.watch needs a function")
  local now = node.adapter.now
  local pending, reported = {}, {}
  local function on_upstream(stream, new)
    pending[stream] = new and { peer = new, start = now(), events = 0, snapshot = false } or nil
  end
  local function on_replicated(stream, _, peer, count, kind)
    local c = pending[stream]
    if not c or c.peer ~= peer then return end
    if kind == "snapshot" then c.snapshot = true else c.events = c.events + (count or 0) end
  end
  local function on_caught_up(stream, rev, peer)
    local c = pending[stream]
    if not c or c.peer ~= peer then return end
    pending[stream] = nil
    if reported[stream] and c.events == 0 and not c.snapshot then return end
    reported[stream] = true
    fn({ stream = stream, rev = rev, events = c.events, snapshot = c.snapshot,
      ms = now() - c.start, peer = peer })
  end
  node:on("upstream", on_upstream)
  node:on("replicated", on_replicated)
  node:on("caught_up", on_caught_up)
  return function()
    node:off("upstream", on_upstream)
    node:off("replicated", on_replicated)
    node:off("caught_up", on_caught_up)
  end
end

--- A report as one line for a person: "stream ID caught up with the
-- swarm at revision N: E events in T (R events/s) from PEER".
-- @tparam table r a report of `watch`
-- @treturn string
function Catchup.describe(r)
  local took = r.ms >= 1000 and ("%.1f s"):format(r.ms / 1000) or ("%d ms"):format(math.floor(r.ms + 0.5))
  return ("stream %s caught up with the swarm at revision %d: %s%d events in %s (%d events/s) from %s"):format(
    r.stream, r.rev, r.snapshot and "a snapshot and " or "", r.events, took,
    math.floor(r.events / (math.max(r.ms, 1) / 1000) + 0.5), r.peer:sub(1, 16))
end

return Catchup
