--- Every policy of a node, with its default, in one place: this table
-- holds the defaults and nothing else (`require("odo.policy").tick_ms`).
--
-- Pass replacements in `odo.node{ policy = { ... } }`: each entry is a
-- plain value or a function, and a user's entry replaces the default
-- whole. `odo.node` checks every entry's type before it opens anything (a
-- wrong one raises; the rules are in `odo.policy_set`). What each function
-- receives is written above it:
--
--     reducer(stream_id, node)                       (when a function)
--     backoff(failures, peer)                        (when a function; peer as node:peers() shows it)
--     accept_address(host, port, node)
--     replicate(stream_id, node)
--     upstream(stream_id, candidates, our_last, current, node)
--     snapshot_due(st, state, now, policy)
--     compact_upto(st, state, now, policy)
--
-- A policy function runs in a protected call: when it raises, the error
-- goes to the node's error handler and the default decides that once.
--
-- @module odo.policy
local P = {}

--- How often the node re-evaluates time-based policies (ms).
P.tick_ms = 1000

--- Events handed to a subscriber's handler per call (at most).
P.slice = 1000

--- Longest a delivery turn may run before yielding to the loop (ms).
P.turn_budget_ms = 5

--- With an adapter that has no `watch` (nginx's, the in-memory one), how
-- often the node polls the commit queue for finished durable writes while
-- one is in flight (ms): the most a durable append's callback waits after
-- its fsync. With `watch` the queue's descriptor wakes the loop instead.
P.commit_poll_ms = 1

--- The nice value (0..19; higher: less CPU when the machine is busy) of
-- the threads the core runs beside the host's loop thread: the commit
-- queue's worker and its verifiers, the snapshot workers, and LevelDB's background thread
-- (compactions; one per process, shared by every store in it). Linux
-- only (each thread's own priority); elsewhere nothing changes. A
-- thread already nicer keeps its value (lowering it needs CAP_SYS_NICE,
-- so nothing lowers it, not even closing the node); LevelDB's thread
-- keeps the highest any node of the process asked for. The host's own
-- thread is never touched. 10 by default, for embedded nodes (a game's
-- frame or an nginx worker's request first); `odo run`, whose process is
-- the node's own, makes it 0 (no change). Read when the node opens.
P.worker_nice = 10

--- Verifier threads of the commit queue (`verify_threads`, default nil):
-- they check received batches' chain hashes and head signatures ahead of
-- the thread that writes them, each its own batch, so a catch-up (above
-- all a fleet's many signatures) spreads over the machine's cores. nil:
-- one per online core beside the loop's, at least 1 and at most 16; 0:
-- the writer checks every batch itself (and the loop shares the
-- signatures when it falls behind). An integer from 0 to 16; read when
-- the commit queue starts (at the node's open or first durable write).
P.verify_threads = nil

--- Received batches on their way to the disk (the commit queue's worker
-- chains and writes them), in bytes: past this the node stops reading
-- from the peers sending them until the worker caught up to half of it.
-- Bounds a catch-up's memory.
P.sync_write_backlog = 8 * 1024 * 1024

--- The kernel's send and receive buffers of each peer socket, in bytes
-- (SO_SNDBUF and SO_RCVBUF, where the adapter can set them); nil: the
-- kernel's own sizing. Live events that share a connection with a
-- catch-up wait behind what these buffers hold: bounding them (128-256
-- KiB) cuts that wait from hundreds of ms to tens on a loaded machine
-- (bench/README.md, "live on a shared connection"), but caps one
-- connection's throughput near buffer / round-trip time, too low for a
-- link of tens of ms (256 KiB over 50 ms: about 10 MB/s).
P.peer_socket_buffer = nil

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
--- Events packed per loop turn: runs of single-event records (a live
-- source's appends of one event, a replica's live batches) are
-- rewritten in the background as one segment per 1000 revisions, once a
-- signed head is stored at the range's end (`odo.packer`,
-- docs/STORAGE.md "Segment"); serving a catch-up then sends stored
-- segments as they are. Packing costs about 1 µs an event, once: the
-- default holds a loop turn about 1 ms (as `sync_pump_us`), so a host's
-- frame hardly notices a store written before being packed. 0 turns
-- packing off.
P.pack_slice = 1000

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

--- An incoming connection that sends no byte within this long (ms) is
-- closed: a connection that never speaks costs a descriptor and a slot,
-- so it gets less time than a slow handshake.
P.first_byte_timeout_ms = 3000
--- Most incoming connections that have not finished TLS at once; the next
-- one evicts the least recently active of them (see docs/RELIABILITY.md).
P.max_handshakes = 64
--- Most of those from one IP address at once (the same eviction applies).
P.max_handshakes_per_host = 16
--- Most sockets the transport holds open at once, incoming and outgoing
-- (0: nine tenths of the process's descriptor limit, less 32). Incoming
-- connections over it are closed at once, with a log line.
P.max_descriptors = 0

--- An active peer that sent nothing for this long (ms) gets a heartbeat...
P.heartbeat_interval_ms = 5000
--- ...and one that does not answer it within this long (ms) is dropped.
P.heartbeat_timeout_ms = 10000

--- How long (ms) a peer stays in purgatory ("self", "duplicate") before it
-- is deleted and may be discovered again.
P.purgatory_ms = 5 * 60 * 1000

-- Reconnection delays (ms) for a peer in lifesupport, by consecutive
-- failure: a table, or `function(failures, peer) return ms or nil end`
-- (`failures` counts from 1; `peer` is the entry as `node:peers()` shows it).
-- When it runs out (nil), the peer is deleted, unless it is pinned (a
-- configured seed), which keeps retrying at the last delay. (A plain
-- comment: LDoc cannot show an array; the default is the line below.)
P.backoff = { 500, 1000, 2000, 4000, 8000, 16000, 30000, 60000, 60000, 60000 }
--- Each delay is spread by up to this fraction either way, so peers that
-- failed together do not all retry together.
P.backoff_jitter = 0.2
--- No delay is longer than this (ms).
P.backoff_cap_ms = 60000
--- A peer that stayed active this long (ms) has its failures forgotten;
-- one that refuses us ("full", "duplicate") right after introductions
-- keeps backing off, up to the ceiling.
P.peer_stable_ms = 10000
--- How long (ms) a refusal is remembered after the peer's entry is gone:
-- a refusing address offered again meanwhile waits out its backoff.
P.refusal_memory_ms = 10 * 60 * 1000

-- ---- the mesh (peer exchange and the target degree; docs/ARCHITECTURE.md) ---------

--- Active peers a node aims for, incoming and outgoing together (never
-- more than `max_peers`): at or above it, new incoming peers are refused
-- as "full" with addresses to try, and extra peers are shed politely.
P.target_peers = 8
--- A node dials candidates while it has fewer live peers than this (at
-- most `target_peers`), so nodes keep room for newcomers to join them.
-- Every dial that stays is a link with two ends: a swarm grown by
-- newcomers dialling has a mean degree of twice this, so it stays below
-- half the target (3 of 8: mean 6, a quarter of the slots free; at 4
-- every node ended full, and a newcomer's dials were refused more often
-- the larger the swarm).
P.dial_peers = 3
--- Of the peers kept above those that serve followed streams, this many
-- are random ones (long-range links that keep the mesh's diameter small).
P.long_range_peers = 2
--- Addresses sent in one PEX frame, and accepted from one, at most.
P.pex_per_message = 8
--- Addresses accepted from one peer per minute, at most.
P.pex_per_minute = 32
--- Each active peer is sent a fresh sample of addresses this often (ms).
P.pex_interval_ms = 60000
--- An address is good to share when its peer was active within this (ms).
P.pex_fresh_ms = 10 * 60 * 1000
--- Candidate addresses waiting to be dialled, at most (the oldest go).
P.max_candidates = 256

--- Which discovered addresses to try: `function(host, port, node)`
-- returns true to dial it.
function P.accept_address(host, port)
  return type(host) == "string" and host ~= "" and port > 0 and port < 65536
end

-- ---- DHT discovery (odo.discovery.dht) ---------------------------------------------

--- How long a DHT value of ours lives (ms): OpenDHT's value-type expiry on
-- nodes of ours, and the validity a value carries for everyone else.
P.dht_value_expiry_ms = 10 * 60 * 1000
--- Re-announce this often (ms); less than `dht_value_expiry_ms`.
P.dht_announce_every_ms = 4 * 60 * 1000
--- Look the topic up this often (ms), besides listening to it.
P.dht_lookup_every_ms = 60 * 1000
-- Delays (ms) between attempts to reach a DHT bootstrap node that does not
-- answer, by consecutive failure; the last one repeats.
P.dht_bootstrap_backoff = { 1000, 2000, 4000, 8000, 16000, 30000, 60000 }
--- New candidates taken from one lookup (or one listen batch), at most...
P.dht_max_candidates_per_lookup = 16
--- ...and in any minute, at most: anyone on the network id can write to a
-- topic, so a flood costs no more than this.
P.dht_max_candidates_per_minute = 60
--- How long (ms) a stop waits for OpenDHT's shutdown before joining it.
P.dht_shutdown_timeout_ms = 3000

-- ---- sync ---------------------------------------------------------------------------

--- Which streams to replicate: `function(stream_id, node)`; all of them by
-- default.
function P.replicate()
  return true
end

--- The upstream to follow for a stream, among `candidates` (active peers
-- that have it: `{id, last, first, snapshot, source, direct, hops, fresh,
-- follows_you}`; `hops` is the peer's distance to the source, 255 for no
-- path, or when following it could make a loop (more hops than this
-- node's feasible distance: `route_hold_ms`); `fresh` the newest signed head it holds; `follows_you` whether
-- it follows this node for the stream):
-- `function(stream_id, candidates, our_last, current, node)` returns a
-- peer id or nil. By default, loop-free as a distance-vector protocol:
-- never a peer that follows us; the one nearest the source (the source
-- itself at 0 hops), then the freshest, then the highest revision. The
-- current upstream is kept while none is nearer and none is
-- `upstream_switch_lag` revisions ahead of it. When no peer has a path
-- (the source left), one strictly ahead of us, the furthest ahead:
-- revisions only grow along such a chain, so it cannot loop either.
function P.upstream(_, candidates, our_last, current, node)
  local max = node.policy.max_hops
  local function better(a, b)
    if a.hops ~= b.hops then return a.hops < b.hops end
    if a.fresh ~= b.fresh then return a.fresh > b.fresh end
    if a.last ~= b.last then return a.last > b.last end
    return a.id < b.id
  end
  local best, cur
  for _, c in ipairs(candidates) do
    if not c.follows_you and c.hops < max then
      if c.id == current then cur = c end
      if not best or better(c, best) then best = c end
    end
  end
  if best then
    if cur and cur.hops <= best.hops and best.last <= cur.last + node.policy.upstream_switch_lag then
      return cur.id
    end
    return best.id
  end
  for _, c in ipairs(candidates) do
    if not c.follows_you and c.last > our_last then
      if c.id == current then return c.id end
      if not best or c.last > best.last or (c.last == best.last and c.id < best.id) then best = c end
    end
  end
  return best and best.id
end
P.upstream_switch_lag = 1000
--- Distances to a source (hops) from this many on count as no path: a
-- loop left by a broken link counts up to it and ends.
P.max_hops = 32
--- A node whose path to a stream's source broke, with only peers left
-- that say more hops than its feasible distance (they may be behind it),
-- says it has no path and waits this long (ms) before it follows one of
-- them: time for that to reach whoever was behind it, so no loop forms.
P.route_hold_ms = 1000

--- Check the source's signature on every batch and snapshot received
-- (chain hashes are checked always). Turn off only to measure its cost.
P.verify_signatures = true
--- Sync replicated events to disk before acknowledging them (they can be
-- fetched again after a crash, so not by default).
P.replica_sync = false
--- Catalogue updates are coalesced over this many ms.
P.catalogue_push_ms = 25
--- Catalogue updates that only advance a stream (appends, received
-- batches: no change of route) go out at most once per this many ms.
P.catalogue_refresh_ms = 1000
--- Frames the sync engine sends per loop turn, at most.
P.sync_pump_budget = 256
--- Events walked per loop turn when signing heads.
P.sign_budget = 100000
--- Microseconds of bulk catch-up the sync engine serves per loop turn, at
-- most (subscriptions owing at most one batch, live traffic, go first and
-- are not counted); 0: no limit.
P.sync_pump_us = 1000
--- Bytes a second of bulk catch-up this node sends, at most (all its
-- peers together; live batches and control frames are not held back);
-- nil: no limit. After a loop turn's slice of bulk (`sync_pump_us`) the
-- next waits until the bytes sent are paid for at this rate. A catch-up
-- otherwise takes every CPU it can on both ends, and on a machine with
-- no core to spare a live event then waits for one in every process it
-- passes through (bench/README.md, "A rate for bulk catch-ups").
P.sync_bulk_bytes_per_s = nil
--- Bytes of a catch-up's batch: a batch far from a stream's end goes on
-- past its first signed head to the last one within this many bytes
-- (fewer frames, one signature check per batch); 0: every batch ends at
-- its first head, as live batches do.
P.sync_bulk_batch_bytes = 512 * 1024
--- Bytes queued on a peer's session past which bulk catch-ups wait (live
-- batches and control frames do not): a live batch queues behind no more
-- than this of bulk in the sender; 0: the session's low watermark (1 MiB).
-- (A smaller bound helps only with small socket buffers too,
-- `peer_socket_buffer`: bench/README.md, "The serving pump".)
P.sync_bulk_queue_bytes = 0

--- Whether stream `st` (a catalogue entry) is due for a snapshot:
-- `function(st, state, now, policy)` (`policy`: the node's merged policy
-- table). `state` holds `last_snapshot_ms` and `snapshot_rev` (of the
-- snapshot this node builds: source snapshots on own streams, local ones
-- on replicas); `now` is the adapter's clock (ms).
function P.snapshot_due(st, state, now, policy)
  local since = st.last - state.snapshot_rev
  if since <= 0 then return false end
  return since >= policy.snapshot_every_events
    or now - state.last_snapshot_ms >= policy.snapshot_every_ms
end

--- Up to which revision stream `st` should be compacted now, or nil:
-- `function(st, state, now, policy)`, as `snapshot_due` (`state` also
-- holds `snapshot_seen_ms`). Compacts only against the source's snapshot
-- (`st.snapshot`).
function P.compact_upto(st, state, now, policy)
  local upto = st.snapshot - policy.compact_keep
  if st.snapshot == 0 or upto < st.first then return nil end
  if st.last - st.snapshot >= policy.compact_after_events
    or now - state.snapshot_seen_ms >= policy.compact_after_ms then
    return upto
  end
  return nil
end

-- ---- DNS discovery (odo.discovery.dns) ---------------------------------------------

--- The shortest wait (ms) before a name is looked up again, whatever the
-- records' TTL says (a TTL of 0 would otherwise ask without pause)...
P.dns_ttl_floor_ms = 2000
--- ...and the longest (records with a TTL of a day are still re-read).
P.dns_ttl_ceiling_ms = 10 * 60 * 1000

-- Delays (ms) before looking a name up again after a lookup failed (no
-- answer, REFUSED, no records), by consecutive failure; the last one
-- repeats. A table, or `function(failures) return ms end`. (A plain
-- comment: LDoc cannot show an array; the default is the line below.)
P.dns_backoff = { 1000, 2000, 4000, 8000, 15000, 30000, 60000 }

--- How long (ms) c-ares waits for a server's first answer to a query (it
-- doubles the wait on each later round)...
P.dns_timeout_ms = 1500
--- ...and how many times it asks each server before giving up.
P.dns_tries = 2

return P
