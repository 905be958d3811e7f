-- bench/control.lua - `odo tail` and `odo append` through a running node's
-- control socket, against the store read directly, in one invocation.
--
-- With an `odo run` node: starts `odo tail -f` on the node's stream, then
-- appends N lines (ODO_BENCH_EVENTS, default 500,000) with one `odo
-- append` from a file; measures the append's rate, the rate at which
-- `tail -f` printed them, how far behind it fell (sampled every 100 ms by
-- asking the node its stream's last revision), and how long after the
-- append it had printed the last one. Then reads the whole stream with
-- `odo tail` through the node, stops the node, and reads it again with
-- `odo tail` from the store directly (best of two runs each). Ends with
-- `tail_node_per_s`, `tail_direct_per_s` and their `ratio` (goal: >= 0.5),
-- and `tail_f_per_s` against `append_per_s` (goal: keeping up).
package.path = (arg[0]:match("^(.*)/bench/[^/]*$") or ".") .. "/?.lua;" .. package.path
local common = require "bench.common" -- and with it the paths to odo's modules
local Control = require "odo.control"
local uv = require "luv"

local N = tonumber(os.getenv("ODO_BENCH_EVENTS")) or 500000
local odo = common.root .. "/bin/odo"
local q = common.q

local function secs(t0) return (uv.hrtime() - t0) / 1e9 end

-- A command line run by sh (for its redirections), as a process.
local function sh(cmd) return common.spawn("/bin/sh", { "-c", cmd }, common.peer_env()) end

-- Runs a shell command to its end; returns the seconds it took.
local function timed(cmd, what)
  local t0 = uv.hrtime()
  common.reap(sh(cmd), what, 600000)
  return secs(t0)
end

local function file_size(path)
  local st = uv.fs_stat(path)
  return st and st.size or 0
end

common.main("bench-control", function()
  -- the conditions waited for are polled: wake the loop every 20 ms
  local wake = uv.new_timer()
  wake:start(20, 20, function() end)
  local tmp = common.tmpdir()
  common.shell(("%s cert ca --out %s/pki"):format(q(odo), q(tmp)))
  local id = common.shell(("%s cert node --ca %s/pki --out %s/pki/n1"):format(q(odo), q(tmp), q(tmp))):match("%x+")
  -- the input: N lines of 60 bytes
  local input = tmp .. "/input"
  local f = assert(io.open(input, "wb"))
  local pad = ("x"):rep(50)
  for i = 1, N do f:write(("%09d "):format(i), pad, "\n") end
  f:close()
  local dir = tmp .. "/node"
  local function start_node()
    local p = sh(("exec %s run --dir %s --listen 127.0.0.1:0 --ca %s/pki/ca.pem --cert %s/pki/n1/node.pem"
      .. " --key %s/pki/n1/node.key 2>%s"):format(q(odo), q(dir), q(tmp), q(tmp), q(tmp), q(tmp .. "/node.log")))
    common.run_until(function()
      local a = Control.request(dir .. "/odo.sock", { cmd = "status" }, nil, 1000)
      return a and a.ok
    end, 20000, "the node's start")
    return p
  end
  local function last_rev()
    local a = Control.request(dir .. "/odo.sock", { cmd = "status" }, nil, 5000)
    local st = a and a.ok and a.result.streams[1]
    return st and st.last or 0
  end
  local node = start_node()

  -- tail -f while one bulk append runs
  local follow_out = tmp .. "/follow.out"
  local line_bytes = #('{"stream":"' .. id .. '","rev":,"ts":1796510167106,"type":"text","data":""}\n') + 60
  local follow = sh(("exec %s tail --dir %s %s -f >%s 2>/dev/null"):format(q(odo), q(dir), id, q(follow_out)))
  common.run_until(function() return uv.fs_stat(follow_out) ~= nil end, 10000, "tail -f's start")
  local t0 = uv.hrtime()
  local append = sh(("exec %s append --dir %s <%s"):format(q(odo), q(dir), q(input)))
  local behind, t_append, t_follow = 0, nil, nil
  local sampler = uv.new_timer()
  sampler:start(100, 100, function()
    common.protect(function()
      local appended = last_rev()
      -- lines printed, from the file's size: the revisions' digits differ
      -- by a few bytes a line, so this is an estimate to a few percent
      local printed = file_size(follow_out) / line_bytes
      behind = math.max(behind, appended - printed)
    end)
  end)
  common.run_until(function()
    if append.exited and not t_append then t_append = secs(t0) end
    if not t_follow and file_size(follow_out) > 0 then
      local fh = io.open(follow_out, "rb")
      fh:seek("end", -200)
      local tailtext = fh:read("a")
      fh:close()
      if tailtext:find(('"data":"%09d '):format(N), 1, true) then t_follow = secs(t0) end
    end
    return t_append and t_follow
  end, 600000, "the append and tail -f")
  sampler:close()
  common.reap(append, "odo append", 10000)
  follow.handle:kill("sigint")
  common.run_until(function() return follow.exited end, 10000, "tail -f's end on SIGINT")
  assert(follow.exited.code == 130, "tail -f did not exit 130 on SIGINT")

  -- whole-stream reads: through the node, then from the store directly
  local through = math.huge
  for _ = 1, 2 do
    through = math.min(through, timed(("exec %s tail --dir %s %s >/dev/null"):format(q(odo), q(dir), id), "tail"))
  end
  node.handle:kill("sigterm")
  common.run_until(function() return node.exited end, 20000, "the node's stop")
  local direct = math.huge
  for _ = 1, 2 do
    direct = math.min(direct, timed(("exec %s tail --dir %s %s >/dev/null"):format(q(odo), q(dir), id), "tail"))
  end
  wake:close()
  print(("events: %d (lines of 60 bytes)"):format(N))
  print(("append_per_s: %.0f (one odo append through the node, %.2f s)"):format(N / t_append, t_append))
  print(("tail_f_per_s: %.0f (done %.2f s after the append began, %.2f s after it ended)"):format(
    N / t_follow, t_follow, t_follow - t_append))
  print(("tail_f_max_behind: %d events (sampled every 100 ms)"):format(math.max(0, math.floor(behind))))
  print(("tail_direct_per_s: %.0f (%.2f s)"):format(N / direct, direct))
  print(("tail_node_per_s: %.0f (%.2f s)"):format(N / through, through))
  print(("ratio: %.2f (through the node / direct; goal >= 0.5)"):format(direct / through))
end, os.getenv("ODO_BENCH_KEEP"))
