--- The DHT part of `odo run`: `--dht-topic NAME [--dht-bootstrap HOST:PORT]...
-- [--dht-network ID] [--dht-port PORT]` start an `odo.discovery.dht`
-- source on the running node. Nodes on another network id or topic never
-- see each other, so the id is logged at start.
--
-- @module odo.cli.run_dht
local M = {}

local function wanted(args)
  return args.dht_topic or #(args.dht_bootstrap or {}) > 0 or args.dht_network or args.dht_port
end

--- Starts DHT discovery when the command line asks for it. Returns true,
-- or nil and a message (odo.dht not built, no topic, the UDP port taken).
function M.start(args, node, log)
  if not wanted(args) then return true end
  if not args.dht_topic then return nil, "--dht-topic NAME is required with the other --dht options" end
  local Dht = require "odo.discovery.dht"
  local network = args.dht_network or Dht.DEFAULT_NETWORK
  if network == 0 then log("dht: network id 0 is OpenDHT's public network, as asked (--dht-network 0)") end
  local src, err = Dht.new {
    node = node,
    topic = args.dht_topic,
    bootstrap = args.dht_bootstrap,
    network = network,
    port = args.dht_port,
    log = function(msg) log("dht: %s", msg) end,
  }
  if not src then return nil, "--dht-topic: " .. tostring(err):gsub("^%u+: ", "") end
  node:add_source(src)
  -- `odo status` shows the source: a status answer without discovery
  -- entries gets this one; one that lists the node's sources already is
  -- left as it is
  local Control = require "odo.control"
  local status = Control.commands.status
  Control.commands.status = function(n, ...)
    local t = status(n, ...)
    if t.discovery == nil then
      local st = src:status()
      st.found = Control.array(st.found)
      t.discovery = Control.array({ st })
    end
    return t
  end
  return true
end

return M
