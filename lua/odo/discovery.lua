--- Discovery sources: where candidate peers come from.
--
-- A source is any table with `start(self, report)` and `stop(self)`;
-- `report(host, port)` offers a candidate address, as often as the source
-- likes (known addresses are ignored). A source may set `pinned = true`:
-- its peers are never deleted after failing, only retried. `start` also
-- gets the node as its third argument (its `adapter`, `policy`, `listen`,
-- and `node:emit("discovery", source_name, message)` for lines worth
-- logging, which `odo run` logs). A source may have `status(self)`,
-- returning a table `{name, found = {{host, port}...}, found_at (wall
-- clock, ms), error, error_at, ...}`: `node:status().discovery` lists
-- them (and `odo status --json`). Writing one takes a few lines:
--
--     local every_minute = {
--       start = function(self, report)
--         self.t = uv.new_timer()
--         self.t:start(0, 60000, function() report("10.0.0.7", 4000) end)
--       end,
--       stop = function(self) self.t:close() end,
--     }
--     odo.node{ ..., discovery = { every_minute } }
--
-- @module odo.discovery
local D = {}

--- Splits "host:port" (also "[v6]:port"); nil, message when it is not one.
function D.parse_address(s)
  local host, port = tostring(s):match("^%[(.+)%]:(%d+)$")
  if not host then host, port = tostring(s):match("^(.+):(%d+)$") end
  port = tonumber(port)
  if not host or not port or port < 1 or port > 65535 then
    return nil, ("'%s' is not HOST:PORT"):format(tostring(s))
  end
  return host, port
end

--- Multicast DNS on the local link (`odo.discovery.mdns`): announces
-- this node and reports the peers of the same swarm name.
-- @tparam[opt] table opts see `odo.discovery.mdns`
function D.mdns(opts)
  return require("odo.discovery.mdns")(opts)
end

--- Static seeds: the configured peers, reported once at start, pinned.
-- @tparam table addresses array of "host:port"
function D.static(addresses)
  local list = {}
  for i, a in ipairs(addresses or {}) do
    local host, port = D.parse_address(a)
    assert(host, port)
    list[i] = { host, port }
  end
  return {
    name = "static",
    pinned = true,
    start = function(_, report)
      for _, a in ipairs(list) do report(a[1], a[2]) end
    end,
    stop = function() end,
  }
end

--- Peer history: the peers this node was introduced to before, from its
-- store, reported once at start.
function D.history(store)
  return {
    name = "history",
    start = function(_, report)
      local peers = store:peers()
      for _, p in ipairs(peers or {}) do
        if p.host ~= "" and p.port > 0 then report(p.host, p.port) end
      end
    end,
    stop = function() end,
  }
end

--- DNS discovery: `_odo._tcp.NAME` SRV records, else NAME's A/AAAA
-- records (see `odo.discovery.dns`, loaded when first used).
function D.dns(opts)
  return require("odo.discovery.dns").new(opts)
end

return D
