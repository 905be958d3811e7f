--- Snapshot and compaction policy: when to build a snapshot (seed sync
-- rule 7), when to compact behind it (rule 8), and the sliced work of
-- building and purging, so the loop keeps turning.
--
-- Own streams get source snapshots; on a replicated stream a node builds
-- local snapshots for its own use and compacts only behind the source's
-- snapshot (`st.snapshot`), which the store enforces.
--
-- @module odo.snapshots
local core = require "odo.core"
local policy_mod = require "odo.policy_set"
local policy_defaults = require "odo.policy"
local compat = require "odo.compat"

local Snapshots = {}
Snapshots.__index = Snapshots

local function json_codec()
  local cjson = require "cjson"
  return { encode = cjson.encode, decode = cjson.decode }
end

function Snapshots.new(node)
  return setmetatable({
    node = node,
    store = node.store,
    state = {},   -- per stream: timings and the revision of our snapshot
    busy = {},    -- per stream: the job (build or purge) in progress
    watches = {}, -- job -> the adapter watch of its worker's descriptor
    closed = false,
  }, Snapshots)
end

local valid_reducer = policy_mod.valid_reducer

local REDUCER_SHAPE = "a reducer (nil, \"kv\", \"last\" or { name = string, reduce = function(state, events),"
  .. " init = function, codec = {...} })"

local function a_reducer(r) return valid_reducer(r), REDUCER_SHAPE end

-- The reducer configured for a stream (nil: none). A policy function that
-- fails or answers nonsense is reported, and the stream gets no snapshot.
function Snapshots:reducer(id)
  local r = self.node.policy.reducer
  if type(r) == "function" then
    local ok, v = policy_mod.try(self.node, "reducer", a_reducer, id, self.node)
    return ok and v or nil
  end
  if valid_reducer(r) then return r end
  self.node:report_error(("policy reducer for %s: %s, not %s"):format(id, tostring(r), REDUCER_SHAPE))
  return nil
end

local function origin_of(st)
  return st.own and "source" or "local"
end

function Snapshots:_state(st)
  local s = self.state[st.id]
  if not s then
    local now = self.node.adapter.now()
    local mine = self.store:snapshot_get(st.id, origin_of(st))
    s = {
      last_snapshot_ms = now,
      snapshot_rev = mine and mine.rev or 0,
      seen_snapshot = st.snapshot,
      snapshot_seen_ms = now,
    }
    self.state[st.id] = s
  end
  if s.seen_snapshot ~= st.snapshot then
    s.seen_snapshot = st.snapshot
    s.snapshot_seen_ms = self.node.adapter.now()
  end
  return s
end

