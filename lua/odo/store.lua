--- The event store: a LevelDB directory bound to one node id.
--
-- A thin, friendly layer over the C store in `odo.core`: it accepts one
-- event or many, names the node's own streams, and walks large ranges with
-- iterators. Runtime failures return `nil, "NAME: message", "NAME"`;
-- misuse (wrong argument types, use after close) raises.
--
-- @module odo.store
local core = require "odo.core"

local Store = {}
Store.__index = Store
Store.__name = "odo.Store"

--- Checks the events given to an append and returns them as an array.
-- `events` is one event or an array of them. An event is a table:
-- `type` (string, required; an empty one is refused with EINVAL),
-- `data` (a string of bytes; default ""), `ts` (integer milliseconds
-- since the epoch; default now). A table with no [1] and some field is
-- one event, whatever its fields, so a missing type raises instead of
-- reading as an empty array that writes nothing. Raises with the event's
-- position and field, at `level` (1: the caller of check_events).
-- @tparam table events
-- @tparam[opt] integer level
-- @treturn table an array of events
function Store.check_events(events, level)
  level = (level or 1) + 1
  if type(events) ~= "table" then
    error("events must be an event {type =, data =, ts =} or an array of them, got " .. type(events), level)
  end
  local one = events[1] == nil and next(events) ~= nil
  if one then events = { events } end
  for i, ev in ipairs(events) do
    local what = one and "event" or ("events[" .. i .. "]")
    if type(ev) ~= "table" then
      error(("%s must be a table {type =, data =, ts =}, got %s"):format(what, type(ev)), level)
    end
    if type(ev.type) ~= "string" then
      error(("%s.type is required, a string such as \"text\", got %s"):format(what, type(ev.type)), level)
    end
    if ev.data ~= nil and type(ev.data) ~= "string" then
      error(("%s.data must be a string of bytes (or nil for none), got %s"):format(what, type(ev.data)), level)
    end
    local ts = ev.ts
    if ts ~= nil and not (type(ts) == "number" and ts >= 0 and ts % 1 == 0) then
      error(("%s.ts must be an integer number of milliseconds since the epoch (or nil for now), got %s"):format(
        what, tostring(ev.ts)), level)
    end
  end
  return events
end

--- Opens or creates a store.
-- @tparam string path the LevelDB directory
-- @tparam[opt] table opts
--   `node_id` (string: required to create a store; when given, the store
--   must belong to it), `sync` (boolean, default true: `append` returns once
--   its write is durable), `create` (default true), `cache_mb` (default 8)
-- @treturn Store
-- @treturn[2] nil
-- @treturn[2] string "NAME: message" (EBUSY, ENOENT, EIDENTITY, EFORMAT,
--   ECORRUPT, ...)
-- @treturn[2] string NAME
function Store.open(path, opts)
  assert(type(path) == "string", "store path must be a string")
  local c, err, name = core.store_open(path, opts)
  if not c then return nil, err, name end
  local info = c:info()
  return setmetatable({ core = c, node_id = info.node_id, path = path }, Store)
end

function Store:__tostring()
  return tostring(self.core)
end

--- The full id of this node's named stream `<node id>/<name>` (or of its
-- own stream when name is nil).
function Store:stream_id(name)
  if name == nil then return self.node_id end
  assert(type(name) == "string" and name ~= "", "stream name must be a non-empty string")
  return self.node_id .. "/" .. name
end

--- Appends one event or an array of events to a stream this node is the
-- source of, in one atomic write.
-- @tparam ?string stream full stream id; nil for the node's own stream
-- @tparam table events `{type=, data=, ts=}` or an array of them
-- @tparam[opt] table opts `expected` (the revision the stream must be at,
--   0 for a new stream), `sync`
-- @treturn integer the stream's new last revision
-- @treturn[2] nil
-- @treturn[2] string "ECONFLICT: ...", "ETOOBIG: ...", "ENOTSOURCE: ..."
function Store:append(stream, events, opts)
  events = Store.check_events(events, 2)
  return self.core:append(stream, events, opts)
end

--- Appends several groups `{stream=, events=, expected=}` with one write
-- and one sync. Returns an array with, per group, the new last revision or
-- a "NAME: message" string for a group that was refused.
function Store:append_many(groups, opts)
  for _, g in ipairs(groups) do
    g.events = Store.check_events(g.events, 2)
  end
  return self.core:append_many(groups, opts)
end

--- Appends events received from a stream's source (or a relay): they must
-- continue at last + 1 and match their chain hashes.
-- @tparam string stream
-- @tparam table events array of `{rev=, ts=, type=, data=, hash=}`
-- @tparam[opt] table opts `sync`
-- @treturn integer the stream's last revision
-- @treturn[2] nil
-- @treturn[2] string "NAME: message"
function Store:append_replica(stream, events, opts)
  return self.core:append_replica(stream, events, opts)
end

--- Reads events `from..to` (at most `limit`) as one array of
-- `{rev, ts, type, data, hash}`.
function Store:read(stream, from, to, limit)
  return self.core:read(stream or self.node_id, from, to, limit)
end

