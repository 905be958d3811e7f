--- A node: a store, its subscriptions and its policies, on an event loop.
--
-- `odo.node{...}` opens (or creates) the node's folder and store. Appends
-- are durable when they return; subscriptions deliver batches of events to
-- Lua handlers, catch-up first, then live; snapshots and compaction follow
-- the policy (`odo.policy`). Every callback the node runs is a protected
-- call: an error goes to the node's error handler (default: print it with
-- a traceback and carry on), never ends the process.
--
-- Events (`node:on(name, fn)`): "peer" `(peer, old, new, reason)` for every
-- transition of a peer entry, each entry's from "none" to "deleted" (an
-- incoming entry that joins the entry kept for its address ends with
-- "merged"; see `odo.swarm`); "snapshot" `(stream, rev)`; "compact"
-- `(stream, first)`; "packed" `(stream, last, count)` (`odo.packer`); "close"; "notice" `(kind, message)` (what the
-- transport refused or evicted, see `odo.admission`); and the sync events
-- (`odo.sync`), among
-- them "caught_up" `(stream, rev, peer_id)`: the stream's upstream sent
-- everything it holds (caught up with the swarm; see `caught_up`).
-- Those values as arguments are the old form; `node:on(name, fn, { table =
-- true })` hands fn one table with them named instead (`odo.emitter` FIELDS:
-- `{ event = "peer", peer =, old =, new =, reason = }`).
--
-- @module odo.node
local core = require "odo.core"
local Store = require "odo.store"
local Journal = require "odo.journal"
local Snapshots = require "odo.snapshots"
local Packer = require "odo.packer"
local policy_mod = require "odo.policy_set"
local emitter = require "odo.emitter"
local compat = require "odo.compat"
local Swarm = require "odo.swarm"
local Sync = require "odo.sync"
local discovery = require "odo.discovery"
local Metrics = require "odo.metrics"
local http_metrics = require "odo.http_metrics"

local Node = {}
Node.__index = Node
Node.__name = "odo.Node"

local function default_adapter()
  return require "odo.adapter.luv"
end

-- ---- options (checked before anything is opened) ----------------------------------

local function check_tls(tls)
  assert(type(tls) == "table" and type(tls.ca) == "string" and type(tls.cert) == "string"
    and type(tls.key) == "string", "opts.tls needs ca, cert and key (paths of PEM files)")
end

-- "host:port" or "[v6]:port" (port 0: any free port) -> {host, port};
-- raises on anything else.
local function parse_listen(listen)
  local host, port
  if type(listen) == "string" then host, port = listen:match("^%[?([^%]]+)%]?:(%d+)$") end
  port = tonumber(port)
  assert(host and port <= 65535, "opts.listen must be HOST:PORT")
  return { host = host, port = port }
end

local function check_adapter(a)
  assert(type(a) == "table", "opts.adapter must be a table of functions (see docs/ADAPTERS.md)")
  for _, f in ipairs({ "now", "hrtime", "timer", "every", "defer" }) do
    assert(type(a[f]) == "function", "opts.adapter has no function " .. f .. " (see docs/ADAPTERS.md)")
  end
end

local function check_sources(list)
  assert(list == nil or type(list) == "table", "opts.discovery must be an array of discovery sources")
  for i, src in ipairs(list or {}) do
    assert(type(src) == "table" and type(src.start) == "function" and type(src.stop) == "function",
      ("opts.discovery[%d] is not a discovery source (a table with start(self, report) and stop(self))"):format(i))
  end
end

-- Every programmer error in `opts` raises here, before anything is opened.
-- Returns the merged policy, the parsed listen address and the static
-- seeds source.
local function check_options(opts)
  assert(type(opts) == "table", "odo.node takes a table of options")
  assert(type(opts.dir) == "string", "opts.dir (the node's folder) is required")
  assert(opts.node_id == nil or type(opts.node_id) == "string", "opts.node_id must be a string")
  assert(opts.on_error == nil or type(opts.on_error) == "function", "opts.on_error must be a function")
  assert(opts.sync == nil or type(opts.sync) == "boolean", "opts.sync must be a boolean")
  assert(opts.host == nil or type(opts.host) == "string", "opts.host must be a string")
  assert(opts.tune_allocator == nil or type(opts.tune_allocator) == "boolean", "opts.tune_allocator must be a boolean")
  local policy = policy_mod.merge(opts.policy)
  if opts.adapter ~= nil then check_adapter(opts.adapter) end
  if opts.tls ~= nil then check_tls(opts.tls) end
  local listen
  if opts.listen ~= nil then
    assert(opts.tls ~= nil, "opts.listen needs opts.tls")
    listen = parse_listen(opts.listen)
  end
  assert(opts.peers == nil or type(opts.peers) == "table", "opts.peers must be an array of HOST:PORT")
  local seeds = discovery.static(opts.peers) -- raises on an address that is not HOST:PORT
  check_sources(opts.discovery)
  assert(opts.metrics == nil or http_metrics.parse_address(opts.metrics), "opts.metrics must be HOST:PORT")
  assert(opts.metrics_streams == nil or (compat.is_integer(opts.metrics_streams) and opts.metrics_streams >= 0),
    "opts.metrics_streams must be an integer >= 0")
  return policy, listen, seeds
