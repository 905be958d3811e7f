-- spec/dht_netns.lua - network namespaces for specs whose nodes bind 0.0.0.0
-- or multicast (the DHT): `ip netns add` with only loopback up, a unique
-- name (tag, pid, count), processes started inside it, and `close` that
-- kills every process left in it and deletes it (call it from after_each,
-- so it runs when a test fails too). Needs root (CI runs as root).
local H = require "helper"
local uv = require "luv"

local N = {}
local count = 0

--- A new namespace: {name, exec(cmd) -> the command run inside it,
-- spawn(cmd, log) -> pid (cmd exec'd: the pid is the command's own),
-- close()}. Raises when it cannot be made.
function N.new(tag)
  count = count + 1
  local name = ("odo-%s-%d-%d"):format(tag, uv.os_getpid(), count)
  local out, ok = H.run(("ip netns add %s && ip -n %s link set lo up"):format(name, name))
  assert(ok, "cannot make network namespace " .. name .. " (root and iproute2 needed): " .. out)
  local ns = { name = name, pids = {} }
  function ns.exec(cmd)
    return ("ip netns exec %s %s"):format(name, cmd)
  end
  function ns.spawn(cmd, log)
    local pid = H.spawn("exec " .. ns.exec(cmd), log)
    ns.pids[#ns.pids + 1] = pid
    return pid
  end
  -- every process in the namespace, by the kernel's account
  local function inside()
    local list = {}
    for pid in H.run("ip netns pids " .. name):gmatch("%d+") do list[#list + 1] = tonumber(pid) end
    return list
  end
  function ns.close()
    if ns.closed then return end
    ns.closed = true
    for _, pid in ipairs(inside()) do H.kill(pid, "TERM") end
    H.wait(function() return #inside() == 0 end, 5000)
    for _, pid in ipairs(inside()) do H.kill(pid, "KILL") end
    H.wait(function() return #inside() == 0 end, 5000)
    for _, pid in ipairs(ns.pids) do H.kill(pid, "KILL") end
    H.run("ip netns del " .. name)
  end
  return ns
end

return N
