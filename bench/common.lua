-- bench/common.lua - what the benchmark scripts share. A script finds it
-- from its own path, before anything else:
--
--   local root = arg[0]:match("^(.*)/bench/[^/]*$") or "."
--   package.path = root .. "/?.lua;" .. package.path
--   local common = require "bench.common"
--
-- Requiring it points package.path at the repository's lua/ and
-- package.cpath at ODO_CPATH (where odo/core.so is, default build/?.so in
-- the repository), so that odo's modules can be required after it.
local M = {}

-- the repository: this file is <root>/bench/common.lua
local root = (select(2, ...) or ""):match("^(.*)/bench/common%.lua$") or "."
local cpath = os.getenv("ODO_CPATH")
if cpath == nil or cpath == "" then cpath = root .. "/build/?.so" end
package.path = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. package.path
package.cpath = cpath .. ";" .. package.cpath
M.root = root

local uv = require "luv"

-- ---- the shell and temporary folders ----------------------------------------

-- Runs cmd in the shell; returns its output (stdout and stderr), raises
-- with that output if it fails.
function M.shell(cmd)
  local p = io.popen("(" .. cmd .. ") 2>&1")
  local out = p:read("a")
  if not p:close() then error(("%s failed:\n%s"):format(cmd, out), 0) end
  return out
end

-- s quoted for the shell.
function M.q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local tmpdirs = {} -- the temporary folders made, to remove at the end

