-- spec/tools/echo_peer.lua CA CERT KEY - a transport in its own process for
-- specs: listens on 127.0.0.1 (a free port, printed on stdout), answers
-- every frame of type T with a frame of type T + 1 and the same payload,
-- and exits once its peer said BYE (or after 30 s).
local root = arg[0]:match("^(.*)/spec/tools/") or "."
package.path = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. package.path
local cpath = os.getenv("ODO_CPATH")
if cpath == nil or cpath == "" then cpath = root .. "/build/?.so" end
package.cpath = cpath .. ";" .. package.cpath
local core = require "odo.core"
local uv = require "luv"
local adapter = require "odo.adapter.luv"
local Transport = require "odo.transport"

local tls = assert(core.tls_context { ca = arg[1], cert = arg[2], key = arg[3] })
local t = Transport.new { adapter = adapter, tls = tls, port = 7 }
local server
local deadline = uv.new_timer()
local function stop()
  if server then server.close() end
  if not deadline:is_closing() then deadline:close() end
  adapter.shutdown()
end
server = assert(t:listen("127.0.0.1", 0, function(conn)
  conn.handlers = {
    on_message = function(c, typ, payload) c:send(typ + 1, payload) end,
    on_close = function(_, info)
      io.stderr:write("closed: ", info.reason, "\n")
      stop()
    end,
  }
end))
io.stdout:write(server.port, "\n")
io.stdout:flush()
deadline:start(30000, 0, stop)
uv.run()
