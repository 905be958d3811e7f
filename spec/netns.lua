-- spec/netns.lua - a pair of network namespaces joined by a veth pair,
-- for specs that multicast (mDNS) and so may not touch the host's network.
-- Names carry the spec's pid; `destroy` kills every process left in them
-- and deletes both (the veth pair goes with them), also after a failure.
local N = {}

local function sh(cmd)
  local p = io.popen("(" .. cmd .. ") 2>&1")
  local out = p:read("*a")
  local ok = p:close()
  return out, ok == true
end

local function must(cmd)
  local out, ok = sh(cmd)
  assert(ok, cmd .. "\n" .. out)
  return out
end

local function pid()
  local fh = assert(io.open("/proc/self/stat"))
  local n = fh:read("*l"):match("^(%d+)")
  fh:close()
  return n
end

local count = 0

--- Makes two namespaces, `a` (10.77.0.1) and `b` (10.77.0.2), each with
-- its end of a veth pair up with multicast on and a route for 224.0.0.0/4
-- through it (and loopback up). Returns {a = {name, ip}, b = {...},
-- exec(side, cmd), destroy()}.
function N.pair(tag)
  count = count + 1
  local id = pid() .. "-" .. count
  local pair = {
    a = { name = ("odo-%s-%s-a"):format(tag, id), ip = "10.77.0.1", dev = "va" },
    b = { name = ("odo-%s-%s-b"):format(tag, id), ip = "10.77.0.2", dev = "vb" },
  }
  -- interface names are per namespace: made in the first, moved at once
  function pair.destroy()
    for _, side in ipairs({ pair.a, pair.b }) do
      if side.made then
        for _ = 1, 50 do
          local pids = sh(("ip netns pids '%s'"):format(side.name))
          if not pids:match("%d") then break end
          for p in pids:gmatch("%d+") do os.execute("kill -KILL " .. p .. " 2>/dev/null") end
          os.execute("sleep 0.1")
        end
        sh(("ip netns del '%s'"):format(side.name))
        side.made = false
      end
    end
  end
  local ok, err = pcall(function()
    for _, side in ipairs({ pair.a, pair.b }) do
      must(("ip netns add '%s'"):format(side.name))
      side.made = true
    end
    must(("ip -n '%s' link add va type veth peer name vb netns '%s'"):format(pair.a.name, pair.b.name))
    for _, side in ipairs({ pair.a, pair.b }) do
      local n = side.name
      must(("ip -n '%s' addr add %s/24 dev %s"):format(n, side.ip, side.dev))
      must(("ip -n '%s' link set %s multicast on up"):format(n, side.dev))
      must(("ip -n '%s' link set lo up"):format(n))
      must(("ip -n '%s' route add 224.0.0.0/4 dev %s"):format(n, side.dev))
    end
  end)
  if not ok then
    pair.destroy()
    error(err, 0)
  end
  return pair
end

--- The command line that runs `cmd` in namespace `side`.
function N.exec(side, cmd)
  return ("ip netns exec '%s' %s"):format(side.name, cmd)
end

--- Whether namespace `name` exists.
function N.exists(name)
  local out = sh("ip netns list")
  for line in out:gmatch("[^\n]+") do
    if line:match("^(%S+)") == name then return true end
  end
  return false
end

return N
