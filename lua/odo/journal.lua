--- Subscriptions: events delivered to Lua in batches, catch-up then live.
--
-- A subscription keeps, per stream, the next revision it owes its
-- subscriber, and every delivery reads from the store from there up to the
-- stream's last revision. Catch-up and live delivery are the same read, so
-- there is no gap and no duplicate however appends race it (from handlers,
-- timers or replication): whatever was appended is read, exactly once, in
-- revision order. Deliveries run on deferred loop turns in bounded slices,
-- never inside the call that appended.
--
-- @module odo.journal
local compat = require "odo.compat"

local Journal = {}
Journal.__index = Journal

local Subscription = {}
Subscription.__index = Subscription
Subscription.__name = "odo.Subscription"

--- A journal over `node`'s store, using its adapter and error handler.
function Journal.new(node)
  return setmetatable({
    node = node,
    store = node.store,
    adapter = node.adapter,
    subs = {},
    pending = {},
    scheduled = false,
    closed = false,
  }, Journal)
end

local function want_stream(sub, id)
  return sub.all or sub.stream == id
end

--- Tells subscriptions that the given streams changed (ids, an array).
function Journal:notify(ids)
  if self.closed or #ids == 0 then return end
  for _, sub in ipairs(self.subs) do
    local hit = false
    for _, id in ipairs(ids) do
      if want_stream(sub, id) then
        sub.dirty[id] = true
        hit = true
      end
    end
    if hit then self:_wake(sub) end
  end
end

--- Reads the store's change list and notifies subscriptions.
function Journal:poll()
  if self.closed or not self.store:is_open() then return end
  self:notify(self.store:changes())
end

function Journal:_wake(sub)
  if sub.closed or sub.paused then return end
  if sub.waiting then
    local co = sub.waiting
    sub.waiting = nil
    self.adapter.defer(function() self.node:resume(co) end)
  elseif sub.handler then
    self.pending[sub] = true
    self:_schedule()
  end
end

function Journal:_schedule()
  if self.scheduled or self.closed then return end
  self.scheduled = true
  self.adapter.defer(function() self.node:protect(self._turn, self) end)
end

-- One delivery turn: every pending subscription gets at most one slice,
-- until the turn's time budget is spent; the rest waits for the next turn.
function Journal:_turn()
  self.scheduled = false
  if self.closed then return end
  local hr = self.adapter.hrtime
  local deadline = hr() + self.node.policy.turn_budget_ms * 1e6
  local again = false
  -- a copy: handlers may subscribe or unsubscribe while the turn runs
  local subs = {}
  for i, sub in ipairs(self.subs) do subs[i] = sub end
  for _, sub in ipairs(subs) do
    if self.pending[sub] then
      if hr() > deadline then
        again = true
        break
      end
      self.pending[sub] = nil
      if not sub.closed and not sub.paused and sub:_deliver_one() then
        self.pending[sub] = true
        again = true
      end
    end
  end
  if again then self:_schedule() end
end

