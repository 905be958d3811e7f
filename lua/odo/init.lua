--- odo-journal: a distributed, peer-to-peer, append-only event journal.
--
-- `require "odo"` gives the public API; the C core is `odo.core`.
-- @module odo
local odo = {
  _VERSION = "odo-journal scm",
  core = require "odo.core",
  store = require "odo.store",
}

--- Opens or creates an event store (see `odo.store.open`).
function odo.open_store(path, opts)
  return odo.store.open(path, opts)
end

return odo
