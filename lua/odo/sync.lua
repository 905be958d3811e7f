--- Sync policy: which streams to replicate, from which upstream, and when
-- the C engine (`odo.core` sync) catalogues, signs and pumps.
--
-- Node events it emits: "catalogue" (peer_id, entries, full), "subscribed"
-- (peer_id, stream, from: a peer asked us), "replicated" (stream, last,
-- peer_id, count, "events" or "snapshot"), "caught_up" (stream, rev,
-- peer_id), "upstream" (stream, new, old), "violation" (peer_id, stream,
-- code, reason).
--
-- Seed rules: peers exchange catalogues when they meet (1) and push
-- updates, coalesced, when a stream appears or advances; a node asks its
-- chosen upstream for each stream it replicates from its last known
-- revision (2, 4); the upstream streams a snapshot when needed, then
-- every event, then live (3, 5); a lost peer drops its subscriptions and
-- the policy picks another upstream (6). Every batch is verified against
-- the source's signed head before it is stored.
--
-- Received batches are pipelined: the engine checks each on the loop and
-- hands it to the store's commit queue, whose worker thread computes its
-- chain hashes and writes it; "replicated" (and a "caught_up" that came
-- after the batch) follow once it is written (`on_written`). While more
-- than policy.sync_write_backlog bytes are on their way, the node stops
-- reading from the peers that sent them (with an adapter whose sockets
-- cannot stop reading, the loop waits for the worker instead).
--
-- @module odo.sync
local core = require "odo.core"
local policy_mod = require "odo.policy_set"
local policy_defaults = require "odo.policy"

local Sync = {}
Sync.__index = Sync

local NO_PATH = 255 -- a catalogue entry's hops when the sender has no path to the source


--- The sync layer of `node` (which has a swarm and a TLS context).
function Sync.new(node, tls)
  local policy = node.policy
  local self = setmetatable({
    node = node,
    store = node.store,
    adapter = node.adapter,
    policy = policy,
    engine = core.sync(node.store.core, tls, {
      verify = policy.verify_signatures,
      replica_sync = policy.replica_sync,
      bulk_batch = policy.sync_bulk_batch_bytes,
      bulk_queue = policy.sync_bulk_queue_bytes,
    }),
    peers = {},     -- by peer id: {peer, session, catalogue = {id = entry}, refused = {id = true}}
    upstream = {},  -- stream id -> peer id
    caught_up = {}, -- stream id -> revision the upstream said we caught up at
    changed = {},   -- stream ids to push in the next catalogue update
    advanced = {},  -- stream ids that advanced since the last catalogue refresh
    snap_told = {}, -- stream id -> the source snapshot revision we last pushed
    snap_asked = {}, -- stream id -> source snapshot revision asked for
    held_peers = {}, -- peer id -> rec: not read from while batches wait for the disk
    violators = {}, -- peer id -> true: its session ended for a violation (its later ones are not news)
    -- catalogue entries sent, by cause: "full" (a new peer's catalogue),
    -- "new", "follows", "lost", "longer", "shorter", "snapshot" (route
    -- pushes: routing_matters), "advance" (refreshes)
    sent = {},
    feasible = {}, -- stream id -> feasible distance (_feasibility)
    holds = {},    -- stream id -> timer: held down, with no feasible path
    closed = false,
  }, Sync)
  -- our own key, so `odo verify` can check our streams with no node running
  node.store:key_put(node.id, tls:public_key())
  -- the worker that writes received batches (without it, handle writes them)
  node:commit_queue()
  -- events appended while the node was stopped get their heads now, and
  -- snapshots stored with no engine their signatures (from now on the
  -- store signs each source snapshot as it stores it)
  self:_schedule_sign()
  for _, st in ipairs(self.store:streams()) do
    if st.own and st.snapshot > 0 then
      local ok, err = self.engine:sign_snapshot(st.id)
      if ok == nil then node:report_error("signing the snapshot of " .. st.id .. ": " .. tostring(err)) end
    end
  end
  return self
end

-- ---- work on later loop turns --------------------------------------------------

function Sync:_flush_all()
  for _, rec in pairs(self.peers) do
    local conn = rec.peer.conn
    if conn then conn:flush() end
  end
end

function Sync:_schedule_pump()
  if self.pump_scheduled or self.closed then return end
  self.pump_scheduled = true
  self.adapter.defer(function()
    self.node:protect(function()
      self.pump_scheduled = false
      if self.closed then return end
      -- own appends waiting for their heads: signed first, so their live
      -- batches go out before this slice of bulk, not a slice later
      if self.sign_scheduled then self:_sign() end
      -- while bulk waits (policy.sync_bulk_bytes_per_s), live traffic only
      self:_pump(self.policy.sync_pump_us, self.bulk_timer ~= nil)
    end)
  end)
end

-- Sends what is owed: first to subscriptions owing at most a batch (live
-- traffic), then bulk catch-ups for at most max_us (none with
-- tails_only); the rest on the next loop turn, or, under
-- policy.sync_bulk_bytes_per_s, once the bytes this turn sent are paid
-- for at that rate (live traffic only meanwhile).
function Sync:_pump(max_us, tails_only)
  local tr = self.node.swarm and self.node.swarm.transport
  local before = tr and tr.bytes_out
  local more, notes = self.engine:pump(self.policy.sync_pump_budget, max_us, tails_only)
  for _, n in ipairs(notes) do
    self.node:report_error(("serving %s: %s"):format(n.stream, n.reason))
  end
  self:_flush_all()
  if self.bulk_timer then return end -- a paced bulk resumes on its timer
  local rate = self.policy.sync_bulk_bytes_per_s
  local ms = (not tails_only and rate and before) and (tr.bytes_out - before) * 1000 / rate or 0
  if ms >= 1 then
    -- whether bulk stopped at its time or at the session's watermark (a
    -- drain would wake it at once), it waits
    self.bulk_timer = self.adapter.timer(ms, function()
      self.node:protect(function()
        self.bulk_timer = nil
        if not self.closed then self:_schedule_pump() end
      end)
    end)
  elseif more then
    self:_schedule_pump()
  end
