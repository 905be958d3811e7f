-- spec/tools/durable_writer.lua DIR SYNC: appends events "event N" to the
-- own stream of a node in DIR (node id "power"), ten per call, forever,
-- printing each call's acknowledged last revision once append returned.
-- SYNC "true" or "false": the node's `sync` option.
local root = arg[0]:match("^(.*)/spec/tools/") or "."
package.path = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. package.path
local cpath = os.getenv("ODO_CPATH")
if cpath == nil or cpath == "" then cpath = root .. "/build/?.so" end
package.cpath = cpath .. ";" .. package.cpath
local odo = require "odo"
local dir, sync = arg[1], arg[2] ~= "false"
local node = assert(odo.node { dir = dir, node_id = "power", sync = sync })
local last = node:status().streams[1] and node:status().streams[1].last or 0
while true do
  local batch = {}
  for i = 1, 10 do batch[i] = { type = "t", data = "event " .. (last + i) } end
  last = assert(node:append(nil, batch))
  io.stdout:write(last, "\n")
  io.stdout:flush()
end
