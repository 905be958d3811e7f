--- Packing in the background: rewrites each stream's runs of single-event
-- records (a live source's appends of one event, a replica's live
-- batches) as segments of 1000 events, a slice a loop turn, so serving a
-- catch-up sends stored segments as they are instead of decoding and
-- re-encoding each event (the store's `pack`, docs/STORAGE.md "Segment").
--
-- A stream is looked at once after the node opens (a store written
-- before) and whenever its last revision crosses a multiple of 1000; a
-- range whose signed head was not stored yet when looked at is taken up
-- again on the node's tick when the job got somewhere, else at the next
-- crossing. The streams to pack wait in one queue, worked a slice a
-- loop turn: the policy `pack_slice` (events a loop turn over all
-- streams; 0 turns packing off) paces it. Each slice holds its stream in
-- the busy table it shares with `odo.snapshots`, and a turn that finds
-- the stream busy (a snapshot being built, a purge deleting its old
-- events) leaves it to a later tick, so a pack never runs on a stream
-- while those do. While the commit queue has writes in flight (a
-- catch-up, durable appends) packing waits: its write would queue behind
-- theirs inside LevelDB, the loop waiting for an fsync. Each finished job
-- emits "packed"
-- `(stream, last, count)`: ranges up to `last` are packed, `count`
-- events were rewritten.
-- @module odo.packer
local compat = require "odo.compat"

local Packer = {}
Packer.__index = Packer

local RANGE = 1000 -- the store's range of revisions (ODO_SEG_CUT_EVENTS)
-- A job that packed this many events (a store written before) has
-- LevelDB compact what it rewrote: until a compaction reaches them, the
-- deleted records cost every reader of the span (bench/pack.lua). The
-- few ranges a live stream packs at a time are compacted by LevelDB's
-- own compactions soon enough.
local COMPACT_AFTER = 10000

--- A packer for `node`, sharing `busy` (stream id -> job) with the
-- node's snapshots.
function Packer.new(node, busy)
  return setmetatable({
    node = node,
    store = node.store,
    busy = busy,
    done = {},    -- stream id -> ranges up to here are packed (as the store says)
    crossed = {}, -- stream id -> the multiple of RANGE its last was at when looked at
    pending = {}, -- stream id -> true: to look at again on the next tick
    spans = {},   -- stream id -> { from, to }: packed, to have LevelDB compact
    jobs = {},    -- stream id -> { count, from, upto }: queued or being packed
    queue = {},   -- the stream ids of the jobs, in order: queue[head .. tail]
    head = 1, tail = 0,
    opened = false,
    closed = false,
  }, Packer)
end

local function slice_of(node)
  local n = node.policy.pack_slice
  return type(n) == "number" and n >= 1 and math.floor(n) or 0
end

-- Whether stream `id`, at revision `last`, has a range to look at: one
-- ends at or below its last revision past what is packed, and (unless
-- `again`) its last crossed a multiple of RANGE since it was last looked at.
function Packer:_due(id, last, again)
  local mark = last - last % RANGE
  if mark <= (self.done[id] or 0) then return false end
  return again or mark > (self.crossed[id] or -1)
end

--- Looks at the streams with these ids (after they changed).
function Packer:check(ids)
  if self.closed or slice_of(self.node) == 0 then return end
  local store = self.store
  for _, id in ipairs(ids) do
    -- (no entry table for each of a fleet's changed streams: most are not due)
    local last = store:stream_state(id)
    if last and self:_due(id, last) then self:_start(store:stream(id)) end
  end
end

-- Asks the store to compact one packed span (one at a time: another
-- waits for a later tick).
function Packer:_compact()
  local id, span = next(self.spans)
  if not id then return end
  local started, err = self.store:compact_packed(id, span[1], span[2])
  if started == false then return end
  self.spans[id] = nil
  if not started then self.node:report_error("compacting what was packed of " .. id .. ": " .. tostring(err)) end
end

--- The node's tick: once after opening, every stream; after that, the
-- streams left with a range to pack (its signed head was not stored yet,
-- or the stream was busy) when last looked at.
function Packer:tick()
  if self.closed then return end
  self:_compact()
  if slice_of(self.node) == 0 then return end
  if not self.opened then
    self.opened = true
    for _, st in ipairs(self.store:streams()) do
      if self:_due(st.id, st.last) then self:_start(st) end
    end
    return
  end
  local ids = {}
  for id in pairs(self.pending) do ids[#ids + 1] = id end
  for _, id in ipairs(ids) do
    local st = self.store:stream(id)
    self.pending[id] = nil
    if st and self:_due(id, st.last, true) then self:_start(st) end
  end
end

-- Queues stream st for packing. The queue is worked a slice a loop
-- turn, `pack_slice` events over every stream together (a store of many
-- streams opened does not pack them all in one turn), one stream after
-- the other.
function Packer:_start(st)
  local id = st.id
  self.crossed[id] = st.last - st.last % RANGE
  self.pending[id] = nil
  if self.jobs[id] then return end
  self.jobs[id] = { count = 0, from = (self.done[id] or 0) + 1 }
  self.tail = self.tail + 1
  self.queue[self.tail] = id
  if not self.turning then
    self.turning = true
    self.node.adapter.defer(function() self.node:protect(self._turn, self) end)
  end
end

-- Ends the job of stream id (first in the queue): announces what it
-- packed, has a large pass compacted, and notes whether to look again.
function Packer:_finish(id, err)
  local job = self.jobs[id]
  self.jobs[id] = nil
  self.queue[self.head] = nil -- (taken from the front: no array shifted for each)
  self.head = self.head + 1
  if err and not tostring(err):match("^ECANCELED") then
    self.node:report_error("packing of " .. id .. ": " .. tostring(err))
  end
  if job.count > 0 then self.node:emit("packed", id, job.upto, job.count) end
  if err or self.closed or not self.store:is_open() then return end
  if job.count >= COMPACT_AFTER then
    local span = self.spans[id]
    self.spans[id] = { span and math.min(span[1], job.from) or job.from, job.upto }
    self:_compact()
  end
  -- a job that got somewhere may find more on the next tick (a head
  -- signed since); one that did not waits for the next crossing
  local now = job.upto and job.upto >= job.from and self.store:stream_state(id)
  if now and self:_due(id, now, true) then self.pending[id] = true end
end

-- One slice of the first stream in the queue; true when it is done.
function Packer:_slice(id, slice)
  local job, used = self.jobs[id], 0
  while used < slice do
    local n, more, upto = self.store:pack(id, slice - used)
    if not n then
      self:_finish(id, more)
      return
    end
    job.count, used = job.count + n, used + (n > 0 and n or slice)
    job.upto = upto
    self.done[id] = upto
    if not more then return true end
  end
end

-- A loop turn's work: a slice of the first queued stream, holding it in
-- the busy table it shares with `odo.snapshots` meanwhile. A stream a
-- snapshot build or a purge holds is left to a later tick.
function Packer:_turn()
  self.turning = false
  local id = self.queue[self.head]
  if not id then return end
  local slice = slice_of(self.node)
  if self.closed or not self.store:is_open() or slice == 0 then
    while self.queue[self.head] do self:_finish(self.queue[self.head], "ECANCELED: packing stopped") end
    return
  end
  local cq = self.node.cq
  if cq and cq:pending() > 0 then
    -- the commit queue is writing: a write of the loop's own would queue
    -- behind it inside LevelDB (behind an fsync, in a durable store), the
    -- loop waiting; packing waits instead (the queue stays as it is)
    self.turning = true
    self.wait_timer = self.node.adapter.timer(math.max(10, self.node.policy.commit_poll_ms), function()
      self.wait_timer = nil
      self.node:protect(self._turn, self)
    end)
    return
  end
  if self.busy[id] then
    self.pending[id] = true
    self:_finish(id)
  else
    local job = self.jobs[id]
    self.busy[id] = job
    local ok, finished = compat.xpcall(self._slice, debug.traceback, self, id, slice)
    if self.busy[id] == job then self.busy[id] = nil end
    if self.jobs[id] == job then
      if not ok then self:_finish(id, finished)
      elseif finished then self:_finish(id) end
    end
  end
  if self.queue[self.head] and not self.turning then
    self.turning = true
    self.node.adapter.defer(function() self.node:protect(self._turn, self) end)
  end
end

--- Stops every job (call it before the store closes).
function Packer:close()
  self.closed = true
  if self.wait_timer then self.wait_timer.stop() end
  self.wait_timer = nil
end

return Packer
