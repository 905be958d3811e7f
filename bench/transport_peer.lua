-- bench/transport_peer.lua CA CERT KEY FRAMES BYTES - the receiving side of
-- bench/transport.lua, in its own process.
--
-- Listens on 127.0.0.1 (a free port, printed on stdout), takes one
-- connection, counts the frames of type 0x20 (each BYTES bytes on the
-- wire, header included) and, once it has FRAMES of them, replies with one
-- frame of type 0x21. When the connection closes it prints
--   done <frames> <bytes> <cipher> <VmHWM kB> <RssAnon kB>
-- and exits; 0 if all went well. Gives up after 30 s without a
-- connection or 10 minutes in all.
package.path = (arg[0]:match("^(.*)/bench/[^/]*$") or ".") .. "/?.lua;" .. package.path
local common = require "bench.common" -- and with it the paths to odo's modules
local core = require "odo.core"
local uv = require "luv"
local adapter = require "odo.adapter.luv"
local Transport = require "odo.transport"

local N, F = tonumber(arg[4]), tonumber(arg[5])
assert(N and F and F > 5, "usage: lua5.4 bench/transport_peer.lua CA CERT KEY FRAMES BYTES")
local PAYLOAD = F - 5

local fail = common.fail
local function status(field) return common.proc_kb("self", field) or -1 end

local tls = assert(core.tls_context { ca = arg[1], cert = arg[2], key = arg[3] })
local t = Transport.new { adapter = adapter, tls = tls, port = 1, protect = common.protect, tune_allocator = true }
local frames, bytes, cipher, finished = 0, 0, "?", false
local server, conn
local deadline = uv.new_timer()

local function stop()
  if server then server.close() end
  if not deadline:is_closing() then deadline:close() end
  if conn then conn:close("stopping") end
  t:close()
  adapter.shutdown()
end

server = assert(t:listen("127.0.0.1", 0, function(c)
  if conn then return c:bye("full", "one connection only") end
  conn = c
  deadline:start(600000, 0, function() fail("no end within 10 minutes") end)
  c.handlers = {
    on_hello = function(cc) cipher = cc:info().cipher end,
    on_message = function(cc, typ, payload)
      if typ ~= 0x20 or #payload ~= PAYLOAD then
        error(("a frame of type 0x%02x and %d bytes, expected 0x20 and %d"):format(typ, #payload, PAYLOAD))
      end
      frames = frames + 1
      bytes = bytes + #payload + 5
      if frames == N then assert(cc:send(0x21, "done") ~= nil, "cannot reply") end
    end,
    on_close = function(_, info)
      finished = frames == N
      if not finished then fail(("closed after %d of %d frames: %s"):format(frames, N, info.reason)) end
      uv.stop()
    end,
  }
end))
io.stdout:write(server.port, "\n")
io.stdout:flush()
deadline:start(30000, 0, function() fail("nobody connected within 30 s") end)

uv.run()
stop()
uv.run() -- let closing handles finish before the process exits
if common.failure() or not finished then
  io.stderr:write("transport_peer: ", common.failure() or "stopped early", "\n")
  os.exit(1)
end
io.stdout:write(("done %d %d %s %d %d\n"):format(frames, bytes, cipher, status("VmHWM"), status("RssAnon")))
io.stdout:flush()
