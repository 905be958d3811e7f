-- examples/telemetry.lua - a device and a late replica, over mutual TLS on
-- loopback. The device writes sensor readings to a named stream; a Lua
-- reducer keeps count, min, max and mean per sensor in the stream's
-- snapshots; compaction then drops the events a snapshot covers, so the
-- device's log stays short. A replica that joins afterwards starts from
-- the device's snapshot, folds the few events after it with the same
-- reducer, and prints the figures, which must equal the device's.
--
--   lua5.4 examples/telemetry.lua [READINGS]     (from the checkout, after make)
--
-- Exits 0 when the replica's figures match, 1 otherwise; the temporary
-- folder (keys included) is removed on every way out.
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath
local odo = require "odo"
local core = require "odo.core"
local uv = require "luv"

local READINGS = tonumber(arg[1]) or 5000
local SENSORS = { "temp", "humidity", "pressure", "wind" }

-- ---- the reducer: per sensor {n, min, max, sum}, kept in the snapshot -------------

local stats = {
  name = "sensor-stats",
  init = function() return {} end,
  -- events are readings "sensor=value"; the state is plain numbers, so
  -- the default codec (JSON) stores it
  reduce = function(state, events)
    for _, ev in ipairs(events) do
      local sensor, value = ev.data:match("^(%w+)=(%S+)$")
      value = tonumber(value)
      if ev.type == "reading" and value then
        local s = state[sensor]
        if not s then
          s = { n = 0, sum = 0, min = value, max = value }
          state[sensor] = s
        end
        s.n, s.sum = s.n + 1, s.sum + value
        s.min, s.max = math.min(s.min, value), math.max(s.max, value)
      end
    end
    return state
  end,
}

local function figures(state)
  local lines = {}
  for _, name in ipairs(SENSORS) do
    local s = state[name]
    if s then
      lines[#lines + 1] = ("  %-9s n=%-5d min=%-7.2f max=%-7.2f mean=%.2f"):format(
        name, s.n, s.min, s.max, s.sum / s.n)
    end
  end
  return table.concat(lines, "\n")
end

-- reading i: which sensor, and a value that wanders deterministically
local function reading(i)
  local sensor = SENSORS[(i - 1) % #SENSORS + 1]
  local value = 10 * ((i - 1) % #SENSORS + 1) + ((i * 7919) % 997) / 100
  return { type = "reading", data = ("%s=%.1f"):format(sensor, value) }
end

-- ---- set-up and the way out -----------------------------------------------------

local dir = os.tmpname()
os.remove(dir)
local nodes = {}
local function finish(code, why)
  for _, n in ipairs(nodes) do pcall(n.close, n) end
  require("odo.adapter.luv").shutdown()
  os.execute("rm -rf '" .. dir .. "'")
  if why then io.stderr:write("telemetry failed: " .. tostring(why) .. "\n") end
  os.exit(code)
end
local function guard(fn)
  return function(...)
    local ok, err = xpcall(fn, debug.traceback, ...)
    if not ok then finish(1, err) end
  end
end

local function tls_for(name)
  local c = { ca = dir .. "/ca.pem", cert = dir .. "/" .. name .. ".pem", key = dir .. "/" .. name .. ".key" }
  assert(core.cert_make_node { ca_cert = c.ca, ca_key = dir .. "/ca.key", cert = c.cert, key = c.key, name = name })
  return c
end

local device, sensors, replica
guard(function()
  assert(core.mkdirs(dir, 448))
  assert(core.cert_make_ca { cert = dir .. "/ca.pem", key = dir .. "/ca.key" })
  device = assert(odo.node {
    dir = dir .. "/device", tls = tls_for("device"), listen = "127.0.0.1:0",
    policy = {
      reducer = stats,
      snapshot_every_events = 1000, -- a snapshot every 1000 readings...
      compact_after_events = 10,    -- ...the events it covers dropped 10 events later
      tick_ms = 100,
    },
    on_error = function(e) finish(1, e) end,
  })
  nodes[#nodes + 1] = device
  sensors = device:stream_id("sensors")
end)()

-- ---- the device writes, a slice per loop turn ---------------------------------------

print(("device %s writes %d readings of %d sensors to %s"):format(
  device.id:sub(1, 8), READINGS, #SENSORS, sensors:sub(1, 8) .. "/sensors"))
local written = 0
local writer = uv.new_idle()
writer:start(guard(function()
  local batch = {}
  for i = written + 1, math.min(written + 200, READINGS) do batch[#batch + 1] = reading(i) end
  written = written + #batch
  assert(device:append(sensors, batch))
  if written >= READINGS then writer:stop(); writer:close() end
end))

-- ---- then a replica joins late and starts from the snapshot -----------------------

local function start_replica(snap_rev)
  print(("a replica joins; the device's snapshot is at revision %d"):format(snap_rev))
  replica = assert(odo.node {
    dir = dir .. "/replica", tls = tls_for("replica"), listen = "127.0.0.1:0",
    peers = { "127.0.0.1:" .. device.listen.port },
    on_error = function(e) finish(1, e) end,
  })
  nodes[#nodes + 1] = replica
  local state, from_snapshot, events = nil, nil, 0
  replica:subscribe(sensors, 1, function(batch)
    if batch.snapshot then
      from_snapshot = batch.snapshot.rev
      state = require("cjson").decode(batch.snapshot.data)
      print(("replica: started from the snapshot at revision %d (%d bytes)"):format(
        from_snapshot, #batch.snapshot.data))
      return
    end
    state = stats.reduce(state or stats.init(), batch)
    events = events + #batch
    if batch[#batch].rev < READINGS then return end
    print(("replica: then %d events, up to revision %d"):format(events, batch[#batch].rev))
    print("replica's figures:\n" .. figures(state))
    -- the same reducer over everything the device wrote, for comparison
    local all = {}
    for i = 1, READINGS do all[i] = reading(i) end
    local want = figures(stats.reduce({}, all))
    if figures(state) ~= want then return finish(1, "figures differ; expected:\n" .. want) end
    if not from_snapshot then return finish(1, "the replica did not start from a snapshot") end
    print("the figures match every reading the device wrote")
    finish(0)
  end)
end

local deadline = uv.now() + 60000
local more = false
local watch = uv.new_timer()
watch:start(100, 100, guard(function()
  if uv.now() > deadline then return finish(1, "not done within 60 s") end
  if written < READINGS then return end
  local st = device.store:stream(sensors)
  if not more and st.snapshot >= READINGS - READINGS % 1000 then
    -- a few readings after the last snapshot: its compaction falls due
    -- (compact_after_events), and the replica will have events to fold
    more = true
    for i = READINGS + 1, READINGS + 20 do assert(device:append(sensors, reading(i))) end
    READINGS, written = READINGS + 20, READINGS + 20
  elseif more and st.first > st.snapshot then
    print(("device: %d readings; its log holds events %d..%d, compaction dropped the %d that the snapshot covers")
      :format(st.last, st.first, st.last, st.first - 1))
    watch:stop()
    watch:close()
    start_replica(st.snapshot)
  end
end))

guard(uv.run)()
finish(1, "the loop ended early")