end

-- Signs heads for new own events once per loop turn, whatever the number
-- of appends in it (slow keys then sign fewer, bigger heads).
function Sync:_schedule_sign()
  if self.sign_scheduled or self.closed then return end
  self.sign_scheduled = true
  self.adapter.defer(function()
    self.node:protect(function()
      if self.sign_scheduled then self:_sign() end -- (unless a pump did it first)
    end)
  end)
end

-- Signs what is due now (see _schedule_sign).
function Sync:_sign()
  self.sign_scheduled = false
  if self.closed or not self.store:is_open() then return end
  local n, more = self.engine:sign_heads(self.policy.sign_budget)
  if n == nil then return self.node:report_error("signing heads: " .. tostring(more)) end
  -- new heads make live batches due: out at once, before any bulk (heads
  -- handed to a busy commit queue: once it wrote them, on_written)
  if n > 0 then
    if select(2, self.engine:backlog()) > 0 then self.node:await_commits() end
    self:_pump(1, true) -- live batches only: bulk goes on in its own turn
  end
  if more then self:_schedule_sign() end
end

-- The code of what a peer was told of a stream: our hops, plus 256 when
-- the peer is our upstream for it (bit 1 of the entry), plus 512 times
-- the last revision told (exact up to 2^44 revisions on Lua 5.1 too).
local function told_code(hops, yours, last)
  return hops + (yours and 256 or 0) + 512 * last
end

-- Whether telling peer `rec` our entry of a stream now matters for its
-- routing (docs/PROTOCOL.md "CATALOGUE"): a stream it was never told of
-- when it has no better path, or we follow it; afterwards a change of
-- bit 1, a longer distance (loops count up and end), a shorter one when
-- it follows us or would switch to us, a new source snapshot.
-- Returns why (the cause `Sync.sent` counts it under), or nil.
local function routing_matters(rec, id, hops, yours, snap_changed)
  local told, e = rec.told[id], rec.catalogue[id]
  local better = not e or e.follows_you or e.hops > hops + 1
  if told == nil then return (yours or better) and "new" or nil end
  told = told % 512
  if (told >= 256) ~= yours then return "follows" end
  if hops > told % 256 then return hops == NO_PATH and "lost" or "longer" end
  if snap_changed then return "snapshot" end
  return hops < told % 256 and better and "shorter" or nil
end

