--- The mesh's shape: how many peers a node dials and keeps, which
-- addresses it shares (peer exchange), and which peers it sheds when it
-- has more than its target. Pure choices over the swarm's entries; the
-- swarm (`odo.swarm`) acts on them. docs/ARCHITECTURE.md "The mesh" says
-- how the topology forms and what it guarantees.
--
-- @module odo.mesh
local Pex = require "odo.pex"

local Mesh = {}

--- The node's target of active peers and the number it dials up to (both
-- within `max_peers`).
function Mesh.limits(policy)
  local target = math.min(policy.target_peers, policy.max_peers)
  return target, math.min(policy.dial_peers, target)
end

--- Good addresses to share with peer `to` (its id; nil: anyone), at most
-- `n`: peers active now, or active within `pex_fresh_ms`, with an address
-- and a node id, in random order.
function Mesh.good_addresses(swarm, to, n, t)
  local out = {}
  for _, p in pairs(swarm.peers) do
    if p.id and p.id ~= to and p.host and p.port and Pex.well_formed(p.host, p.port)
      and (p.state == "active" or (p.seen_active and t - p.seen_active <= swarm.policy.pex_fresh_ms)) then
      out[#out + 1] = { id = p.id, host = p.host, port = p.port }
    end
  end
  return Pex.sample(out, n)
end

--- Active peers to shed when there are more than the target: never one
-- that serves a stream this node follows (`serving[id]`), nor a pinned
-- seed; of the others, `long_range_peers` random ones stay too.
function Mesh.to_shed(swarm, serving)
  local target = Mesh.limits(swarm.policy)
  local active, spare = 0, {}
  for _, p in pairs(swarm.by_id) do
    if p.state == "active" then
      active = active + 1
      if not serving[p.id] and not p.pinned then spare[#spare + 1] = p end
    end
  end
  if active <= target then return {} end
  table.sort(spare, function(a, b) return a.id < b.id end) -- a stable order for the shuffle
  Pex.sample(spare, #spare)
  local out = {}
  for i = swarm.policy.long_range_peers + 1, #spare do
    if active <= target then break end
    out[#out + 1] = spare[i]
    active = active - 1
  end
  return out
end

return Mesh
