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

--- Remembers a node this one refused as full (`e` = {id, host, port}, its
-- announced listen address) at time `t`: it was just introduced, so it is
-- up and it is who it says, and it is looking for peers. The newest
-- `4 * pex_per_minute` are kept, for `pex_interval_ms`, and shared in
-- random samples: a wide window, since nodes refused in a row, handed
-- each other, link up in a band about as wide as it (the mesh's diameter
-- grows as the swarm over the window), while older ones are likely full.
function Mesh.refused(swarm, e, t)
  if not (e.id and Pex.well_formed(e.host, e.port)) then return end
  local list = swarm.mesh_refused or {}
  swarm.mesh_refused = list
  for i = #list, 1, -1 do
    if list[i].id == e.id or t - list[i].at > swarm.policy.pex_interval_ms then table.remove(list, i) end
  end
  list[#list + 1] = { id = e.id, host = e.host, port = e.port, at = t }
  if #list > 4 * swarm.policy.pex_per_minute then table.remove(list, 1) end
end

--- Good addresses to share with peer `to` (its id; nil: anyone), at most
-- `n`: peers active now, or active within `pex_fresh_ms`, with an address
-- and a node id, in random order. `full` (a refusal's frame): half of them
-- at most are nodes refused as full lately (`Mesh.refused`), which have
-- room, so the refused find each other instead of only this node's
-- (likely full) peers, and a swarm grown from one seed needs a bounded
-- number of attempts per node whatever its size.
function Mesh.good_addresses(swarm, to, n, t, full)
  local out = {}
  if full then
    local fresh = {}
    for _, e in ipairs(swarm.mesh_refused or {}) do
      if e.id ~= to and t - e.at <= swarm.policy.pex_interval_ms then
        fresh[#fresh + 1] = { id = e.id, host = e.host, port = e.port }
      end
    end
    for _, e in ipairs(Pex.sample(fresh, math.floor(n / 2))) do out[#out + 1] = e end
  end
  local taken = {}
  for _, e in ipairs(out) do taken[e.id] = true end
  local good = {}
  for _, p in pairs(swarm.peers) do
    if p.id and p.id ~= to and p.host and p.port and Pex.well_formed(p.host, p.port)
      and (p.state == "active" or (p.seen_active and t - p.seen_active <= swarm.policy.pex_fresh_ms))
      and not taken[p.id] then
      good[#good + 1] = { id = p.id, host = p.host, port = p.port }
    end
  end
  for _, e in ipairs(Pex.sample(good, n - #out)) do out[#out + 1] = e end
  return out
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