end

-- Which of a node's folder and store folder do not exist yet (a path
-- that os.rename cannot rename onto itself).
local function fresh_paths(dir)
  local made = {}
  if not os.rename(dir, dir) then made.dir = dir end
  if not os.rename(dir .. "/store", dir .. "/store") then made.store = dir .. "/store" end
  return made
end

-- Removes what a node that failed to start had created: its store (only
-- one this call opened, so created) and its folder (only when empty).
local function remove_fresh(made, opened)
  if made.store and opened then core.store_destroy(made.store) end
  if made.dir then os.remove(made.dir) end
end

--- Opens a node.
-- @tparam table opts
--   `dir` (string, required): the node's folder; the store is `dir/store`.
--   `tls` (table): `{ca =, cert =, key =}` PEM files; the node id is the
--   certificate's, and the node talks to peers. Without it the node is a
--   local journal.
--   `listen` (string): "host:port" to accept peers on (port 0: any); the
--   host is an IP address, or with luv a name resolved once at start.
--   `peers` (table): seed addresses "host:port", always retried.
--   `discovery` (table): more discovery sources (`odo.discovery`).
--   `node_id` (string): the node's id when it has no certificate (local
--   journals, specs).
--   `metrics` (string): "host:port" to serve `GET /metrics` on
--   (Prometheus text; see `odo.metrics`); nothing listens without it.
--   `metrics_streams` (integer, default 1000): at most this many streams,
--   the most recently active, get series of their own.
--   `adapter` (table): timers and sockets (default `odo.adapter.luv`).
--   `policy` (table): replacements for `odo.policy` defaults.
--   `sync` (boolean, default true): appends return once durable.
--   `on_error` (function): the error handler, `function(message)`.
--   `tune_allocator` (boolean, default false; `odo run` sets it): let a
--   node with a network tune glibc's malloc for the whole process (every
--   C library in it) to keep freed memory (`odo.core.tune_allocator`). A
--   host that embeds a node leaves it off unless it wants that.
-- Wrong options raise before anything is opened. A failure at run time
-- (unreadable certificates, a store in use, an address that cannot be
-- listened on) returns nil, "NAME: message", NAME, with everything opened
-- so far closed again.
-- @treturn Node
-- @treturn[2] nil
-- @treturn[2] string "NAME: message" (EBUSY, EIDENTITY, ECORRUPT,
--   EADDRINUSE, EINVAL, ...)
-- @treturn[2] string NAME
function Node.new(opts)
  local policy, listen, seeds = check_options(opts)
  local tls
  local node_id = opts.node_id
  if opts.tls ~= nil then
    local err, name
    tls, err, name = core.tls_context(opts.tls)
    if not tls then return nil, err, name end
    if node_id and node_id ~= tls:id() then
      return nil, ("EIDENTITY: opts.node_id %s is not the certificate's id %s"):format(node_id, tls:id()), "EIDENTITY"
    end
    node_id = tls:id()
  end
  -- what this call creates, it removes again when the node cannot start
  local made = fresh_paths(opts.dir)
  local ok, err, name = core.mkdirs(opts.dir, 448) -- 0700: it holds keys
  if not ok then return nil, err, name end
  local store
  store, err, name = Store.open(opts.dir .. "/store", {
    node_id = node_id,
    sync = opts.sync ~= false,
    worker_nice = policy.worker_nice, -- its threads' priority (odo.policy)
  })
  if not store then
    remove_fresh(made)
    return nil, err, name
  end
  local self = emitter.mixin(setmetatable({
    id = store.node_id,
    dir = opts.dir,
    store = store,
    adapter = opts.adapter or default_adapter(),
    policy = policy,
    on_error = opts.on_error,
    commits = {},
    durable = opts.sync ~= false,
    cq_jobs = {}, -- commit queue write id -> its callers
    closed = false,
  }, Node))
  -- from here on, whatever fails closes what was opened
  local res = compat.pack(compat.xpcall(Node._start, debug.traceback, self, opts, tls, listen, seeds))
  if not res[1] or not res[2] then
    self:close()
    remove_fresh(made, true)
    if not res[1] then error(res[2], 0) end
    return nil, res[3], res[4]
  end
  return self
