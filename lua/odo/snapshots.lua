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
    state = {},  -- per stream: timings and the revision of our snapshot
    busy = {},   -- per stream: a build or a purge in progress
    closed = false,
  }, Snapshots)
end

-- The reducer configured for a stream (nil: none).
function Snapshots:reducer(id)
  local r = self.node.policy.reducer
  if type(r) == "function" then r = r(id, self.node) end
  if r == nil or r == "kv" or r == "last" then return r end
  assert(type(r) == "table" and type(r.reduce) == "function" and type(r.name) == "string",
    "a Lua reducer is { name = string, reduce = function(state, events), init = function, codec = {...} }")
  return r
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
  local policy, now = self.node.policy, self.node.adapter.now()
  for _, id in ipairs(ids) do
    local st = self.store:stream(id)
    if st and not self.busy[id] then
      local state = self:_state(st)
      if self:reducer(id) and policy.snapshot_due(st, state, now, policy) then
        self:build(id)
      else
        local upto = policy.compact_upto(st, state, now, policy)
        if upto then self:compact(id, upto) end
      end
    end
  end
end

--- Checks every stream (the node's tick).
function Snapshots:tick()
  local ids = {}
  for _, st in ipairs(self.store:streams()) do ids[#ids + 1] = st.id end
  self:check(ids)
end

function Snapshots:_done(id, ok, err, cb)
  self.busy[id] = nil
  if not ok and err then self.node:_error("snapshot of " .. id .. ": " .. tostring(err)) end
  if cb then self.node:_protect(cb, ok, err) end
end

-- Runs step() on deferred turns until it returns true (done) or nil, err;
-- then finish(done), which calls done(rev) or done(nil, err).
function Snapshots:_slices(id, step, finish, cb)
  local defer = self.node.adapter.defer
  local function done(rev, err)
    if rev then self:_done(id, rev, nil, cb) else self:_done(id, nil, err, cb) end
  end
  local function turn()
    if self.closed or not self.store:is_open() then
      return done(nil, "ECANCELED: the node closed")
    end
    local ok, finished, err = xpcall(step, debug.traceback)
    if not ok or finished == nil then return done(nil, ok and err or finished) end
    if not finished then return defer(turn) end
    finish(done)
  end
  defer(turn)
end

-- Stores what a C builder folded: on a worker thread when the adapter can
-- watch a descriptor (so a large snapshot never stalls the loop), else
-- right here.
function Snapshots:_finish_builder(b, done)
  local watch = self.node.adapter.watch
  if not watch then return done(b:finish()) end
  local fd, err = b:finish_async()
  if not fd then return done(nil, err) end
  local w
  w = watch(fd, function()
    w.stop()
    if self.closed or not self.store:is_open() then
      return done(nil, "ECANCELED: the node closed")
    end
    done(b:collect())
  end)
end

--- Builds a snapshot of stream `id` at its last revision now, in slices.
-- `cb(rev)` or `cb(nil, err)` when done. Returns false if one is already
-- being built or no reducer is set.
function Snapshots:build(id, cb, reducer)
  reducer = reducer or self:reducer(id)
  local st = self.store:stream(id)
  if not reducer or not st or self.busy[id] then return false end
  self.busy[id] = "snapshot"
  local policy = self.node.policy
  local upto = st.last
  local function finished(rev)
    local s = self:_state(self.store:stream(id))
    s.snapshot_rev = rev
    s.last_snapshot_ms = self.node.adapter.now()
    self.node:emit("snapshot", id, rev)
    return rev
  end
  if type(reducer) == "string" then
    local b, err = core.snapshot_builder(self.store.core, id, reducer, { upto = upto })
    if not b then
      self:_done(id, nil, err, cb)
      return true
    end
    self:_slices(id, function() return b:step(policy.snapshot_slice) end, function(done)
      self:_finish_builder(b, function(rev, ferr)
        if rev then finished(rev) end
        done(rev, ferr)
      end)
    end, cb)
    return true
  end
  -- a Lua reducer: fold batches of events in Lua
  local codec = reducer.codec or json_codec()
  local format = "lua:" .. reducer.name
  local origin = origin_of(st)
  local prev = self.store:snapshot_get(id, origin)
  local state, from
  if prev and prev.format == format and prev.rev + 1 >= st.first and prev.rev <= upto then
    state, from = codec.decode(prev.data), prev.rev + 1
  elseif st.first > 1 then
    self:_done(id, nil, "ESTALE: events of " .. id .. " before " .. st.first
      .. " are compacted and no " .. format .. " snapshot covers them", cb)
    return true
  else
    state, from = reducer.init and reducer.init() or {}, 1
  end
  local it, ierr
  if from <= upto then
    it, ierr = self.store.core:iter(id, from, upto)
    if not it then
      self:_done(id, nil, ierr, cb)
      return true
    end
  end
  self:_slices(id, function()
    local n = 0
    while it and n < policy.snapshot_slice do
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
  end, function(done)
    if not (prev and prev.rev == upto) then
      local ok, err = self.store:snapshot_put(id, upto, codec.encode(state),
        { format = format, origin = origin })
      if not ok then return done(nil, err) end
    end
    done(finished(upto))
  end, cb)
  return true
end

--- Compacts stream `id` up to `upto` (one write), then purges the old
-- events in slices. `cb(first)` or `cb(nil, err)` when the purge is done.
function Snapshots:compact(id, upto, cb)
  if self.busy[id] then return false end
  local first, err = self.store:compact(id, upto)
  if not first then
    self.node:_error("compaction of " .. id .. ": " .. err)
    if cb then self.node:_protect(cb, nil, err) end
    return true
  end
  self.busy[id] = "purge"
  self.node:emit("compact", id, first)
  local slice = self.node.policy.purge_slice
  self:_slices(id, function()
    local left, perr = self.store:purge(id, slice)
    if not left then return nil, perr end
    return left == 0
  end, function(done) done(first) end, cb)
  return true
end

function Snapshots:close()
  self.closed = true
end

return Snapshots