-- Sends each peer the entries of the streams `ids` that
-- `pick(rec, h, yours)` picks (h = {id, hops, last, snap}: our distance,
-- last revision, and whether the source snapshot changed since the last
-- route push), noting what each peer was told.
function Sync:_push_entries(ids, route, pick)
  local hops, held, sent, store = self:_hops(ids), {}, self.sent, self.store
  for _, id in ipairs(ids) do
    local last, snapshot, own = store:stream_state(id)
    if last then
      local h = { id = id, hops = own and 0 or hops[id] or NO_PATH, last = last }
      if route then
        h.snap = snapshot ~= (self.snap_told[id] or 0)
        self.snap_told[id] = snapshot
      end
      held[#held + 1] = h
    end
  end
  for pid, rec in pairs(self.peers) do
    local list, yours = {}, {}
    for _, h in ipairs(held) do
      local y = self.upstream[h.id] == pid
      local why = pick(rec, h, y)
      if why then
        sent[why] = (sent[why] or 0) + 1
        list[#list + 1] = h.id
        yours[h.id] = y or nil
        rec.told[h.id] = told_code(h.hops, y, h.last)
      end
    end
    if #list > 0 then self.engine:catalogue(rec.session, list, hops, yours) end
  end
  self:_flush_all()
end

-- Takes the stream ids of the set self[field] (id = true), emptying it.
local function take(self, field)
  local ids = {}
  for id in pairs(self[field]) do ids[#ids + 1] = id end
  self[field] = {}
  return ids
end

-- Arms timer `field` (at most one) to take, after `ms`, the stream ids
-- gathered in the set self[set] and push their entries to the peers
-- `pick` chooses (route: whether these are route changes; _push_entries).
local function push_later(self, field, ms, set, route, pick)
  if self[field] or self.closed then return end
  self[field] = self.adapter.timer(ms, function()
    self.node:protect(function()
      self[field] = nil
      if self.closed then return end
      local ids = take(self, set)
      if #ids > 0 then self:_push_entries(ids, route, pick) end
    end)
  end)
end

-- Pushes, coalesced over `catalogue_push_ms`, the entries of the streams
-- that changed to each peer they matter to for routing (routing_matters);
-- changes that only advance a stream wait for the refresh.
function Sync:_schedule_catalogue()
  push_later(self, "catalogue_timer", self.policy.catalogue_push_ms, "changed", true, function(rec, h, yours)
    return routing_matters(rec, h.id, h.hops, yours, h.snap)
  end)
end

-- Pushes, at most once per `catalogue_refresh_ms`, the entries of the
-- streams that advanced (appends, received batches) to the peers that
-- were told of them: their view of how far we are stays within that
-- interval, which is all the upstream choice and status need of it.
function Sync:_schedule_refresh()
  push_later(self, "refresh_timer", self.policy.catalogue_refresh_ms, "advanced", false, function(rec, h)
    local told = rec.told[h.id]
    return told ~= nil and math.floor(told / 512) < h.last and "advance" or nil
  end)
end

-- Our distance to the source of each replica we follow, in hops (as a
-- distance-vector protocol counts): one more than our upstream's; none
-- (no path) when it has none or it reaches `max_hops`. `ids` (optional):
-- only those streams.
function Sync:_hops(ids)
  local h = {}
  local function add(id, up)
    local rec = self.peers[up]
    local e = rec and rec.catalogue[id]
    if e and e.hops + 1 < self.policy.max_hops then h[id] = e.hops + 1 end
  end
  if ids then
    for _, id in ipairs(ids) do
      if self.upstream[id] then add(id, self.upstream[id]) end
    end
  else
    for id, up in pairs(self.upstream) do add(id, up) end
  end
  return h
end

-- The streams peer `pid` is our upstream for (told to it, so it never
-- follows us back: poisoned reverse).
function Sync:_yours(pid)
  local y = {}
  for id, up in pairs(self.upstream) do
    if up == pid then y[id] = true end
  end
  return y
end

--- Whether a stream our peers hold, not ours, has had no path to its
-- source through any of them (none nearer than `max_hops`) for less than
-- `pex_fresh_ms`: the swarm then dials past its target (the mesh may be
-- split). A source that stopped looks the same from here, hence the
-- bound in time.
function Sync:cut_off()
  local reach, held, t = {}, {}, self.adapter.now()
  for _, rec in pairs(self.peers) do
    for id, e in pairs(rec.catalogue) do
      held[id] = true
      if e.hops < self.policy.max_hops and not e.follows_you then reach[id] = true end
    end
  end
  local since, cut = self.cut_since or {}, false
  self.cut_since = {}
  for id in pairs(held) do
    if not reach[id] and id:match("^[^/]+") ~= self.node.id then
      self.cut_since[id] = since[id] or t
      if t - self.cut_since[id] < self.policy.pex_fresh_ms then cut = true end
    end
  end
  return cut
end

--- Streams changed in the store (appends, replication, snapshots).
function Sync:on_changed(ids)
  if self.closed then return end
  local own, store = false, self.store
  for _, id in ipairs(ids) do
    self.changed[id] = true
    self.advanced[id] = true
    if not own and select(3, store:stream_state(id)) then own = true end
  end
  if own then self:_schedule_sign() end
  self.engine:wake(ids) -- the pump looks at their subscriptions again
  self:_schedule_catalogue()
  self:_schedule_refresh()
  self:_schedule_pump()
end

-- ---- peers ---------------------------------------------------------------------

function Sync:on_active(p)
  local hello = p.conn.hello
  if not hello or (hello.features or 0) % 2 == 0 then return end -- no sync on that side (feature bit 0)
  local session = p.conn.session
  self.violators[p.id] = nil
  self.engine:attach(session, p.id)
  local rec = { peer = p, session = session, catalogue = {}, refused = {},
    told = {} } -- told: stream id -> told_code of what this peer was told
  self.peers[p.id] = rec
  local hops, yours = self:_hops(), self:_yours(p.id)
  self.engine:catalogue(session, nil, hops, yours)
  local streams = self.store:streams()
  self.sent.full = (self.sent.full or 0) + #streams
  for _, st in ipairs(streams) do
    rec.told[st.id] = told_code(st.own and 0 or hops[st.id] or NO_PATH, yours[st.id], st.last)
  end
  p.conn:flush()
end

function Sync:on_inactive(p)
  local rec = self.peers[p.id]
  if not rec then return end
  self.engine:detach(rec.session)
  self.peers[p.id] = nil
  self.held_peers[p.id] = nil
  local lost = {}
  for id, up in pairs(self.upstream) do
    if up == p.id then
      self.upstream[id] = nil
      lost[#lost + 1] = id
      self.changed[id] = true -- our path broke: our distance changes
    end
  end
  if #lost > 0 then self:_schedule_catalogue() end
  self:_choose(lost)
end

function Sync:on_drain()
  self:_schedule_pump()
end

function Sync:on_message(p, t, payload)
  local rec = self.peers[p.id]
  if not rec then return end
  self.message_at = self.adapter.hrtime() -- a batch's arrival, for odo.metrics
  self:_notes(p, rec, self.engine:handle(rec.session, t, payload))
  local bytes, writes = self.engine:backlog()
  if writes > 0 then
    self.node:await_commits()
    if bytes >= self.policy.sync_write_backlog then
      self.held_peers[p.id] = rec
      if not p.conn:hold_reading(true) then
        -- sockets that cannot stop reading: the loop waits for the worker
        self.held_peers[p.id] = nil
        self.node:await_commits(true)
      end
    end
  end
end

--- The commit queue wrote received batches: their notes, in order, and
-- the peers held back read again once the backlog is down to half.
function Sync:on_written()
  if self.closed then return end
  local notes, bytes = self.engine:written()
  local by_peer, order, heads = {}, {}, false
  for _, n in ipairs(notes) do
    if n.event == "heads" then
      -- own heads the commit queue wrote (signed in _schedule_sign)
      if n.reason then
        self.node:report_error(("signing heads of %s: %s"):format(n.stream, n.reason))
      else
        heads = true
      end
    else
      local list = by_peer[n.peer]
      if not list then
        list = {}
        by_peer[n.peer] = list
        order[#order + 1] = n.peer
      end
      list[#list + 1] = n
    end
  end
  for _, pid in ipairs(order) do
    local rec = self.peers[pid]
    if rec then
      self:_notes(rec.peer, rec, by_peer[pid])
    else
      for _, n in ipairs(by_peer[pid]) do -- the peer has gone meanwhile
        if n.event == "events" then self.node:emit("replicated", n.stream, n.last, pid, n.count, "events") end
        if n.event == "violation" and not self.violators[pid] then
          self.node:report_error(("peer %s: %s (%s)"):format(pid:sub(1, 16), n.reason, n.code))
        end
      end
    end
  end
  if bytes * 2 < self.policy.sync_write_backlog then
    for pid, rec in pairs(self.held_peers) do
      self.held_peers[pid] = nil
      if self.peers[pid] == rec then rec.peer.conn:hold_reading(false) end
    end
  end
  -- their live batches are due: out at once, before any bulk
  if heads then self:_pump(1, true) end
end

-- Acts on the engine's notes about peer p.
function Sync:_notes(p, rec, notes)
  local changed, choose = false, {}
  for _, n in ipairs(notes) do
    local kind = n.event
    if kind == "catalogue" then
      if n.full then rec.catalogue = {} end
      for _, e in ipairs(n.entries) do
        local old = rec.catalogue[e.id]
        rec.catalogue[e.id] = e
        choose[#choose + 1] = e.id
        if not old or old.hops ~= e.hops or old.follows_you ~= e.follows_you then
          -- our own distance follows our upstream's, and what matters to
          -- this peer follows its distance: look again at what to tell
          self.changed[e.id] = true
          self:_schedule_catalogue()
        end
      end
      self.node:emit("catalogue", p.id, n.entries, n.full)
    elseif kind == "events" or kind == "snapshot" then
      changed = true
      self.node:emit("replicated", n.stream, n.last or n.rev, p.id, n.count, kind)
    elseif kind == "subscribed" then
      self.node:emit("subscribed", p.id, n.stream, n.from)
      self:_schedule_pump()
    elseif kind == "caught_up" then
      self.caught_up[n.stream] = n.rev
      self.node:emit("caught_up", n.stream, n.rev, p.id)
    elseif kind == "refused" then
      rec.refused[n.stream] = n.reason
      if self.upstream[n.stream] == p.id then
        self.upstream[n.stream] = nil
        self.changed[n.stream] = true
        self:_schedule_catalogue()
        choose[#choose + 1] = n.stream
      end
    elseif kind == "violation" then
      self.node:report_error(("peer %s: %s (%s)"):format(p.id:sub(1, 16), n.reason, n.code))
      if n.code == "local" then
        -- our own store failed: not the peer's fault; start over later
        p.conn:bye("normal", "this node could not store what it received: " .. n.reason)
      else
        self.violators[p.id] = true
        self.node:emit("violation", p.id, n.stream, n.code, n.reason)
        p.conn:bye(n.code, n.reason)
      end
      return
    end
  end
  if changed then self.node:notify_changes() end
  if #choose > 0 then
    self:_fetch_snapshots(p.id, choose, self:_choose(choose))
  end
  p.conn:flush()
end

-- Rule 8 on replicas: when our upstream has a newer source snapshot of a
-- stream we hold, ask for it (once per revision), so we can compact
-- against it like the source does. `held`: what _choose read of each.
function Sync:_fetch_snapshots(pid, ids, held)
  local rec = self.peers[pid]
  for _, id in ipairs(ids) do
    local e = rec.catalogue[id]
    local st = held[id]
    if e and st and not st.own and self.upstream[id] == pid and e.snapshot > st.snapshot
      and e.snapshot <= st.last and (self.snap_asked[id] or 0) < e.snapshot then
      self.snap_asked[id] = e.snapshot
      self.engine:subscribe(rec.session, { { id = id, from = st.last + 1 } }, true, true)
    end
  end
end

-- ---- upstream choice ---------------------------------------------------------------

-- Re-evaluates the upstream of the given streams (rule 6 and the upstream
-- policy): subscribes to a better one, unsubscribing from the old. The
-- policies run protected: one that fails is reported and the default
-- decides. Returns what the store holds of each: {id = stream or false}.
function Sync:_choose(ids)
  local seen, subs = {}, {} -- subs: the new subscriptions, by peer id, sent together
  for _, id in ipairs(ids) do
    if seen[id] == nil then
      local st = self.store:stream(id)
      seen[id] = st or false
      -- a stream whose source is this node is never followed, even before
      -- its first write is stored (a fresh store, a write still queued)
      local own = (st and st.own) or id:match("^[^/]+") == self.node.id
      if not own and (self.policy.replicate == policy_defaults.replicate -- the default: every stream
          or policy_mod.call(self.node, "replicate", id, self.node)) then
        local candidates, fd, infeasible = {}, self.feasible[id], false
        for pid, rec in pairs(self.peers) do
          local e = rec.catalogue[id]
          if e and not rec.refused[id] then
            local hops = e.hops
            if fd and hops < self.policy.max_hops and hops > fd then hops, infeasible = NO_PATH, true end
            candidates[#candidates + 1] = { id = pid, last = e.last, first = e.first,
              source = e.source, direct = e.direct, snapshot = e.snapshot, hops = hops,
              fresh = e.fresh, follows_you = e.follows_you }
          end
        end
        local ours = st and st.last or 0
        local current = self.upstream[id]
        local ok, best
        if self.policy.upstream == policy_defaults.upstream then -- the default: no need of protection
          ok, best = true, policy_defaults.upstream(id, candidates, ours, current, self.node)
        else
          ok, best = policy_mod.try(self.node, "upstream", function(b) return b == nil or self.peers[b] end,
            id, candidates, ours, current, self.node)
        end
        if not ok then best = policy_defaults.upstream(id, candidates, ours, current, self.node) end
        if best ~= current then self:_switch(id, current, best, ours, subs) end
        self:_feasibility(id, best, infeasible)
      end
    end
  end
  for pid, list in pairs(subs) do
    local rec = self.peers[pid]
    if rec then -- (a handler of "upstream" may have closed it)
      self.engine:subscribe(rec.session, list, true)
      rec.peer.conn:flush()
    end
  end
  return seen
end

-- The feasibility condition of a distance-vector protocol (Babel's, in
-- hops), which keeps a lost path from turning into a loop that counts up
-- to `max_hops` (each step a catalogue update to every peer): a node's
-- feasible distance for a stream is the least distance it had since it
-- last held down, and a peer that says more hops than it is not followed
-- (it may be behind us: everyone behind us is at least one more); with
-- only such peers left, the node says it has no path and holds down for
-- `route_hold_ms`, long enough for that to reach whoever was behind it,
-- then forgets its feasible distance and chooses again.
function Sync:_feasibility(id, best, infeasible)
  local e = best and self.peers[best] and self.peers[best].catalogue[id]
  if e and e.hops < self.policy.max_hops then
    local d = e.hops + 1
    if not self.feasible[id] or d < self.feasible[id] then self.feasible[id] = d end
  elseif infeasible and not self.holds[id] then
    self.holds[id] = self.adapter.timer(self.policy.route_hold_ms, function()
      self.node:protect(function()
        self.holds[id], self.feasible[id] = nil, nil
        if not self.closed then self:_choose({ id }) end
      end)
    end)
  end
end

-- `subs`: where new subscriptions wait, by peer id, to go out in one message
function Sync:_switch(id, old, new, ours, subs)
  if old and self.peers[old] then
    self.engine:unsubscribe(self.peers[old].session, { id })
    self.peers[old].peer.conn:flush()
  end
  self.upstream[id] = new
  self.caught_up[id] = nil
  if new and self.peers[new] then
    subs[new] = subs[new] or {}
    table.insert(subs[new], { id = id, from = ours + 1 })
  end
  self.changed[id] = true -- our hops, and whom we follow, changed
  self:_schedule_catalogue()
  self.node:emit("upstream", id, new, old)
end

-- ---- status ------------------------------------------------------------------------

--- For each stream: its upstream (peer id), and lag (revisions the best
-- known copy is ahead of ours). `streams` (optional): the catalogue, when
-- the caller has just read it.
function Sync:streams_status(streams)
  local out = {}
  for _, st in ipairs(streams or self.store:streams()) do
    local best = st.last
    for _, rec in pairs(self.peers) do
      local e = rec.catalogue[st.id]
      if e and e.last > best then best = e.last end
    end
    out[st.id] = {
      upstream = st.own and "self" or self.upstream[st.id],
      lag = best - st.last,
      caught_up = self.caught_up[st.id] ~= nil and self.caught_up[st.id] >= st.last,
    }
  end
  return out
end

function Sync:close()
  self.closed = true
  if self.catalogue_timer then self.catalogue_timer.stop() end
  if self.refresh_timer then self.refresh_timer.stop() end
  if self.bulk_timer then self.bulk_timer.stop() end
  for _, t in pairs(self.holds) do t.stop() end
  self.engine:close()
end

return Sync