end

-- Opens the node's parts over its open store. Returns true, or nil, err,
-- name (the caller then closes the node).
function Node:_start(opts, tls, listen, seeds)
  self.journal = Journal.new(self)
  -- with worker_nice, the commit queue's worker starts (and takes its
  -- priority, which the queue waits for) now, not in a host's frame
  if self.durable and self.policy.worker_nice > 0 then self:_commit_queue() end
  self.snapshots = Snapshots.new(self)
  -- packs single-event records into segments, one job per stream shared
  -- with the snapshots' (a pack and a purge never run on one stream)
  self.packer = Packer.new(self, self.snapshots.busy)
  self.adapter.defer(function() self:protect(self.packer.tick, self.packer) end)
  self.ticker = self.adapter.every(self.policy.tick_ms, function()
    self:protect(self._tick, self)
  end)
  if opts.metrics then
    local ok, err, name = self:_serve_metrics(opts)
    if not ok then return nil, err, name end
  end
  if not tls then return true end
  self.sync = Sync.new(self, tls)
  self.swarm = Swarm.new(self, {
    tls = tls,
    host = opts.host or (listen and listen.host),
    tune_allocator = opts.tune_allocator,
    handlers = {
      on_active = function(p) self.sync:on_active(p) end,
      on_inactive = function(p) self.sync:on_inactive(p) end,
      on_message = function(p, t, payload) self.sync:on_message(p, t, payload) end,
      on_drain = function(p) self.sync:on_drain(p) end,
    },
  })
  self.instance = self.swarm.instance
  local sources = { seeds, discovery.history(self.store) }
  for _, src in ipairs(opts.discovery or {}) do sources[#sources + 1] = src end
  local ok, err, name = self.swarm:start(listen, sources)
  if not ok then return nil, err, name end
  self.listen = self.swarm.listen
  return true
end

-- Counts (odo.metrics: it times this node's appends, and hears its
-- "candidate" events, each address discovery offers: `(host, port,
-- source name)`) and serves them on opts.metrics.
function Node:_serve_metrics(opts)
  self.metrics = Metrics.new(self, { max_streams = opts.metrics_streams })
  local server, err, name = http_metrics.serve(self.adapter, opts.metrics, function() return self.metrics:text() end, {
    on_error = function(msg) self:report_error(msg) end,
    protect = function(fn, ...) return self:protect(fn, ...) end,
  })
  if not server then return nil, err, name end
  self.metrics.server = server
  self.metrics_address = server.host .. ":" .. server.port
  return true
end

function Node:__tostring()
  return ("odo.Node(%s%s)"):format(self.id, self.closed and ", closed" or "")
end

-- ---- errors and protected calls ----------------------------------------------

--- Reports an error to the node's error handler: the "error" listeners
-- (`node:on("error", fn)`), else `opts.on_error`, else stderr. The node's
-- parts report what fails inside them (and what their callbacks raise)
-- through it; nothing it calls may end the process.
-- @param msg what failed, for a person to read (a string, or an error value)
function Node:report_error(msg)
  local listeners = self:listeners("error")
  if #listeners > 0 then
    for _, fn in ipairs(listeners) do
      local ok, e = pcall(fn, msg)
      if not ok then io.stderr:write("odo: error handler failed: ", tostring(e), "\n") end
    end
  elseif self.on_error then
    local ok, e = pcall(self.on_error, msg)
    if not ok then io.stderr:write("odo: error handler failed: ", tostring(e), "\n") end
  else
    io.stderr:write("odo: ", tostring(msg), "\n")
  end
end

--- Calls fn(...) in a protected call; an error goes to the node's error
-- handler (see `report_error`). The node's parts (sync, swarm, journal,
-- snapshots, discovery, control) run every callback of theirs through it.
-- @tparam function fn
-- @param ... fn's arguments
-- @return fn's results, or nothing after an error
function Node:protect(fn, ...)
  local res = compat.pack(compat.xpcall(fn, debug.traceback, ...))
  if not res[1] then
    self:report_error(res[2])
    return
  end
  return compat.unpack(res, 2, res.n)
end

