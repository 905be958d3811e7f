--- odo-journal: a distributed, peer-to-peer, append-only event journal.
--
-- `require "odo"` gives the public API; the C core is `odo.core`.
-- @module odo
local odo = {
  _VERSION = "odo-journal scm",
  core = require "odo.core",
  store = require "odo.store",
  policy = require "odo.policy",
}

--- Helpers for the built-in `kv` reducer: the data of put and del events,
-- and a kv snapshot decoded into a table.
odo.kv = {
  put = function(key, value) return { type = "put", data = odo.core.kv_put_data(key, value) } end,
  del = function(key) return { type = "del", data = key } end,
  decode = function(snapshot_data) return odo.core.kv_decode(snapshot_data) end,
}

--- Opens a node: a store, its subscriptions and policies (see
-- `odo.node.new`).
function odo.node(opts)
  return require("odo.node").new(opts)
end

--- Opens or creates an event store (see `odo.store.open`).
function odo.open_store(path, opts)
  return odo.store.open(path, opts)
end

return odo
