-- spec/tools/flooder.lua HOST PORT COUNT MODE SECONDS: holds COUNT TCP
-- connections to HOST:PORT that never finish a TLS handshake, for at most
-- SECONDS. MODE "silent" sends nothing; "drip" sends one byte of a TLS
-- record header every 5 s. A connection the node closes is opened again
-- (at most 20 * COUNT connections in all). Prints "holding N" once N
-- connections are up, and "done" at the end. HOST must be a loopback
-- address: this is a test tool, it refuses any other target.
local uv = require "luv"
local host, port, count, mode, seconds = arg[1], tonumber(arg[2]), tonumber(arg[3]), arg[4], tonumber(arg[5])
assert(host:match("^127%.") or host == "::1", "the flooder only targets loopback")
local up, opened, connected, budget = 0, 0, 0, 20 * count
local socks = {}
local said = false

local function open_one()
  if opened >= budget then return end
  opened = opened + 1
  local s = uv.new_tcp()
  s:connect(host, port, function(err)
    if err then
      if not s:is_closing() then s:close() end
      return
    end
    up = up + 1
    connected = connected + 1
    socks[s] = true
    if not said and connected >= count then
      said = true
      io.stdout:write("holding ", up, "\n")
      io.stdout:flush()
    end
    s:read_start(function(rerr, data)
      if rerr or data == nil then
        socks[s] = nil
        up = up - 1
        if not s:is_closing() then s:close() end
        open_one()
      end
    end)
  end)
end

for _ = 1, count do open_one() end
local drip = uv.new_timer()
if mode == "drip" then
  local bytes = { "\22", "\3", "\1", "\2", "\0" } -- a handshake record, slowly
  local i = 0
  drip:start(5000, 5000, function()
    i = i % #bytes + 1
    for s in pairs(socks) do s:write(bytes[i]) end
  end)
end
local stop = uv.new_timer()
stop:start(seconds * 1000, 0, function()
  drip:close()
  stop:close()
  for s in pairs(socks) do if not s:is_closing() then s:close() end end
  io.stdout:write("done\n")
  io.stdout:flush()
end)
uv.run()
