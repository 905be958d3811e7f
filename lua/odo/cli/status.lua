--- `odo status --dir DIR [--json]`: the node's peers and streams. Asks the
-- running node through DIR/odo.sock; with no node running, reads the store
-- (streams, and peers from history).
--
-- @module odo.cli.status
local cli = require "odo.cli"
local Control = require "odo.control"
local cjson = Control.json
local Store = require "odo.store"
local compat = require "odo.compat"

local function from_store(dir)
  local store, err, name = Store.open(dir .. "/store", { create = false })
  if not store then return nil, err, name end
  local peers = {}
  for i, p in ipairs(store:peers()) do
    peers[i] = { id = p.id, host = p.host, port = p.port, state = "history", reason = p.reason,
      last_seen = p.last_seen }
  end
  local t = Control.status_table(store.node_id, nil, peers, store:streams())
  store:close()
  return t
end

local function text(st)
  local out = {}
  out[#out + 1] = ("node %s %s"):format(st.id, st.running and ("listening on " .. st.listen) or "(not running)")
  out[#out + 1] = ("peers: %d"):format(#st.peers)
  for _, p in ipairs(st.peers) do
    local id = p.id ~= cjson.null and p.id:sub(1, 16) or "?"
    local port = p.port ~= cjson.null and compat.tointeger(p.port) or "?"
    local addr = tostring(p.host) .. ":" .. tostring(port)
    local rtt = p.rtt ~= cjson.null and ("%.1f ms"):format(p.rtt) or ""
    local why = p.reason ~= cjson.null and p.reason or ""
    out[#out + 1] = ("  %-16s %-21s %-11s %-12s %s"):format(id, addr, p.state, why, rtt)
  end
  out[#out + 1] = ("streams: %d"):format(#st.streams)
  for _, s in ipairs(st.streams) do
    local up = s.upstream ~= cjson.null and tostring(s.upstream):sub(1, 16) or "-"
    out[#out + 1] = ("  %-40s first %-8d last %-8d snapshot %-8d upstream %s"):format(
      #s.id > 40 and (s.id:sub(1, 37) .. "...") or s.id, compat.tointeger(s.first), compat.tointeger(s.last),
      compat.tointeger(s.snapshot), up)
  end
  return table.concat(out, "\n")
end

return function(args)
  local st, err, name
  -- ask the node; with none running, read the store; a store busy but no
  -- node answering means one is starting (or stopping): ask again
  for _ = 1, 30 do
    local answer
    answer, err, name = Control.request(args.dir .. "/odo.sock", { cmd = "status" })
    if answer then
      if not answer.ok then return cli.fail(answer.error) end
      st = answer.result
      break
    elseif name == "ENOENT" or name == "ECONNREFUSED" then
      st, err, name = from_store(args.dir)
      if st or name ~= "EBUSY" then break end
      require("luv").sleep(100)
    else
      break
    end
  end
  if not st then return cli.fail(err) end
  Control.array(st.peers)
  Control.array(st.streams)
  if args.json then print(Control.encode(st)) else print(text(st)) end
  return 0
end