--- Resumes a coroutine that waits on the node (one `spawn` made, parked in
-- `append_wait` or `sub:batches()`); an error inside it goes to the error
-- handler. A coroutine that is not suspended is left alone.
-- @tparam thread co
-- @param ... what the coroutine's yield returns
function Node:resume(co, ...)
  if coroutine.status(co) ~= "suspended" then return end
  local ok, err = coroutine.resume(co, ...)
  if not ok then self:report_error(debug.traceback(co, err)) end
end

--- Runs fn(...) in a new coroutine, protected; inside it, `append_wait` and
-- `sub:batches()` yield to the loop instead of blocking it.
function Node:spawn(fn, ...)
  assert(type(fn) == "function", "spawn takes a function")
  local co = coroutine.create(fn)
  self:resume(co, ...)
  return co
end

local function check_open(self)
  if self.closed then error("attempt to use a closed node", 3) end
end

--- After anything that may have changed the store (an append, or events
-- written straight to it, as sync does): tells the metrics, subscriptions,
-- snapshot policy and sync which streams moved.
function Node:notify_changes()
  local ids = self.store:changes()
  if #ids == 0 then return end
  if self.metrics then self.metrics:touched(ids) end
  self.journal:notify(ids)
  self.snapshots:check(ids)
  if self.packer then self.packer:check(ids) end
  if self.sync then self.sync:on_changed(ids) end
end

function Node:_tick()
  if self.closed then return end
  self.snapshots:tick()
  if self.packer then self.packer:tick() end
end

-- ---- appending ------------------------------------------------------------------

--- The full id of this node's named stream (`<node id>/<name>`), or its own
-- stream's id when name is nil.
function Node:stream_id(name)
  return self.store:stream_id(name)
end

--- An event: what `append` takes, and what `read` and subscriptions give
-- (with `rev`, and `hash` when asked for).
-- @table Event
-- @tfield string type what happened: 1 to 255 bytes
-- @tfield[opt] string data the payload, a string of bytes (any bytes, UTF-8
--   or not; at most 4 MiB, `odo.core.max_data`); default ""
-- @tfield[opt] integer ts when: integer milliseconds since the Unix epoch
--   (default: the time of the append)
-- @tfield integer rev its revision in the stream, from 1 (given, not taken)
-- @tfield string hash the chain hash, 32 bytes (given, not taken)

--- Appends one event or an array of events to a stream this node is the
-- source of; returns once the write is durable (one sync for the call).
--
-- Two call shapes: `node:append(events, opts, cb)` (options in a table,
-- `opts.stream` the stream; with `cb` it is `append_async`: group commit,
-- `cb(last)` or `cb(nil, err, name)` once durable, nothing returned), and
-- the old form `node:append(stream, events, opts)`, which keeps working.
-- They are told apart by the first argument: a table is the events.
--
-- Without a callback the call blocks until its write is durable: it
-- writes (and fsyncs) on the calling thread, after any group commit in
-- flight to the same stream. A caller that wants the revision back as the
-- call's result has to wait for the fsync anyway, and a hand-over to the
-- worker would only add a thread switch; a host whose loop must not
-- stall uses the callback form or `append_wait` (in a coroutine), whose
-- writes the core's worker thread fsyncs (see `append_async`).
-- @tparam ?string stream a full stream id; nil for the node's own stream
--   (new form: the events)
-- @tparam table events an `Event` `{type=, data=, ts=}` or an array of them
--   (new form: opts)
-- @tparam[opt] table opts `expected` (revision), `sync`; new form: also
--   `stream` (new form: the optional callback)
-- @treturn integer the stream's new last revision
-- @treturn[2] nil
-- @treturn[2] string "ECONFLICT: ...", ...
function Node:append(stream, events, opts)
  check_open(self)
  if type(stream) == "table" then -- the new form: (events, opts, cb)
    local ev, o, cb = stream, events, opts
    assert(o == nil or type(o) == "table", "append(events, opts, cb): opts must be a table or nil")
    assert(cb == nil or type(cb) == "function", "append(events, opts, cb): cb must be a function or nil")
    local st = o and o.stream
    assert(st == nil or type(st) == "string", "opts.stream must be a stream id or nil")
    if cb then return self:append_async(st, ev, o, cb) end
    stream, events = st, ev
    opts = o and { expected = o.expected, sync = o.sync } or nil
  end
  events = Store.check_events(events, 2)
  local last, err, name = self.store:append(stream, events, opts)
  self:notify_changes()
  return last, err, name
end