--- Evaluates the policies for the given stream ids (after a change, or on
-- the node's tick for all streams).
function Snapshots:check(ids)
  if self.closed then return end
  local policy, now, store = self.node.policy, self.node.adapter.now(), self.store
  -- no reducer and the default compaction: only a stream with a source
  -- snapshot has anything to decide (_check_stream), and most of a
  -- fleet's have none: their entries are not even read
  local quiet = policy.reducer == nil and policy.compact_upto == policy_defaults.compact_upto
  for _, id in ipairs(ids) do
    if not quiet or (select(2, store:stream_state(id)) or 0) ~= 0 then
      local st = store:stream(id)
      if st then self:_check_stream(st, policy, now) end
    end
  end
end

-- Streams checked per loop turn on a tick: thousands of streams (a
-- fleet) never hold the loop for long.
local TICK_SLICE = 500

--- Checks every stream (the node's tick), TICK_SLICE a loop turn.
function Snapshots:tick()
  if self.closed or self.ticking then return end
  local policy, now = self.node.policy, self.node.adapter.now()
  local streams, i = self.store:streams(), 0
  local function step()
    self.ticking = nil
    if self.closed then return end
    for _ = 1, TICK_SLICE do
      i = i + 1
      if not streams[i] then return end
      self:_check_stream(streams[i], policy, now)
    end
    self.ticking = true
    self.node.adapter.defer(function() self.node:protect(step) end)
  end
  step()
end

function Snapshots:_check_stream(st, policy, now)
  if self.busy[st.id] then return end
  local default_compact = policy.compact_upto == policy_defaults.compact_upto
  -- with no reducer the default compacts only behind a source snapshot:
  -- a stream without one (most of a fleet) has nothing to decide
  if policy.reducer == nil and default_compact and st.snapshot == 0 then return end
  local state = self:_state(st)
  local reducer = self:reducer(st.id)
  if reducer and policy_mod.call(self.node, "snapshot_due", st, state, now, policy) then
    self:_start(st, nil, reducer)
  else
    local upto -- the default cannot fail: called as it is, unprotected
    if default_compact then upto = policy_defaults.compact_upto(st, state, now, policy)
    else upto = policy_mod.call(self.node, "compact_upto", st, state, now, policy) end
    if upto then self:compact(st.id, upto) end
  end
end

-- A job: one build or purge of stream `id`, holding `busy[id]` until it
-- settles. `job.done(rev)` or `job.done(nil, err)` settles it once: frees
-- the stream, reports a failure (but a cancellation) to the node's error
-- handler, and calls `cb` protected.
function Snapshots:_job(id, kind, cb)
  local job = { kind = kind, waiters = {} }
  self.busy[id] = job
  function job.done(rev, err)
    if job.settled then return end
    job.settled = true
    if self.busy[id] == job then self.busy[id] = nil end
    local w = self.watches[job]
    if w then
      self.watches[job] = nil
      w.stop()
    end
    if not rev and err and not tostring(err):match("^ECANCELED") then
      self.node:report_error(kind .. " of " .. id .. ": " .. tostring(err))
    end
    if cb then self.node:protect(cb, rev, err) end
    for _, waiter in ipairs(job.waiters) do self.node:protect(waiter, rev, err) end
  end
  -- fn(...) in a protected call; an error settles the job with it
  function job.guard(fn)
    return function(...)
      local ok, err = compat.xpcall(fn, debug.traceback, ...)
      if not ok then job.done(nil, err) end
    end
  end
  return job
end

-- Runs step() on deferred turns until it returns true (done) or nil, err;
-- then finish(job), which settles the job. Every turn is protected.
function Snapshots:_slices(job, step, finish)
  local defer = self.node.adapter.defer
  local turn
  turn = job.guard(function()
    if job.settled then return end
    if self.closed or not self.store:is_open() then
      return job.done(nil, "ECANCELED: the node closed")
    end
    local finished, err = step()
    if finished == nil then return job.done(nil, err) end
    if not finished then return defer(turn) end
    finish(job)
  end)
  defer(turn)
end

-- Stores what a C builder folded: on a worker thread when the adapter can
-- watch a descriptor (so a large snapshot never stalls the loop), else
-- right here. Calls collected(rev) or collected(nil, err), protected.
function Snapshots:_finish_builder(job, b, collected)
  local watch = self.node.adapter.watch
  if not watch then return collected(b:finish()) end
  local fd, err = b:finish_async()
  if not fd then return collected(nil, err) end
  local w = watch(fd, job.guard(function()
    local mine = self.watches[job]
    self.watches[job] = nil
    if mine then mine.stop() end
    if job.settled then return end
    if self.closed or not self.store:is_open() then
      return job.done(nil, "ECANCELED: the node closed")
    end
    collected(b:collect())
  end))
  -- the watch must stop before the store closes (closing it closes the
  -- descriptor under the watch): close() stops every one it finds here
  if self.closed or job.settled then
    w.stop()
    return job.done(nil, "ECANCELED: the node closed")
  end
  self.watches[job] = w
end

--- Builds a snapshot of stream `id` at its last revision now, in slices.
-- `cb(rev)` or `cb(nil, err)` when done, always once. Returns false when
-- no build starts: one is already running (cb then gets that one's
-- result), the stream is being purged ("EBUSY"), no reducer is set
-- ("EINVAL") or there is no such stream ("ENOENT"); cb hears why on a
-- later turn. The reducer and its codec run in protected calls: a failure
-- is reported and frees the stream.
function Snapshots:build(id, cb, reducer)
  reducer = reducer or self:reducer(id)
  local st = self.store:stream(id)
  local running = self.busy[id]
  local why = running and running.kind ~= "snapshot" and "EBUSY: stream " .. id .. " is being purged"
    or not running and (not st and "ENOENT: no stream " .. id
      or not reducer and "EINVAL: no reducer is set for stream " .. id)
  if running and not why then
    if cb then running.waiters[#running.waiters + 1] = cb end
    return false
  end
  if why then
    if cb then
      self.node.adapter.defer(function() self.node:protect(cb, nil, why) end)
    end
    return false
  end
  return self:_start(st, cb, reducer)
end

-- Starts a build of stream st with reducer (the stream is not busy).
function Snapshots:_start(st, cb, reducer)
  local id = st.id
  local job = self:_job(id, "snapshot", cb)
  local function finished(rev)
    local s = self:_state(self.store:stream(id))
    s.snapshot_rev = rev
    s.last_snapshot_ms = self.node.adapter.now()
    self.node:emit("snapshot", id, rev)
    return rev
  end
  local start = type(reducer) == "string" and self._build_c or self._build_lua
  job.guard(start)(self, job, st, reducer, finished)
  return true
end

-- A built-in reducer ("kv", "last"), folded in C.
function Snapshots:_build_c(job, st, reducer, finished)
  local b, err = core.snapshot_builder(self.store.core, st.id, reducer, { upto = st.last })
  if not b then return job.done(nil, err) end
  local slice = self.node.policy.snapshot_slice
  self:_slices(job, function() return b:step(slice) end, function()
    self:_finish_builder(job, b, function(rev, ferr)
      if rev then finished(rev) end
      job.done(rev, ferr)
    end)
  end)
end

-- A Lua reducer: fold batches of events in Lua, store the state encoded
-- by its codec (JSON by default).
function Snapshots:_build_lua(job, st, reducer, finished)
  local id, upto, slice = st.id, st.last, self.node.policy.snapshot_slice
  local codec = reducer.codec or json_codec()
  local format = "lua:" .. reducer.name
  local origin = origin_of(st)
  local prev = self.store:snapshot_get(id, origin)
  local state, from
  if prev and prev.format == format and prev.rev + 1 >= st.first and prev.rev <= upto then
    state, from = codec.decode(prev.data), prev.rev + 1
  elseif st.first > 1 then
    return job.done(nil, "ESTALE: events of " .. id .. " before " .. st.first
      .. " are compacted and no " .. format .. " snapshot covers them")
  else
    state, from = reducer.init and reducer.init() or {}, 1
  end
  local it, ierr
  if from <= upto then
    it, ierr = self.store.core:iter(id, from, upto)
    if not it then return job.done(nil, ierr) end
  end
  self:_slices(job, function()
    local n = 0
    while it and n < slice do
      local batch, err = it:next(1000)
      if batch == nil then
        if err then return nil, err end
        it = nil
        break
      end
      state = reducer.reduce(state, batch)
      n = n + #batch
    end
    return it == nil
  end, function()
    if not (prev and prev.rev == upto) then
      local ok, err = self.store:snapshot_put(id, upto, codec.encode(state),
        { format = format, origin = origin })
      if not ok then return job.done(nil, err) end
    end
    job.done(finished(upto))
  end)
end

--- Compacts stream `id` up to `upto` (one write), then purges the old
-- events in slices. `cb(first)` or `cb(nil, err)` when the purge is done.
function Snapshots:compact(id, upto, cb)
  if self.busy[id] then return false end
  local first, err = self.store:compact(id, upto)
  if not first then
    self.node:report_error("compaction of " .. id .. ": " .. err)
    if cb then self.node:protect(cb, nil, err) end
    return true
  end
  local job = self:_job(id, "purge", cb)
  self.node:emit("compact", id, first)
  local slice = self.node.policy.purge_slice
  self:_slices(job, function()
    local left, perr = self.store:purge(id, slice)
    if not left then return nil, perr end
    return left == 0
  end, function() job.done(first) end)
  return true
end

--- Stops every build and purge (their callbacks get ECANCELED) and every
-- watch of a worker's descriptor: call it before the store closes.
function Snapshots:close()
  if self.closed then return end
  self.closed = true
  local jobs = {}
  for _, job in pairs(self.busy) do jobs[#jobs + 1] = job end
  for _, job in ipairs(jobs) do job.done(nil, "ECANCELED: the node closed") end
  for job, w in pairs(self.watches) do
    self.watches[job] = nil
    w.stop()
  end
end

return Snapshots
