--- A node's metrics: counters and histograms kept as the node works, and
-- the Prometheus text exposition (format 0.0.4) of them and of the node's
-- state at the moment of a scrape.
--
-- The node makes one when it is opened with `metrics = "HOST:PORT"` (see
-- `odo.node`; `odo.http_metrics` serves it). Counting is plain Lua, on the
-- paths that see the work: appends (this module times the node's `append`
-- and `append_async` calls: it wraps them on that node alone, so a node
-- without metrics pays nothing), received batches (the sync layer's
-- "replicated" and "violation" events), bytes in and out (the transport),
-- peer transitions and discovery candidates (the swarm's "peer" and
-- "candidate" events). The state (streams, revisions, lag, peers) is read
-- at each scrape.
--
-- Per-stream series are written for at most `max_streams` streams (default
-- 1000), the most recently active first; aggregates cover every stream, so
-- a node with 10,000 streams answers with a bounded scrape.
--
-- Not here: events sent to peers. The C sync engine streams batches from
-- the store to every subscriber without a Lua call per batch, so counting
-- them needs a counter in the engine.
--
-- @module odo.metrics
local compat = require "odo.compat"

local has_uv, uv = pcall(require, "luv")

local Metrics = {}
Metrics.__index = Metrics

-- Default histogram buckets, in seconds (appends are a durable write,
-- batches a verified write: from a tenth of a millisecond to seconds).
Metrics.BUCKETS = { 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5 }

-- Peer states, in the order they are written (`odo_peers`).
Metrics.PEER_STATES = { "connecting", "incoming", "active", "lifesupport", "purgatory" }

