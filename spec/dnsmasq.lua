-- spec/dnsmasq.lua - a real dnsmasq for the DNS specs: on 127.0.0.1, on a
-- port chosen at run time, serving the zone swarm.test from its command
-- line only (names outside it are REFUSED). It runs under `timeout`, so
-- it never outlives a spec process that died; `stop_all` (call it in
-- after_each) kills every one still running, also after a failure.
local H = require "helper"

local M = {}

local running = {}

local function user()
  return (H.run("id -un"):gsub("%s+$", ""))
end

--- Starts dnsmasq. `opts`: `port` (default: a free one), `records`
-- (array of dnsmasq options: "--srv-host=...", "--host-record=..."),
-- `ttl` (seconds, default 2). Returns `{port, pid, log, stop}`; raises
-- when dnsmasq is missing or does not start (a spec needing it fails).
function M.start(opts)
  opts = opts or {}
  local out, found = H.run("command -v dnsmasq")
  assert(found, "dnsmasq is not installed (Debian: apt-get install dnsmasq-base): " .. out)
  for _ = 1, 5 do
    local port = opts.port or H.free_ports(1)[1]
    local log = os.tmpname()
    local args = {
      -- (not under the sanitizer runtime a sanitizer run preloads: dnsmasq hangs in it)
      "exec env -u LD_PRELOAD timeout --kill-after=5 900",
      "dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts",
      "--listen-address=127.0.0.1 --bind-interfaces --port=" .. port,
      "--local=/swarm.test/ --local-ttl=" .. (opts.ttl or 2),
      "--user=" .. user() .. " --pid-file= --log-facility=- --log-queries",
    }
    for _, r in ipairs(opts.records or {}) do args[#args + 1] = "'" .. r .. "'" end
    local d = { port = port, log = log }
    d.pid = H.spawn(table.concat(args, " "), log)
    running[d] = true
    function d.stop()
      if not running[d] then return end
      running[d] = nil
      H.kill(d.pid, "TERM")
      if not H.wait(function() return not H.alive(d.pid) end, 5000) then H.kill(d.pid, "KILL") end
      os.remove(d.log)
    end
    local up = H.wait(function()
      return H.read_file(log):find("started, version") ~= nil or not H.alive(d.pid)
    end, 10000)
    if up and H.alive(d.pid) then return d end
    local text = H.read_file(log)
    d.stop()
    -- a port taken between choosing and binding: choose again
    if opts.port or not text:find("Address already in use", 1, true) then
      error("dnsmasq did not start:\n" .. text)
    end
  end
  error("dnsmasq did not start: no free port after 5 tries")
end

--- Stops every dnsmasq still running.
function M.stop_all()
  for d in pairs(running) do d.stop() end
end

--- The dnsmasq options for SRV records of _odo._tcp.swarm.test: one per
-- `{target, port, priority, weight}`.
function M.srv(list)
  local out = {}
  for i, s in ipairs(list) do
    out[i] = ("--srv-host=_odo._tcp.swarm.test,%s,%d,%d,%d"):format(s[1], s[2], s[3] or 10, s[4] or 50)
  end
  return out
end

return M