--- Subscribes to a stream (`id`) or to every stream (`"*"` or nil).
-- See `odo.node` `subscribe` for the options.
function Journal:subscribe(stream, from, handler, opts)
  opts = opts or {}
  assert(stream == nil or type(stream) == "string", "stream must be a stream id, '*' or nil")
  assert(from == nil or from == "live" or (compat.is_integer(from) and from >= 1),
    "from must be a revision (>= 1) or 'live'")
  assert(handler == nil or type(handler) == "function", "handler must be a function or nil")
  local all = stream == nil or stream == "*"
  local sub = setmetatable({
    journal = self,
    stream = not all and stream or nil,
    all = all,
    from = from or 1,
    handler = handler,
    slice = opts.slice or self.node.policy.slice,
    on_caught_up = opts.on_caught_up,
    with_hash = opts.hash == true,
    next = {},
    dirty = {},
    live = false,
    closed = false,
    paused = false,
  }, Subscription)
  assert(compat.is_integer(sub.slice) and sub.slice > 0, "slice must be a positive integer")
  -- Where each stream starts: "live" means after what is there now.
  if sub.all then
    for _, st in ipairs(self.store:streams()) do
      sub.next[st.id] = sub.from == "live" and st.last + 1 or sub.from
      sub.dirty[st.id] = true
    end
  else
    local st = self.store:stream(stream)
    sub.next[stream] = sub.from == "live" and (st and st.last + 1 or 1) or sub.from
    sub.dirty[stream] = true
  end
  self.subs[#self.subs + 1] = sub
  self:_wake(sub)
  return sub
end

--- Closes every subscription; no handler runs afterwards.
function Journal:close()
  for _, sub in ipairs(self.subs) do
    sub.closed = true
    if sub.waiting then
      local co = sub.waiting
      sub.waiting = nil
      self.adapter.defer(function() self.node:resume(co) end)
    end
  end
  self.subs = {}
  self.pending = {}
  self.closed = true
end

function Journal:_remove(sub)
  for i, s in ipairs(self.subs) do
    if s == sub then
      table.remove(self.subs, i)
      break
    end
  end
  self.pending[sub] = nil
end

-- ---- subscriptions ---------------------------------------------------------

-- The next batch this subscription owes, or nil when it is caught up.
-- A batch is an array of events `{rev, ts, type, data, hash}` with
-- `batch.stream` set; when the subscriber is behind a stream's compaction
-- point, the batch is instead `{ stream = id, snapshot = snap }` (no
-- events) and the events after the snapshot follow.
function Subscription:_take()
  local store = self.journal.store
  for id in pairs(self.dirty) do
    local st = store:stream(id)
    local nxt = self.next[id] or 1
    if not st or nxt > st.last then
      self.dirty[id] = nil
    elseif nxt < st.first then
      local snap, err = store:snapshot_get(id, "source")
      if not snap then
        self.dirty[id] = nil
        return nil, err or ("ECOMPACTED: stream " .. id .. " is compacted past " .. nxt
          .. " and has no source snapshot")
      end
      self.next[id] = snap.rev + 1
      return { stream = id, snapshot = snap }
    else
      local batch, err = store.core:read(id, nxt, st.last, self.slice, self.with_hash)
      if not batch then
        self.dirty[id] = nil
        return nil, err
      end
      if #batch > 0 then
        self.next[id] = batch[#batch].rev + 1
        if self.next[id] <= st.last then
          self.live = false -- more than a slice was waiting: behind
        end
        batch.stream = id
        return batch
      end
      self.dirty[id] = nil
    end
  end
  return nil
end

-- Delivers one batch to the handler; returns whether more may be waiting.
function Subscription:_deliver_one()
  local node = self.journal.node
  local batch, err = self:_take()
  if batch then
    node:protect(self.handler, batch, self)
    return not self.closed
  end
  if err then
    node:report_error(err)
  end
  self:_check_caught_up()
  return false
end

function Subscription:_check_caught_up()
  if not self.live and not self.closed and next(self.dirty) == nil then
    self.live = true
    if self.on_caught_up then
      self.journal.node:protect(self.on_caught_up, self)
    end
  end
end

--- Whether the subscription has delivered everything there is (live).
function Subscription:caught_up()
  return self.live
end

--- The next revision owed for a stream (default: the subscribed stream).
function Subscription:position(id)
  return self.next[id or self.stream]
end

--- Stops deliveries until `resume`.
function Subscription:pause()
  self.paused = true
end

--- Resumes deliveries after `pause`.
function Subscription:resume()
  if not self.paused then return end
  self.paused = false
  self.journal:_wake(self)
end

--- Ends the subscription; safe at any moment, also inside its handler.
function Subscription:close()
  if self.closed then return end
  self.closed = true
  self.journal:_remove(self)
  if self.waiting then
    local co = self.waiting
    self.waiting = nil
    self.journal.adapter.defer(function() self.journal.node:resume(co) end)
  end
end
Subscription.unsubscribe = Subscription.close

--- Reads the subscription as an iterator of batches inside a coroutine:
-- each call returns the next batch, yielding to the loop until one is
-- there; it returns nil once the subscription is closed. The
-- subscription must have been made without a handler. On PUC Lua 5.1 a
-- generic `for` cannot yield: there, call the iterator in a `while` loop
-- (`local nxt = sub:batches(); local b = nxt(); while b do ... b = nxt() end`);
-- LuaJIT and Lua 5.2+ take the `for`.
-- @usage node:spawn(function()
--   for batch in sub:batches() do ... end
-- end)
function Subscription:batches()
  assert(self.handler == nil, "batches() reads a subscription made without a handler")
  return function()
    while not self.closed do
      if not self.paused then
        local batch, err = self:_take()
        if batch then return batch end
        if err then error(err, 2) end
        self:_check_caught_up()
      end
      assert(compat.in_coroutine(), "batches() must run inside a coroutine (see node:spawn)")
      self.waiting = coroutine.running()
      coroutine.yield()
    end
    return nil
  end
end

Journal.Subscription = Subscription
return Journal