-- Writes the queued group commits with one write; every caller's callback
-- runs exactly once with its group's outcome. A durable node hands the
-- write to the core's commit queue (a worker thread fsyncs it; see
-- `_commits_done`), one write in flight at a time: appends made meanwhile
-- wait in `commits` and form the next group.
function Node:_flush_commits()
  local q = self.commits
  if #q == 0 then return end
  local cq = self.durable and self.store:is_open() and self:_commit_queue()
  if cq and cq:pending() > 0 then return end -- the next group, once this one is done
  self.commits = {}
  local groups = {}
  for i, c in ipairs(q) do
    groups[i] = { stream = c.stream, events = c.events, expected = c.expected }
  end
  if cq then return self:_submit_commits(cq, q, groups) end
  local called, res, err, name = pcall(self.store.append_many, self.store, groups)
  if not called then
    -- a group the checks let through still raised (its events changed
    -- after the call?): write each group alone, so the others are kept
    res, err, name = {}, nil, nil
    for i, g in ipairs(groups) do
      local ok, last, gerr = pcall(self.store.append, self.store, g.stream, g.events, { expected = g.expected })
      if not ok then res[i] = "EINVAL: " .. tostring(last)
      else res[i] = last or gerr end
    end
  end
  if self.store:is_open() then self:notify_changes() end
  for i, c in ipairs(q) do
    self:_answer(c, res, i, err, name)
  end
end

-- Runs a caller's callback with group i's outcome of a write: res is the
-- write's per-group results, or nil with the write's err and name.
function Node:_answer(c, res, i, err, name)
  if not res then
    self:protect(c.cb, nil, err, name)
  elseif compat.is_integer(res[i]) then
    self:protect(c.cb, res[i])
  else
    self:protect(c.cb, nil, res[i], tostring(res[i]):match("^(%u+):"))
  end
end

-- ---- durable group commits on the core's worker thread -------------------------

-- The store's commit queue (`odo.core.commit_queue`), made on first use;
-- nil when it cannot be (then writes stay on the loop). With `watch` its
-- descriptor wakes the loop when a write is done; without, the node polls
-- (`_await_commits`).
function Node:_commit_queue()
  if self.cq == nil then
    local cq, err = core.commit_queue(self.store.core, { verifiers = self.policy.verify_threads })
    if not cq then
      self:report_error("durable appends stay on the loop thread: " .. tostring(err))
      self.cq = false
      return nil
    end
    self.cq = cq
    if self.adapter.watch then
      self.cq_watch = self.adapter.watch(cq:fd(), function() self:protect(self._commits_done, self) end)
    end
  end
  return self.cq or nil
end