-- Wall-clock milliseconds (heads carry the source's wall-clock time).
local function wall_ms()
  if has_uv and uv.gettimeofday then
    local s, us = uv.gettimeofday()
    return s * 1000 + us / 1000
  end
  return os.time() * 1000
end

local function histogram(buckets)
  local counts = {}
  for i = 1, #buckets do counts[i] = 0 end
  return { buckets = buckets, counts = counts, sum = 0, count = 0 }
end

local function observe(h, seconds)
  local b = h.buckets
  for i = 1, #b do
    if seconds <= b[i] then h.counts[i] = h.counts[i] + 1 end
  end
  h.sum = h.sum + seconds
  h.count = h.count + 1
end

-- What a transition out of an introduction says of the handshake: a
-- small, fixed set of results (Prometheus labels must stay few).
local REJECTED = { self = true, duplicate = true, full = true, ["shared key"] = true }

local function handshake_result(new, reason)
  if new == "active" then return "success" end
  if REJECTED[reason] then return "rejected" end
  if reason == "timeout" then return "timeout" end
  if reason == "refused" then return "refused" end
  return "failure"
end

--- Metrics of `node`.
-- @tparam table node an `odo.node`
-- @tparam[opt] table opts `max_streams` (per-stream series, default
--   1000), `buckets` (histogram buckets in seconds)
function Metrics.new(node, opts)
  opts = opts or {}
  local max = opts.max_streams or 1000
  assert(compat.is_integer(max) and max >= 0, "metrics max_streams must be an integer >= 0")
  local self = setmetatable({
    node = node,
    max_streams = max,
    counters = {
      appended = 0, received = 0, verify_failures = 0,
    },
    handshakes = { success = 0, failure = 0, rejected = 0, timeout = 0, refused = 0 },
    candidates = { static = 0, history = 0 }, -- source name -> count
    -- streams by recent activity: a list, the latest first
    newest = nil, newer = {}, older = {}, -- first id; id -> the id before / after it
    -- the catalogue as of the last scrape, and the streams changed since
    catalogue = nil, dirty = {},
    head_ts = {},      -- stream id -> {last, ts}: its newest head's event's ts, as of revision last
    append_seconds = histogram(opts.buckets or Metrics.BUCKETS),
    apply_seconds = histogram(opts.buckets or Metrics.BUCKETS),
  }, Metrics)
  self.listeners = {
    replicated = node:on("replicated", function(stream, _, _, count, kind)
      self:_received(stream, count, kind)
    end),
    violation = node:on("violation", function(_, _, code)
      if code == "verification failed" then
        self.counters.verify_failures = self.counters.verify_failures + 1
      end
    end),
    peer = node:on("peer", function(_, old, new, reason)
      -- (an incoming entry "merged" into the entry kept for its address
      -- goes on there: that entry's transition tells the result)
      if (old == "connecting" or old == "incoming") and new ~= "connecting" and new ~= "incoming"
        and reason ~= "merged" then
        local r = handshake_result(new, reason)
        self.handshakes[r] = self.handshakes[r] + 1
      end
    end),
    packed = node:on("packed", function(_, _, count)
      self.counters.packed = (self.counters.packed or 0) + count
    end),
    candidate = node:on("candidate", function(_, _, source)
      source = source or "other"
      self.candidates[source] = (self.candidates[source] or 0) + 1
    end),
  }
  self:_time_appends(node)
  return self
end

-- Times the node's appends: from the call to the events being durable
-- (`append`'s return; `append_async`'s callback, which `append_wait` and
-- the control socket go through too).
function Metrics:_time_appends(node)
  local append, append_async = node.append, node.append_async
  local hrtime = node.adapter.hrtime
  node.append = function(n, stream, events, opts)
    local t0 = hrtime()
    local last, err, name = append(n, stream, events, opts)
    if last then self:appended(events, t0) end
    return last, err, name
  end
  node.append_async = function(n, stream, events, opts, cb)
    if type(cb) ~= "function" then return append_async(n, stream, events, opts, cb) end
    local t0 = hrtime()
    return append_async(n, stream, events, opts, function(last, ...)
      if last then self:appended(events, t0) end
      return cb(last, ...)
    end)
  end
end

--- Stops listening to the node's events, and the responder serving
-- these metrics (`server`, when the node set one).
function Metrics:close()
  for name, fn in pairs(self.listeners) do self.node:off(name, fn) end
  self.listeners = {}
  if self.server then self.server.close() end
  self.server = nil
end

-- ---- counting (called by the node, the sync layer, the swarm) ----------------------

--- `events` (an event or an array) were appended durably; `t0` is the
-- adapter's hrtime() at the call.
function Metrics:appended(events, t0)
  local n = events.type ~= nil and 1 or #events
  self.counters.appended = self.counters.appended + n
  observe(self.append_seconds, (self.node.adapter.hrtime() - t0) / 1e9)
end

function Metrics:_received(stream, count, kind)
  if kind == "events" then self.counters.received = self.counters.received + (count or 0) end
  local sync = self.node.sync
  local t0 = sync and sync.message_at
  if t0 then observe(self.apply_seconds, (self.node.adapter.hrtime() - t0) / 1e9) end
  self:_touch(stream)
end

-- Moves a stream to the front of the activity list.
function Metrics:_touch(id)
  if self.newest == id then return end
  local newer, older = self.newer, self.older
  local before, after = newer[id], older[id]
  if before then older[before] = after end
  if after then newer[after] = before end
  newer[id], older[id] = nil, self.newest
  if self.newest then newer[self.newest] = id end
  self.newest = id
end

--- Streams that changed (appends, replication, snapshots): the node
-- calls this with the store's changes.
function Metrics:touched(ids)
  local dirty = self.dirty
  for i = 1, #ids do
    self:_touch(ids[i])
    dirty[ids[i]] = true
  end
end

-- ---- the scrape ---------------------------------------------------------------------

-- A label value as the text format wants it: \, " and newline escaped.
local function label(v)
  return (tostring(v):gsub('[\\"\n]', { ["\\"] = "\\\\", ['"'] = '\\"', ["\n"] = "\\n" }))
end

-- Numbers as the text format reads them: integers without a dot.
local function num(v)
  if v == nil then return "NaN" end
  if v == true then return "1" elseif v == false then return "0" end
  if compat.is_integer(v) then return ("%d"):format(v) end
  if v ~= v then return "NaN" end
  if v == math.huge then return "+Inf" elseif v == -math.huge then return "-Inf" end
  if v == math.floor(v) and math.abs(v) < 2 ^ 53 then return ("%d"):format(v) end
  local short = ("%.15g"):format(v)
  if tonumber(short) == v then return short end
  return ("%.17g"):format(v)
end
Metrics.format_number = num

local function header(out, name, kind, help)
  out[#out + 1] = "# HELP " .. name .. " " .. help
  out[#out + 1] = "# TYPE " .. name .. " " .. kind
end

local function write_histogram(out, name, help, h)
  header(out, name, "histogram", help)
  for i, b in ipairs(h.buckets) do
    out[#out + 1] = ('%s_bucket{le="%s"} %d'):format(name, num(b), h.counts[i])
  end
  out[#out + 1] = ('%s_bucket{le="+Inf"} %d'):format(name, h.count)
  out[#out + 1] = ("%s_sum %s"):format(name, num(h.sum))
  out[#out + 1] = ("%s_count %d"):format(name, h.count)
end

-- The wall-clock ms of the event at the newest signed head of a stream
-- (the source signs a head right after the appends it covers), cached
-- by revision; nil when the stream has no head yet.
function Metrics:_head_ts(st)
  local store = self.node.store
  local c = self.head_ts[st.id]
  if c and c.last == st.last then return c.ts end
  local head = store:head_last(st.id)
  local ts
  if head and head.rev >= st.first then
    local evs = store:read(st.id, head.rev, head.rev, 1)
    ts = evs and evs[1] and evs[1].ts
  end
  self.head_ts[st.id] = { last = st.last, ts = ts }
  return ts
end

-- The streams that get series of their own: every one when they are
-- few, else the `max_streams` most recently active (streams not changed
-- since the node started come after, in catalogue order).
function Metrics:_chosen(streams, by_id)
  local max = self.max_streams
  if #streams <= max then return streams end
  local out, taken = {}, {}
  local id = self.newest
  while id and #out < max do
    local st = by_id[id]
    if st then
      out[#out + 1] = st
      taken[id] = true
    end
    id = self.older[id]
  end
  for _, st in ipairs(streams) do
    if #out >= max then break end
    if not taken[st.id] then out[#out + 1] = st end
  end
  return out
end

-- Per-stream gauges: name, help, and how to read the value of a stream.
local STREAM_GAUGES = {
  { "odo_stream_last_revision", "Newest revision this node holds of the stream.",
    function(st) return st.last end },
  { "odo_stream_first_revision", "Oldest revision this node holds of the stream (after compaction).",
    function(st) return st.first end },
  { "odo_stream_snapshot_revision", "Revision of the stream's newest snapshot (0: none).",
    function(st) return st.snapshot end },
  { "odo_stream_lag_revisions", "Revisions the best copy a peer advertises is ahead of this node's.",
    function(st) return st.lag end },
  { "odo_stream_caught_up",
    "1 when this node holds everything its upstream has of the stream (its CAUGHT_UP) or is the source.",
    function(st) return st.caught_up end },
  { "odo_stream_source_head_age_seconds",
    "Seconds since the source wrote the newest signed head this node holds (by the source's clock).",
    function(st) return st.head_age end },
}

-- The catalogue (an array in id order, and by id): read whole at the
-- first scrape, then only the streams changed since (reading 10,000
-- entries costs more than the rest of a scrape).
function Metrics:_catalogue()
  local store, cat = self.node.store, self.catalogue
  if not cat then
    cat = { list = store:streams(), by_id = {} }
    for _, st in ipairs(cat.list) do cat.by_id[st.id] = st end
    self.catalogue, self.dirty = cat, {}
    return cat.list, cat.by_id
  end
  local reorder = false
  for id in pairs(self.dirty) do
    local st = store:stream(id)
    if (cat.by_id[id] == nil) ~= (st == nil) then reorder = true end
    cat.by_id[id] = st
  end
  self.dirty = {}
  local list = cat.list
  if reorder then
    list = {}
    for _, st in pairs(cat.by_id) do list[#list + 1] = st end
    table.sort(list, function(a, b) return a.id < b.id end)
  else
    for i, st in ipairs(list) do list[i] = cat.by_id[st.id] end
  end
  cat.list = list
  return list, cat.by_id
end

--- The node's state: streams (with lag, caught-up, upstream) as
-- `node:status()` gives them, without the peers; and the streams by id.
function Metrics:_streams()
  local streams, by_id = self:_catalogue()
  local sync = self.node.sync and self.node.sync:streams_status(streams)
  for _, st in ipairs(streams) do
    local x = sync and sync[st.id]
    st.lag = x and x.lag or 0
    st.caught_up = st.own or (x and x.caught_up) or false
  end
  return streams, by_id
end

--- The Prometheus text of the node, now.
-- @treturn string
function Metrics:text()
  local out = {}
  local streams, by_id = self:_streams()
  local chosen = self:_chosen(streams, by_id)
  local now = wall_ms()
  for _, st in ipairs(chosen) do
    local ts = self:_head_ts(st)
    st.head_age = ts and math.max(0, (now - ts) / 1000) or nil
    st.label = '{stream="' .. label(st.id) .. '"} '
  end
  for _, g in ipairs(STREAM_GAUGES) do
    local name, read = g[1], g[3]
    header(out, name, "gauge", g[2])
    for _, st in ipairs(chosen) do
      local v = read(st)
      if v ~= nil then out[#out + 1] = name .. st.label .. num(v) end
    end
  end
  self:_aggregates(out, streams, #chosen)
  self:_peers(out)
  self:_counters(out)
  write_histogram(out, "odo_append_duration_seconds",
    "Time from an append call to its events being durable.", self.append_seconds)
  write_histogram(out, "odo_batch_apply_seconds",
    "Time from a received batch's arrival to its events being verified and stored.", self.apply_seconds)
  out[#out + 1] = ""
  return table.concat(out, "\n")
end

function Metrics._aggregates(_, out, streams, exported)
  local held, lag, behind, not_caught_up, own = 0, 0, 0, 0, 0
  for _, st in ipairs(streams) do
    held = held + math.max(0, st.last - st.first + 1)
    lag = lag + st.lag
    if st.lag > 0 then behind = behind + 1 end
    if not st.caught_up then not_caught_up = not_caught_up + 1 end
    if st.own then own = own + 1 end
  end
  local function gauge(name, help, v)
    header(out, name, "gauge", help)
    out[#out + 1] = name .. " " .. num(v)
  end
  header(out, "odo_streams", "gauge", "Streams this node holds, by whether it is their source.")
  out[#out + 1] = 'odo_streams{origin="source"} ' .. num(own)
  out[#out + 1] = 'odo_streams{origin="replica"} ' .. num(#streams - own)
  gauge("odo_streams_exported", "Streams with per-stream series in this scrape (the most recently active).",
    exported)
  gauge("odo_streams_events", "Events held over every stream (after compaction).", held)
  gauge("odo_streams_lag_revisions", "Sum of odo_stream_lag_revisions over every stream.", lag)
  gauge("odo_streams_behind", "Streams with a lag above 0.", behind)
  gauge("odo_streams_not_caught_up", "Streams whose odo_stream_caught_up is 0.", not_caught_up)
end

function Metrics:_peers(out)
  local counts = {}
  for _, s in ipairs(Metrics.PEER_STATES) do counts[s] = 0 end
  for _, p in ipairs(self.node:peers()) do
    if counts[p.state] then counts[p.state] = counts[p.state] + 1 end
  end
  header(out, "odo_peers", "gauge", "Peers by state (see odo status --help).")
  for _, s in ipairs(Metrics.PEER_STATES) do
    out[#out + 1] = ('odo_peers{state="%s"} %d'):format(s, counts[s])
  end
end

function Metrics:_counters(out)
  local c = self.counters
  local transport = self.node.swarm and self.node.swarm.transport
  local function counter(name, help, v)
    header(out, name, "counter", help)
    out[#out + 1] = name .. " " .. num(v)
  end
  counter("odo_events_appended_total", "Events appended to this node's own streams.", c.appended)
  counter("odo_events_received_total", "Events received from peers, verified and stored.", c.received)
  local sync = self.node.sync
  counter("odo_events_sent_total", "Events sent to peers in batches (catch-up and live, every peer counted).",
    sync and sync.engine:counters().events_sent or 0)
  counter("odo_bytes_received_total", "Bytes received from peers (TLS records included).",
    transport and transport.bytes_in or 0)
  counter("odo_bytes_sent_total", "Bytes sent to peers (TLS records included).",
    transport and transport.bytes_out or 0)
  counter("odo_verify_failures_total", "Batches refused because they did not verify against the source's head.",
    c.verify_failures)
  counter("odo_events_packed_total", "Events rewritten from single-event records into segments (odo.packer).",
    c.packed or 0)
  header(out, "odo_handshakes_total", "counter", "Introductions with peers that ended, by result.")
  for _, r in ipairs({ "success", "failure", "rejected", "timeout", "refused" }) do
    out[#out + 1] = ('odo_handshakes_total{result="%s"} %d'):format(r, self.handshakes[r])
  end
  header(out, "odo_discovery_candidates_total", "counter", "Peer addresses offered by discovery, by source.")
  local names = {}
  for name in pairs(self.candidates) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do
    out[#out + 1] = ('odo_discovery_candidates_total{source="%s"} %d'):format(label(name), self.candidates[name])
  end
end

return Metrics
