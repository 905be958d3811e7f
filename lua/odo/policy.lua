--- Every policy of a node, with its default, in one place.
--
-- Pass replacements in `odo.node{ policy = { ... } }`: each entry is a
-- plain value or a function, and a user's entry replaces the default
-- whole. Functions receive the node as their last argument.
--
-- @module odo.policy
local P = {}

--- How often the node re-evaluates time-based policies (ms).
P.tick_ms = 1000

--- Events handed to a subscriber's handler per call (at most).
P.slice = 1000

--- Longest a delivery turn may run before yielding to the loop (ms).
P.turn_budget_ms = 5

--- Which reducer snapshots a stream: nil (no snapshots: the default, as
-- compaction then never discards history), "kv", "last", or a Lua reducer
-- `{ name = "...", reduce = function(state, events) return state end,
--    init = function() return {} end, codec = { encode =, decode = } }`
-- (codec default: JSON through lua-cjson). May be a function
-- `function(stream_id, node) return reducer end`.
P.reducer = nil

--- Seed sync rule 7: snapshot a stream after this many events since its
-- previous snapshot...
P.snapshot_every_events = 10000
--- ...or after this long (ms) when it has new events.
P.snapshot_every_ms = 10 * 60 * 1000

--- Events folded per loop turn while building a snapshot.
P.snapshot_slice = 10000

--- Seed sync rule 8: delete the events before the latest snapshot once
-- this many events were appended after it...
P.compact_after_events = 1000
--- ...or this long (ms) after it was made.
P.compact_after_ms = 60 * 1000
--- Events to keep behind the snapshot when compacting (history).
P.compact_keep = 0
--- Old events deleted per loop turn after a compaction.
P.purge_slice = 5000

-- ---- peers (the swarm) ------------------------------------------------------------

--- Most peers connecting, introducing or active at once; more discovered
-- addresses wait, more incoming connections are refused (BYE "full").
P.max_peers = 64

--- The largest frame (bytes) a peer may send; a bigger one ends its
-- session. Batches and snapshot chunks stay far below the default.
P.max_frame_bytes = 16 * 1024 * 1024

--- Introductions (TCP, TLS and HELLO) must finish within this (ms), or the
-- attempt fails with "timeout".
P.handshake_timeout_ms = 10000

--- An active peer that sent nothing for this long (ms) gets a heartbeat...
P.heartbeat_interval_ms = 5000
--- ...and one that does not answer it within this long (ms) is dropped.
P.heartbeat_timeout_ms = 10000

--- How long (ms) a peer stays in purgatory ("self", "duplicate") before it
-- is deleted and may be discovered again.
P.purgatory_ms = 5 * 60 * 1000

-- Reconnection delays (ms) for a peer in lifesupport, by consecutive
-- failure: a table, or `function(attempt, peer) return ms or nil end`.
-- When it runs out (nil), the peer is deleted, unless it is pinned (a
-- configured seed), which keeps retrying at the last delay. (A plain
-- comment: LDoc cannot show an array; the default is the line below.)
P.backoff = { 500, 1000, 2000, 4000, 8000, 16000, 30000, 60000, 60000, 60000 }
--- Each delay is spread by up to this fraction either way, so peers that
-- failed together do not all retry together.
P.backoff_jitter = 0.2
--- No delay is longer than this (ms).
P.backoff_cap_ms = 60000

--- Which discovered addresses to try: `function(host, port, node)`.
function P.accept_address(host, port)
  return type(host) == "string" and host ~= "" and port > 0 and port < 65536
end

-- ---- sync ---------------------------------------------------------------------------

--- Which streams to replicate: `function(stream_id, node)`; all of them by
-- default.
function P.replicate()
  return true
end

--- The upstream to follow for a stream, among `candidates` (active peers
-- that have it: `{id, last, first, snapshot, source, direct}`):
-- `function(stream_id, candidates, our_last, current, node)` returns a
-- peer id or nil. By default: the source itself when connected; else a
-- peer subscribed directly to the source, with the highest revision; else
-- the highest revision. The current upstream is kept unless a better kind
-- appears or one is `upstream_switch_lag` revisions ahead of it.
function P.upstream(stream, candidates, _, current, node)
  local source = stream:match("^([^/]+)")
  local function rank(c)
    if c.id == source then return 3 end
    return c.direct and 2 or 1
  end
  local best, cur
  for _, c in ipairs(candidates) do
    if c.id == current then cur = c end
    if not best or rank(c) > rank(best)
      or (rank(c) == rank(best) and (c.last > best.last or (c.last == best.last and c.id < best.id))) then
      best = c
    end
  end
  if not best then return nil end
  if cur and rank(best) <= rank(cur) and best.last <= cur.last + node.policy.upstream_switch_lag then
    return cur.id
  end
  return best.id
end
P.upstream_switch_lag = 1000

--- Check the source's signature on every batch and snapshot received
-- (chain hashes are checked always). Turn off only to measure its cost.
P.verify_signatures = true
--- Sync replicated events to disk before acknowledging them (they can be
-- fetched again after a crash, so not by default).
P.replica_sync = false
--- Catalogue updates are coalesced over this many ms.
P.catalogue_push_ms = 25
--- Frames the sync engine sends per loop turn, at most.
P.sync_pump_budget = 256
--- Events walked per loop turn when signing heads.
P.sign_budget = 100000

--- Whether stream `st` (a catalogue entry) is due for a snapshot. `state`
-- holds `last_snapshot_ms` and `snapshot_rev` (of the snapshot this node
-- builds: source snapshots on own streams, local ones on replicas).
function P.snapshot_due(st, state, now, policy)
  local since = st.last - state.snapshot_rev
  if since <= 0 then return false end
  return since >= policy.snapshot_every_events
    or now - state.last_snapshot_ms >= policy.snapshot_every_ms
end

--- Up to which revision stream `st` should be compacted now, or nil.
-- Compacts only against the source's snapshot (`st.snapshot`).
function P.compact_upto(st, state, now, policy)
  local upto = st.snapshot - policy.compact_keep
  if st.snapshot == 0 or upto < st.first then return nil end
  if st.last - st.snapshot >= policy.compact_after_events
    or now - state.snapshot_seen_ms >= policy.compact_after_ms then
    return upto
  end
  return nil
end

--- Returns a policy table: the defaults, with the user's entries on top.
function P.merge(user)
  local p = {}
  for k, v in pairs(P) do
    if k ~= "merge" then p[k] = v end
  end
  for k, v in pairs(user or {}) do
    if P[k] == nil and k ~= "reducer" then
      error("unknown policy '" .. tostring(k) .. "'", 3)
    end
    p[k] = v
  end
  return p
end

return P