-- A new temporary folder, for remove_tmpdirs() to remove.
function M.tmpdir()
  local d = M.shell("mktemp -d /tmp/odo-bench.XXXXXX"):match("[^\n]+")
  tmpdirs[#tmpdirs + 1] = d
  return d
end

-- Removes the temporary folders made so far, and all in them.
function M.remove_tmpdirs()
  for _, d in ipairs(tmpdirs) do os.execute("rm -rf " .. M.q(d)) end
  tmpdirs = {}
end

-- ---- statistics ---------------------------------------------------------------

-- The p-quantile (0 < p <= 1) of a sorted list, nearest rank.
function M.percentile(sorted, p) return sorted[math.max(1, math.ceil(#sorted * p))] end

-- ---- the loop -------------------------------------------------------------------

local failure -- the first error raised in a callback

-- Records err as the run's failure (the first one is kept) and stops the
-- loop.
function M.fail(err)
  failure = failure or tostring(err)
  uv.stop()
end

-- The failure recorded, or nil.
function M.failure() return failure end

-- Calls fn(...); an error it raises goes to fail(), with a traceback.
function M.protect(fn, ...)
  local ok, err = xpcall(fn, debug.traceback, ...)
  if not ok then M.fail(err) end
end

-- Runs the loop until cond() holds; raises on a callback's error or after
-- ms milliseconds.
function M.run_until(cond, ms, what)
  local timer, late = uv.new_timer(), false
  timer:start(ms, 0, function() late = true end)
  while not cond() and not failure and not late do uv.run("once") end
  timer:close()
  if failure then error(failure, 0) end
  if late then error(("%s did not finish within %d s"):format(what, ms // 1000), 0) end
end

-- Returns a function that takes chunks of a byte stream and calls fn(line)
-- for each complete line in them, without its "\n".
function M.line_splitter(fn)
  local partial = ""
  return function(data)
    partial = partial .. data
    for line in partial:gmatch("([^\n]*)\n") do fn(line) end
    partial = partial:match("[^\n]*$")
  end
end

-- Closes the luv adapter and every handle left, and lets them finish
-- closing: the last thing before a process exits.
function M.close_loop()
  require("odo.adapter.luv").shutdown()
  uv.walk(function(h) if not h:is_closing() then h:close() end end)
  uv.run()
end

-- ---- processes ---------------------------------------------------------------------

local children = {} -- live processes: [handle] = process

-- Starts a process; its stdout lines go to `lines`, its stderr to ours;
-- with `input`, p.send(line) writes to its stdin.
-- Returns {pid, lines, exited = {code, signal} once it has exited}.
function M.spawn(file, args, env, input)
  local p = { lines = {} }
  local out = uv.new_pipe(false)
  local inp = input and uv.new_pipe(false) or nil
  local handle, pid = uv.spawn(file, { args = args, env = env, stdio = { inp, out, 2 } }, function(code, signal)
    p.exited = { code = code, signal = signal }
  end)
  if not handle then
    out:close()
    if inp then inp:close() end
    error(("cannot start %s: %s"):format(file, tostring(pid)), 0)
  end
  p.handle, p.pid = handle, math.tointeger(pid)
  children[handle] = p
  local feed = M.line_splitter(function(line) p.lines[#p.lines + 1] = line end)
  out:read_start(function(err, data)
    if err or not data then
      if not out:is_closing() then out:close() end
      p.eof = true
      return
    end
    feed(data)
  end)
  function p.send(line) assert(inp:write(line .. "\n")) end
  function p.close_input()
    if inp and not inp:is_closing() then inp:close() end
  end
  return p
end

-- The first stdout line of p matching pattern (its captures), waiting for
-- it at most ms milliseconds; raises if p exits first.
function M.expect(p, pattern, what, ms)
  local found
  local function scan()
    for _, l in ipairs(p.lines) do
      local c = table.pack(l:match(pattern))
      if c[1] ~= nil then
        found = c
        return true
      end
    end
    return p.exited ~= nil and p.eof
  end
  M.run_until(scan, ms, what)
  if not found then
    error(("%s: the process ended (exit %d, signal %d) without a line matching %q: %s"):format(what,
      p.exited.code, p.exited.signal, pattern, table.concat(p.lines, " | ")), 0)
  end
  return table.unpack(found, 1, found.n)
end

-- Waits at most ms milliseconds for the process to exit and for its stdout
-- to end; raises unless it exited with status 0.
function M.reap(p, what, ms)
  M.run_until(function() return p.exited and p.eof end, ms, what)
  children[p.handle] = nil
  p.close_input()
  if not p.handle:is_closing() then p.handle:close() end
  if p.exited.code ~= 0 or p.exited.signal ~= 0 then
    error(("%s failed (exit %d, signal %d): %s"):format(what, p.exited.code, p.exited.signal,
      table.concat(p.lines, " | ")), 0)
  end
end

-- Stops process p (a server the bench started): SIGTERM, then SIGKILL
-- after ms milliseconds; waits for it to exit, whatever its status.
function M.stop(p, ms)
  if not p.exited then pcall(p.handle.kill, p.handle, "sigterm") end
  local ok = pcall(M.run_until, function() return p.exited ~= nil end, ms, "stopping a process")
  if not ok and not p.exited then
    pcall(p.handle.kill, p.handle, "sigkill")
    M.run_until(function() return p.exited ~= nil end, ms, "killing a process")
  end
  children[p.handle] = nil
  p.close_input()
  if not p.handle:is_closing() then p.handle:close() end
end

-- One measurement of n live events between a source and a replica
-- process speaking bench/sync_peer.lua's commands (the replica expects
-- them, then the source appends them, one per millisecond); waits at most
-- ms milliseconds. Returns {count, p50, p99, max, mean} (ms).
function M.live_phase(source, replica, n, ms)
  replica.send("expect " .. n)
  M.expect(replica, "^expecting " .. n .. "$", "the replica's expect", 60000)
  source.send("live " .. n)
  local count, p50, p99, max, mean = M.expect(replica, "^live (%d+) (%S+) (%S+) (%S+) (%S+)$", "live events", ms)
  for i, l in ipairs(replica.lines) do -- the next phase looks for its own line
    if l:match("^live ") or l:match("^expecting ") then replica.lines[i] = "(seen) " .. l end
  end
  return { count = tonumber(count), p50 = tonumber(p50), p99 = tonumber(p99), max = tonumber(max),
    mean = tonumber(mean) }
end

-- The environment of a peer script (bench/*_peer.lua): ours, with
-- LUA_PATH and LUA_CPATH pointing at the repository and ODO_CPATH.
function M.peer_env()
  local env = {}
  for k, v in pairs(uv.os_environ()) do
    if k ~= "LUA_PATH" and k ~= "LUA_CPATH" and k ~= "LUA_PATH_5_4" and k ~= "LUA_CPATH_5_4" then
      env[#env + 1] = k .. "=" .. v
    end
  end
  env[#env + 1] = ("LUA_PATH=%s/lua/?.lua;%s/lua/?/init.lua;;"):format(root, root)
  env[#env + 1] = ("LUA_CPATH=%s;;"):format(cpath)
  return env
end

-- Runs main() protected; then, even after a failure, stops the processes
-- still running, closes the loop and removes the temporary folders (with
-- keep, says where they are instead). On a failure, reports it as
-- "<name>: <error>" and exits 1.
function M.main(name, main, keep)
  local ok, err = xpcall(main, debug.traceback)
  for handle, p in pairs(children) do
    if not handle:is_closing() then
      pcall(handle.kill, handle, "sigterm")
      p.close_input()
      handle:close()
    end
  end
  M.close_loop()
  if keep then
    for _, d in ipairs(tmpdirs) do io.stderr:write(name, ": kept ", d, "\n") end
  else
    M.remove_tmpdirs()
  end
  if not ok then
    io.stderr:write(name, ": ", tostring(err), "\n")
    os.exit(1)
  end
end

-- ---- /proc ---------------------------------------------------------------------------

-- A field of /proc/<pid>/status in kB ("RssAnon", "VmHWM"), or nil; pid
-- may be "self".
function M.proc_kb(pid, field)
  local f = pid and io.open("/proc/" .. pid .. "/status")
  if not f then return nil end
  local kb = tonumber(f:read("a"):match(field .. ":%s*(%d+)"))
  f:close()
  return kb
end

-- The largest RssAnon (kB) of the process get_pid() names, sampled every
-- 20 ms until the returned function is called; that returns it (-1 if
-- there was none). RssAnon leaves out LevelDB's mapped files.
function M.rss_sampler(get_pid)
  local peak = -1
  local function sample()
    local kb = M.proc_kb(get_pid(), "RssAnon")
    if kb and kb > peak then peak = kb end
  end
  local timer = uv.new_timer()
  timer:start(0, 20, sample)
  return function()
    sample()
    timer:close()
    return peak
  end
end

-- CPU seconds (user + system) of process pid so far: its main thread, and
-- its other threads (LevelDB's compaction); nil if it cannot be read.
-- USER_HZ is 100 on Linux.
function M.thread_cpu(pid)
  pid = tostring(math.tointeger(pid) or pid)
  local tasks = uv.fs_scandir("/proc/" .. pid .. "/task")
  if not tasks then return nil end
  local main, other = 0, 0
  while true do
    local tid = uv.fs_scandir_next(tasks)
    if not tid then break end
    local f = io.open(("/proc/%s/task/%s/stat"):format(pid, tid))
    if f then
      -- after "pid (comm) ": state, then fields 4..13; utime and stime are 14, 15
      local fields = {}
      for x in (f:read("a"):match("%) (.*)$") or ""):gmatch("%S+") do fields[#fields + 1] = x end
      f:close()
      local t = ((tonumber(fields[12]) or 0) + (tonumber(fields[13]) or 0)) / 100
      if tid == pid then main = main + t else other = other + t end
    end
  end
  return main, other
end

-- Waits until process pid used no CPU for SETTLE_MS (0.5 s), at most
-- SETTLE_MAX_MS (30 s): in its threads but the main one with which
-- "other" (LevelDB's compaction after a catch-up), in all of them with
-- "all". Returns the seconds waited.
local SETTLE_MS, SETTLE_MAX_MS = 500, 30000
function M.settle(pid, which)
  local t0, last, quiet_since = uv.hrtime(), -1, uv.hrtime()
  local done = false
  local timer = uv.new_timer()
  timer:start(0, 50, function()
    local main, other = M.thread_cpu(pid)
    local used = which == "all" and (main or 0) + (other or 0) or other
    local now = uv.hrtime()
    if used ~= last then last, quiet_since = used, now end
    if now - quiet_since >= SETTLE_MS * 1e6 or now - t0 >= SETTLE_MAX_MS * 1e6 then done = true end
  end)
  local ok, err = pcall(M.run_until, function() return done end, SETTLE_MAX_MS + 5000, "settling")
  timer:close()
  if not ok then error(err, 0) end
  return (uv.hrtime() - t0) / 1e9
end

-- ---- certificates ----------------------------------------------------------------------

-- Makes, in dir, an Ed25519 CA and a certificate signed by it for each of
-- names; returns { [name] = { ca =, cert =, key = } } (file paths), as
-- core.tls_context and odo.node take them.
function M.make_pki(dir, names)
  local pki = {}
  M.shell(("cd %s && openssl req -x509 -newkey ed25519 -nodes -keyout ca.key -out ca.pem"
    .. " -subj /CN=bench-ca -days 2"):format(M.q(dir)))
  for _, name in ipairs(names) do
    M.shell(("cd %s && openssl req -newkey ed25519 -nodes -keyout %s.key -subj /CN=%s"
      .. " | openssl x509 -req -CA ca.pem -CAkey ca.key -CAcreateserial -out %s.pem -days 2")
      :format(M.q(dir), name, name, name))
    pki[name] = { ca = dir .. "/ca.pem", cert = dir .. "/" .. name .. ".pem", key = dir .. "/" .. name .. ".key" }
  end
  return pki
end

-- ---- the C baseline of the store ---------------------------------------------------------

-- Runs bench/store_baseline.c's binary on the LevelDB folder db (N events,
-- MODE chain, plain or scan); returns its events/s.
function M.baseline_rate(binary, db, n, mode)
  local p = io.popen(("%s %s %d %s"):format(binary, db, n, mode))
  local out = p:read("*a")
  assert(p:close(), "baseline failed: " .. out)
  local count, secs = out:match("(%d+) ([%d.]+)")
  return tonumber(count) / tonumber(secs)
end

-- ---- an odo source -------------------------------------------------------------------------

-- Opens a node in the new folder dir with tls, appends n events of
-- `bytes` bytes to each of its streams (`streams` of them: its own stream
-- when 1, else named streams "s1".."sN"), `batch` events per append and
-- without sync, waits until every stream's last head is signed, closes it.
-- Returns the node id and the events/s appended and signed.
function M.fill_node(dir, tls, n, bytes, batch, streams, timeout_ms)
  local odo = require "odo"
  local node = assert(odo.node { dir = dir, tls = tls, sync = false, on_error = M.fail, tune_allocator = true })
  local ids = {}
  for i = 1, streams do ids[i] = streams == 1 and node.id or node:stream_id("s" .. i) end
  local data = ("x"):rep(bytes)
  local full = {}
  for i = 1, batch do full[i] = { type = "bench", data = data } end
  local t0 = uv.hrtime()
  for _, id in ipairs(ids) do
    local left = n
    while left > 0 do
      local b = left < batch and table.move(full, 1, left, 1, {}) or full
      assert(node:append(id, b))
      left = left - #b
    end
  end
  local appended = n * streams / ((uv.hrtime() - t0) / 1e9)
  local store, unsigned = node.store, #ids
  M.run_until(function()
    while unsigned > 0 and store:head_find(ids[unsigned], store:stream(ids[unsigned]).last) ~= nil do
      unsigned = unsigned - 1
    end
    return unsigned == 0
  end, timeout_ms, "signing the source's heads")
  local signed = n * streams / ((uv.hrtime() - t0) / 1e9)
  local id = node.id
  node:close()
  return id, appended, signed
end

return M