--- The store's commit queue, for the node's parts that queue writes of
-- their own (the sync layer's received batches): made on first use; nil
-- when it cannot be.
function Node:commit_queue()
  return self:_commit_queue()
end

--- After a part of the node queued writes on the commit queue: makes sure
-- they are collected when done (without `watch`, by polling). With
-- `wait`, waits for the worker now and collects (for sockets that cannot
-- stop reading: the loop is the backpressure).
function Node:await_commits(wait)
  if wait and self.cq then
    self.cq:wait()
    return self:_commits_done()
  end
  self:_await_commits()
end

-- Checks the groups' events again (they may have changed since the calls)
-- and queues them as one write.
local function submit(cq, groups)
  for _, g in ipairs(groups) do g.events = Store.check_events(g.events, 2) end
  return cq:submit(groups)
end

-- Queues groups (for the callers q) as one write; a group that still
-- raises (its events changed after the call's checks) is answered alone
-- and the others are queued one write each, so every caller hears once.
function Node:_submit_commits(cq, q, groups)
  local ok, id, err, name = pcall(submit, cq, groups)
  if ok and id then
    local answers = {}
    for i, c in ipairs(q) do answers[i] = { c = c, i = i } end
    self.cq_jobs[id] = answers
  elseif ok then
    for _, c in ipairs(q) do self:protect(c.cb, nil, err, name) end
  else
    -- answers in the order of the appends: a refused group's answer
    -- goes with the write queued next (or, at the end, the one before)
    local waiting, last = {}, nil
    for i, g in ipairs(groups) do
      local one_ok, one_id, one_err, one_name = pcall(submit, cq, { g })
      if one_ok and one_id then
        waiting[#waiting + 1] = { c = q[i], i = 1 }
        self.cq_jobs[one_id], waiting, last = waiting, {}, one_id
      else
        waiting[#waiting + 1] = { c = q[i], err = one_ok and one_err or ("EINVAL: " .. tostring(one_id)),
          name = one_ok and one_name or "EINVAL" }
      end
    end
    local tail = last and self.cq_jobs[last]
    for _, a in ipairs(waiting) do
      if tail then tail[#tail + 1] = a else self:protect(a.c.cb, nil, a.err, a.name) end
    end
  end
  if cq:pending() > 0 then self:_await_commits() end
end

-- Without `watch`: polls the commit queue on the next turn, then every
-- policy.commit_poll_ms while a write is in flight. An adapter with
-- `wait_for_workers` (the in-memory one, a simulation) waits for the
-- worker at the poll instead, so its specs stay deterministic.
function Node:_await_commits()
  if self.cq_watch or self.cq_poll then return end
  local function poll()
    self.cq_poll = nil
    if self.adapter.wait_for_workers and self.cq then self.cq:wait() end
    self:protect(self._commits_done, self)
  end
  self.cq_poll = { stop = function() self.cq_poll = nil end }
  local first = self.cq_poll
  self.adapter.defer(function()
    if self.cq_poll ~= first then return end
    if self.adapter.wait_for_workers or (self.cq and self.cq:pending() == 0) then return poll() end
    self.cq_poll = self.adapter.timer(self.policy.commit_poll_ms, poll)
  end)
end

-- The commit queue finished writes: their events are now in the catalogue
-- (subscribers hear of them), then each caller's callback runs, in the
-- order of the appends; then the next group goes.
function Node:_commits_done()
  local cq = self.cq
  if not cq or not self.store:is_open() then return end
  local done = cq:collect()
  if #done > 0 then self:notify_changes() end
  if self.sync then self.sync:on_written() end
  for _, job in ipairs(done) do
    local answers = self.cq_jobs[job.id] or {}
    self.cq_jobs[job.id] = nil
    for _, a in ipairs(answers) do
      if a.i then self:_answer(a.c, job.results, a.i, job.err, job.name)
      else self:protect(a.c.cb, nil, a.err, a.name) end
    end
  end
  if cq:pending() > 0 then
    self:_await_commits()
  elseif #self.commits > 0 and not self.closed then
    self:_flush_commits()
  end
end

-- Writes every queued group commit and waits for the worker (closing):
-- every caller hears its outcome before the store closes.
function Node:_drain_commits()
  for _ = 1, 1000 do
    self:_flush_commits()
    local cq = self.cq
    if not cq or cq:pending() == 0 then break end
    cq:wait()
    self:_commits_done()
  end
  -- a caller appending from its callback while the node closes: its
  -- group is written on the loop (the node stops taking work now)
  self.durable = false
  self:_flush_commits()
end

--- Appends without waiting: appends issued in the same loop turn share one
-- write and one sync (group commit); `cb(last)` or `cb(nil, err, name)`
-- runs once the write is durable, exactly once per call. Wrong arguments
-- raise here. On a durable node (`sync` not false) the write and its
-- fsync run on the core's worker thread (`odo.core.commit_queue`), one
-- group in flight while the next gathers; subscribers see the events once
-- they are durable. A write that fails (ENOSPC) fails its whole group,
-- nothing of it written.
function Node:append_async(stream, events, opts, cb)
  check_open(self)
  assert(type(cb) == "function", "append_async needs a callback")
  assert(stream == nil or type(stream) == "string", "stream must be a stream id or nil")
  assert(opts == nil or type(opts) == "table", "opts must be a table or nil")
  local expected = opts and opts.expected
  assert(expected == nil or (compat.is_integer(expected) and expected >= 0),
    "opts.expected must be a revision (an integer >= 0)")
  -- a wrong event raises here, not later in a group commit shared with others
  Store.check_events(events, 2)
  self.commits[#self.commits + 1] = {
    stream = stream,
    events = events,
    expected = expected,
    cb = cb,
  }
  if #self.commits == 1 then
    self.adapter.defer(function() self:protect(self._flush_commits, self) end)
  end
end

--- Inside a coroutine (see `spawn`): appends with group commit, yielding
-- to the loop until the write is durable; returns what `append` returns.
function Node:append_wait(stream, events, opts)
  assert(compat.in_coroutine(), "append_wait must run inside a coroutine (see node:spawn)")
  local co = coroutine.running()
  local res
  self:append_async(stream, events, opts, function(...)
    res = compat.pack(...)
    self:resume(co)
  end)
  while not res do coroutine.yield() end
  return compat.unpack(res, 1, res.n)
end

-- ---- reading and subscribing ------------------------------------------------------

--- Reads events `from..to` of a stream (see `odo.store` `read`).
function Node:read(stream, from, to, limit)
  check_open(self)
  return self.store:read(stream, from, to, limit)
end

--- Subscribes to a stream's events, or to every stream's.
-- The handler receives batches: arrays of `{rev, ts, type, data, hash}`
-- with `batch.stream` set, first what the store holds from `from` on (in
-- slices between loop turns), then live as events are appended, with no
-- gap and no duplicate. When `from` is behind the stream's compaction
-- point, it first receives `{ stream = id, snapshot = {rev, data, format,
-- hash, ...} }`, then the events after the snapshot.
-- @tparam ?string stream a stream id, or "*" / nil for every stream
-- @tparam[opt] integer|string from first revision (default 1), or "live"
-- @tparam ?function handler `function(batch, sub)`; nil for a subscription
--   read with `sub:batches()` in a coroutine
-- @tparam[opt] table opts `slice` (events per batch, default
--   policy.slice), `on_caught_up` (`function(sub)`, each time it switches
--   from catching up to live: caught up with the local store, which may
--   itself still be catching up with the swarm; see `caught_up`)
-- @treturn odo.Subscription
function Node:subscribe(stream, from, handler, opts)
  check_open(self)
  return self.journal:subscribe(stream, from, handler, opts)
end

-- ---- snapshots ---------------------------------------------------------------------

--- Builds a snapshot of a stream now (with the policy's reducer, or
-- `reducer`), in slices; `cb(rev)` or `cb(nil, err)` when stored, always
-- once. Returns false when no new build starts: one is running (cb gets
-- its result) or it cannot ("EBUSY", "EINVAL", "ENOENT" go to cb).
--
-- Two call shapes: `node:snapshot(stream, opts, cb)` with `opts.reducer`,
-- and the old form `node:snapshot(stream, cb, reducer)`, which keeps
-- working. A table (or nil followed by a function) second is the new form.
-- @tparam ?string stream a stream id; nil for the node's own stream
-- @tparam[opt] table|function opts `{reducer =}` (old form: cb)
-- @tparam[opt] function|table|string cb (old form: the reducer)
function Node:snapshot(stream, opts, cb)
  check_open(self)
  local reducer
  if type(opts) == "table" or (opts == nil and type(cb) == "function") then -- the new form
    reducer = opts and opts.reducer
  else -- the old form: (stream, cb, reducer)
    cb, reducer = opts, cb
  end
  assert(cb == nil or type(cb) == "function", "cb must be a function or nil")
  assert(policy_mod.valid_reducer(reducer),
    "reducer must be \"kv\", \"last\" or { name = string, reduce = function(state, events), ... }")
  return self.snapshots:build(stream or self.id, cb, reducer)
end

--- Compacts a stream up to `upto` (default: its source snapshot), then
-- purges the old events in slices; `cb(first)` when done.
function Node:compact(stream, upto, cb)
  check_open(self)
  stream = stream or self.id
  local st = self.store:stream(stream)
  return self.snapshots:compact(stream, upto or (st and st.snapshot) or 0, cb)
end

--- Whether this node holds a stream as far as the swarm does: true for
-- its own streams, and for a replicated one once its upstream said it
-- sent everything (CAUGHT_UP) up to what the store holds; false while it
-- catches up, has no upstream, or the node has no network. The node's
-- "caught_up" event `(stream, rev, peer_id)` tells the moment, and
-- `status()` has it per stream as `caught_up`.
-- @tparam string stream a stream id
-- @treturn boolean
function Node:caught_up(stream)
  check_open(self)
  assert(type(stream) == "string", "stream must be a stream id")
  local st = self.store:stream(stream)
  if st and st.own then return true end
  local rev = self.sync and self.sync.caught_up[stream]
  return rev ~= nil and st ~= nil and rev >= st.last
end

--- Every peer the node knows: `{id, host, port, state, reason, detail,
-- attempts, last_activity, rtt, incoming, pinned}`.
function Node:peers()
  check_open(self)
  return self.swarm and self.swarm:list() or {}
end

-- What each discovery source that has `status()` says (`odo.discovery`).
local function discovery_status(self)
  local out = {}
  for _, src in ipairs(self.swarm and self.swarm.sources or {}) do
    if type(src.status) == "function" then
      local st = self:protect(src.status, src)
      if type(st) == "table" then out[#out + 1] = st end
    end
  end
  return out
end

--- Offers a candidate peer address (as a discovery source would).
function Node:discover(host, port)
  check_open(self)
  assert(self.swarm, "the node has no network (no opts.tls)")
  self.swarm:discover(host, port)
end

--- The node's state: `{id, listen, peers, streams, connections, memory}`
-- (`connections`: `odo.admission`'s counts; `memory.lua_bytes`: Lua's heap).
function Node:status()
  check_open(self)
  local listen = self.listen and (self.listen.host .. ":" .. self.listen.port) or nil
  local streams = self.store:streams()
  local upstreams = {}
  if self.sync then
    local sync = self.sync:streams_status()
    for _, st in ipairs(streams) do
      local x = sync[st.id]
      if x then st.upstream, st.lag, st.caught_up = x.upstream, x.lag, x.caught_up end
      upstreams[st.id] = st.upstream
    end
  end
  local status = { id = self.id, listen = listen, peers = self:peers(), streams = streams, upstreams = upstreams }
  -- what unauthenticated connections cost now (see odo.admission)
  if self.swarm then status.connections = self.swarm.transport.admission:status() end
  status.memory = { lua_bytes = math.floor(collectgarbage("count") * 1024) }
  status.discovery = discovery_status(self)
  -- the clock the `*_at` times above are on (the adapter's, in ms), so a
  -- reader can tell how long ago they were
  status.now_ms = self.adapter.now()
  return status
end

--- Adds a discovery source (`odo.discovery`) to a running node and
-- starts it (for sources made after the node, as `odo.discovery.dht`).
function Node:add_source(src)
  check_open(self)
  assert(self.swarm, "the node has no network (no opts.tls)")
  self.swarm:add_source(src)
end

--- Runs the loop (luv: until nothing is left; see `close`).
function Node:run()
  return self.adapter.run()
end

-- ---- driven by a host's loop (lua-http's pollable objects) --------------------------

--- Runs the work that is ready (I/O, due timers, deferred calls) without
-- waiting longer than `timeout_ms` (default 0: never waits) for more; for
-- a host that owns the loop (a game's frame, a scheduler). With luv this
-- steps luv's whole loop, so every node and handle on it. Not from inside
-- one of the node's callbacks. Works after `close`, to let closing
-- handles finish. Needs an adapter with `step` (luv has it).
-- @tparam[opt] number timeout_ms the longest wait for I/O
-- @treturn boolean true
function Node:step(timeout_ms)
  assert(timeout_ms == nil or (type(timeout_ms) == "number" and timeout_ms >= 0),
    "step(timeout_ms): timeout_ms must be a number >= 0 or nil")
  assert(type(self.adapter.step) == "function", "this node's adapter has no step (see docs/ADAPTERS.md)")
  self.adapter.step(timeout_ms or 0)
  return true
end

--- When the node next needs a `step`, in milliseconds from now: 0 when
-- work is ready, the time to the next due timer otherwise, nil when the
-- adapter cannot tell (or nothing is due). Sockets ready for reading are
-- not known in advance: a host also steps when `pollfd()` is readable, or
-- at least every frame.
-- @treturn ?number
function Node:timeout()
  if type(self.adapter.timeout) ~= "function" then return nil end
  return self.adapter.timeout()
end

--- A descriptor that becomes readable when the node has I/O to handle
-- (luv: the loop's backend descriptor), for hosts that poll descriptors;
-- nil when the adapter has none.
-- @treturn ?integer
function Node:pollfd()
  if type(self.adapter.pollfd) ~= "function" then return nil end
  return self.adapter.pollfd()
end

--- Closes subscriptions, timers and the store. Pending group commits are
-- written first. Idempotent.
function Node:close()
  if self.closed then return end
  self:protect(self._drain_commits, self)
  self.closed = true
  -- before the store: the commit queue's descriptor may be watched
  if self.cq_watch then self.cq_watch.stop() end
  if self.cq_poll then self.cq_poll.stop() end
  if self.cq then self.cq:close() end
  if self.swarm then self:protect(self.swarm.close, self.swarm, "the node is stopping") end
  if self.sync then self:protect(self.sync.close, self.sync) end
  if self.ticker then self.ticker.stop() end
  if self.metrics then self.metrics:close() end
  if self.journal then self.journal:close() end
  -- before the store: a snapshot worker's descriptor is watched
  if self.packer then self.packer:close() end
  if self.snapshots then self:protect(self.snapshots.close, self.snapshots) end
  self.store:close()
  self:emit("close")
  -- outside a running loop, let the closed handles finish closing (a
  -- script that ends after close must not leave them to lua_close)
  if self.adapter.settle then self.adapter.settle() end
end

Node.__close = Node.close

return Node