--- Iterates over a range one slice at a time, returning batches (arrays).
-- Raises on a corrupt or compacted range. On Lua 5.4 the iterator is the
-- loop's closing value: leaving the loop early releases it at once.
-- @usage for batch in store:batches(id, 1) do ... end
function Store:batches(stream, from, to, size)
  local it, err = self.core:iter(stream or self.node_id, from, to)
  if not it then error(err, 2) end
  size = size or 1000
  return function()
    local batch, e = it:next(size)
    if batch == nil and e then error(e, 2) end
    return batch
  end, nil, nil, it
end

--- Iterates over single events of a range (slices underneath).
-- @usage for ev in store:events(id) do print(ev.rev, ev.data) end
function Store:events(stream, from, to)
  local next_batch, _, _, it = self:batches(stream, from, to)
  local batch, i = nil, 0
  return function()
    i = i + 1
    if batch == nil or i > #batch then
      batch, i = next_batch(), 1
      if batch == nil then return nil end
    end
    return batch[i]
  end, nil, nil, it
end

--- The catalogue: an array of `{id, source, first, last, snapshot, own,
-- hash, purged}` sorted by id.
function Store:streams() return self.core:streams() end

--- One stream's catalogue entry, or nil.
function Store:stream(id) return self.core:stream(id or self.node_id) end

--- A stream's last revision, its newest source snapshot's revision (0:
-- none) and whether this node is its source, without the table `stream`
-- makes; nothing when the store has no such stream.
-- @treturn integer last
-- @treturn integer snapshot
-- @treturn boolean own
function Store:stream_state(id) return self.core:stream_state(id or self.node_id) end

--- Recomputes a stream's chain; true, or nil, "ECORRUPT: ...", "ECORRUPT",
-- first bad revision.
function Store:verify(stream) return self.core:verify(stream or self.node_id) end

--- Stores a snapshot at revision `rev` (see odo.core's snapshot_put).
-- @tparam string stream
-- @tparam integer rev
-- @tparam string data
-- @tparam[opt] table opts `origin`, `format`, `sig`
function Store:snapshot_put(stream, rev, data, opts)
  return self.core:snapshot_put(stream, rev, data, opts)
end

--- The latest snapshot `{rev, hash, origin, format, sig, data}` or nil.
function Store:snapshot_get(stream, origin)
  return self.core:snapshot_get(stream, origin)
end

--- Installs a source snapshot on a replica (stores it and compacts).
function Store:snapshot_install(stream, snap)
  return self.core:snapshot_install(stream, snap)
end

--- Moves the first held revision to `upto + 1` (default: past the source
-- snapshot). Returns the new first revision.
function Store:compact(stream, upto) return self.core:compact(stream, upto) end

--- Deletes at most `max` compacted events; returns how many remain.
function Store:purge(stream, max) return self.core:purge(stream, max) end

--- Packs the oldest run of single-event records into segments (at most
-- `max` events of work); returns the events packed and whether more is
-- left (see odo.core's store `pack`).
function Store:pack(stream, max) return self.core:pack(stream, max) end

--- Starts a LevelDB compaction of revisions `from`..`to` of a stream's
-- log (what `pack` rewrote) on a thread of its own; false while one runs.
function Store:compact_packed(stream, from, to) return self.core:compact_packed(stream, from, to) end

--- Deletes every compacted event of every stream, `slice` at a time.
function Store:purge_all(slice)
  for _, st in ipairs(self:streams()) do
    repeat
      local left, err, name = self:purge(st.id, slice)
      if not left then return nil, err, name end
    until left == 0
  end
  return true
end

--- Stores a signed head; `hash` must be h(rev) as held.
function Store:head_put(stream, rev, hash, sig)
  return self.core:head_put(stream, rev, hash, sig)
end

--- The first signed head at or after `rev` `{rev, hash, sig}`, or nil.
function Store:head_find(stream, rev) return self.core:head_find(stream, rev) end

--- The newest signed head of a stream, or nil.
function Store:head_last(stream) return self.core:head_find(stream, nil, true) end

--- Records a peer `{id, host, port, last_seen, reason}` in peer history.
function Store:peer_put(peer) return self.core:peer_put(peer) end

--- Every peer in history.
function Store:peers() return self.core:peers() end

--- Forgets a peer.
function Store:peer_delete(id) return self.core:peer_delete(id) end

--- Records the public key (SubjectPublicKeyInfo DER) of a source.
function Store:key_put(source_id, der) return self.core:key_put(source_id, der) end

--- The public key of a source, or nil.
function Store:key_get(source_id) return self.core:key_get(source_id) end

--- Ids of streams whose catalogue entry changed since the last call.
function Store:changes() return self.core:changes() end

--- Makes every write so far durable.
function Store:sync() return self.core:sync() end

--- Node metadata `{node_id, created, format, path, streams}`.
function Store:info() return self.core:info() end

--- Whether the store is open.
function Store:is_open() return self.core:is_open() end

--- Closes the store (idempotent; also on `<close>`, and when the core's
-- handle is collected: iterators keep it alive, not this wrapper).
function Store:close() self.core:close() end

Store.__close = Store.close

return Store
