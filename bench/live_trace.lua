-- bench/live_trace.lua - where a live event's time goes, from the
-- source's append to the replica's handler (bench/sync.lua with
-- ODO_BENCH_LIVE_TRACE=DIR).
--
-- Each process of bench/sync_peer.lua wraps a few of the node's own
-- functions (nothing in lua/odo changes) and takes uv.hrtime() (the
-- machine's monotonic clock, shared by both processes) at each step:
--
--   source   append   node:append returns (the store's write, the
--                     catalogue and subscription notices)
--            sign     the deferred sign_heads starts (the loop's turn
--                     after the append), and ends (a signed head, then
--                     the pump of live batches)
--            flush    a flush to the live replica's connection starts,
--                     and ends: it has handed its TLS records to the
--                     socket (libuv writes at once when the kernel's
--                     buffer has room)
--   replica  read     the socket's read callback starts (the loop woke)
--                     for the read that brought the event's batch
--            handled  sync's on_message of that batch returns (decrypted,
--                     decoded, checked, queued for the commit queue's
--                     worker or written)
--            written  the loop starts collecting the worker's writes (its
--                     eventfd woke the loop); a batch written at once, in
--                     on_message, counts as written when it is handled
--            handler  the subscriber's handler runs
--
-- Each process writes its records to DIR (source.trace, replica-PID.trace)
-- when it quits; `breakdown(dir)` joins them on the send time each live
-- event carries and gives, per step, p50 / p99 / max of the time spent in
-- it, and the mean of each step over the slowest 1 % of events (what the
-- tail is made of). Per thread of each process, `schedstat` reads
-- /proc/PID/task/*/schedstat: time on a CPU and time runnable but waiting
-- for one (run-queue wait), over a phase.
local uv = require "luv"

local M = {}

local hr = uv.hrtime
local EVENTS = 0x14 -- the EVENTS message's type (docs/PROTOCOL.md)

-- ---- recording, in the peer processes ------------------------------------------------

-- The source: appends (t_sent, t_appended, rev), sign_heads calls (start,
-- end) and flushes to each peer (peer id, end).
function M.source(node, transport_mod)
  local rec = { appends = {}, signs = {}, writes = {} }
  local append = node.append
  node.append = function(self, ...)
    local sent = hr()
    local last, err, name = append(self, ...)
    local ev = select(2, ...)
    if type(ev) == "table" and ev.type == "live" then
      rec.appends[#rec.appends + 1] = { tonumber(ev.data), hr(), last or 0, sent }
    end
    return last, err, name
  end
  local engine = node.sync.engine
  local sign = engine.sign_heads
  node.sync.engine = setmetatable({ sign_heads = function(_, ...)
    local t0 = hr()
    local n, more = sign(engine, ...)
    if n and n > 0 then rec.signs[#rec.signs + 1] = { t0, hr() } end
    return n, more
  end }, { __index = function(_, k)
    local f = engine[k]
    if type(f) ~= "function" then return f end
    return function(_, ...) return f(engine, ...) end
  end })
  local Conn = transport_mod.Connection
  local flush = Conn.flush
  Conn.flush = function(conn)
    local before, t0 = conn.transport.bytes_out, hr()
    flush(conn)
    if conn.transport.bytes_out ~= before and conn.peer_id then
      rec.writes[#rec.writes + 1] = { conn.peer_id, t0, hr() }
    end
  end
  return function(path)
    local f = assert(io.open(path, "w"))
    for _, a in ipairs(rec.appends) do f:write(("A %d %d %d\n"):format(a[1], a[2], a[3])) end
    for _, s in ipairs(rec.signs) do f:write(("S %d %d\n"):format(s[1], s[2])) end
    for _, w in ipairs(rec.writes) do f:write(("W %s %d %d\n"):format(w[1], w[2], w[3])) end
    f:close()
  end
end

-- The replica: per EVENTS message the start of the read that brought it
-- and the end of its handling; each collection of the worker's writes
-- (start, and the batches' last revisions it reported); each delivery
-- (revision, t_sent, time).
function M.replica(node, transport_mod, stream)
  local rec = { handled = {}, written = {}, delivered = {} }
  local Conn = transport_mod.Connection
  local on_read = Conn._on_read
  local read_at = 0
  Conn._on_read = function(conn, err, data)
    read_at = hr()
    return on_read(conn, err, data)
  end
  local sync = node.sync
  local on_message = sync.on_message
  sync.on_message = function(self, p, t, payload)
    rec.in_message = true
    on_message(self, p, t, payload)
    rec.in_message = false
    -- EVENTS of the live stream: str8 stream | u64be first | ...
    if t == EVENTS and payload:sub(2, 1 + payload:byte(1)) == stream then
      rec.handled[#rec.handled + 1] = { read_at, hr(), string.unpack(">I8", payload, 2 + payload:byte(1)) }
    end
  end
  local done = node._commits_done
  node._commits_done = function(self)
    rec.collect_at = hr()
    return done(self)
  end
  node:on("replicated", function(id, last)
    -- (written at once, in on_message: -1, the message's end counts)
    if id == stream then rec.written[#rec.written + 1] = { last, rec.in_message and -1 or rec.collect_at or 0 } end
  end)
  return {
    delivered = function(ev, now)
      rec.delivered[#rec.delivered + 1] = { ev.rev, tonumber(ev.data), now }
    end,
    dump = function(path)
      local f = assert(io.open(path, "w"))
      f:write("I ", node.id, "\n")
      for _, h in ipairs(rec.handled) do f:write(("H %d %d %d\n"):format(h[1], h[2], h[3])) end
      for _, w in ipairs(rec.written) do f:write(("C %d %d\n"):format(w[1], w[2])) end
      for _, d in ipairs(rec.delivered) do f:write(("D %d %d %d\n"):format(d[1], d[2], d[3])) end
      f:close()
    end,
  }
end

-- ---- run-queue wait per thread ---------------------------------------------------------

--- Per thread of process pid: {tid = {cpu_ns, wait_ns, slices}} from
-- /proc/PID/task/TID/schedstat (nil when the process is gone).
function M.schedstat(pid)
  pid = tostring(math.tointeger(pid) or pid)
  local tasks = uv.fs_scandir("/proc/" .. pid .. "/task")
  if not tasks then return nil end
  local out = {}
  while true do
    local tid = uv.fs_scandir_next(tasks)
    if not tid then break end
    local f = io.open(("/proc/%s/task/%s/schedstat"):format(pid, tid))
    if f then
      local cpu, wait, n = f:read("a"):match("^(%d+) (%d+) (%d+)")
      f:close()
      if cpu then out[tid] = { tonumber(cpu), tonumber(wait), tonumber(n) } end
    end
  end
  return out
end

--- The change of each thread's figures between two `schedstat` readings,
-- as lines "<what> tid <tid>: on a CPU <ms> ms, waiting for one <ms> ms,
-- <n> slices" (the main thread first, then by CPU time).
function M.sched_lines(what, pid, before, after)
  local rows = {}
  for tid, b in pairs(after or {}) do
    local a = (before or {})[tid] or { 0, 0, 0 }
    rows[#rows + 1] = { tid = tid, cpu = (b[1] - a[1]) / 1e6, wait = (b[2] - a[2]) / 1e6, n = b[3] - a[3] }
  end
  local main = tostring(math.tointeger(pid) or pid)
  table.sort(rows, function(x, y)
    if (x.tid == main) ~= (y.tid == main) then return x.tid == main end
    return x.cpu > y.cpu
  end)
  local lines = {}
  for _, r in ipairs(rows) do
    if r.cpu > 0 or r.tid == main then
      lines[#lines + 1] = ("%s %s %s: on a CPU %.1f ms, waiting for one %.1f ms, %d slices (%.3f ms wait a slice)")
        :format(what, r.tid == main and "main" or "thread", r.tid, r.cpu, r.wait, r.n, r.n > 0 and r.wait / r.n or 0)
    end
  end
  return lines
end

-- ---- the breakdown ------------------------------------------------------------------------

local function read_lines(path)
  local out = {}
  local f = io.open(path)
  if not f then return out end
  for l in f:lines() do
    local fields = {}
    for x in l:gmatch("%S+") do fields[#fields + 1] = x end
    out[#out + 1] = fields
  end
  f:close()
  return out
end

-- The first element of sorted array `list` (by key k) at or after t, from
-- index *from (advanced: the events are taken in order).
local function first_after(list, k, t, cursor)
  local i = cursor.i or 1
  while list[i] and list[i][k] < t do i = i + 1 end
  cursor.i = i
  return list[i]
end

-- The last element of sorted array `list` (by key k) at or below v, from
-- index cursor.i on (advanced: the events are taken in order).
local function last_upto(list, k, v, cursor)
  local i = cursor.i or 1
  while list[i + 1] and list[i + 1][k] <= v do i = i + 1 end
  cursor.i = i
  return list[i] and list[i][k] <= v and list[i] or nil
end

local STEPS = { "append", "to_sign", "sign_pump", "write", "wire_to_read", "decrypt_check_queue",
  "worker_to_loop", "to_handler" }

--- Joins the source's trace and one replica's (files) for the live events
-- sent between t0 and t1 (ns; nil: all). Returns lines to print.
function M.breakdown(source_trace, replica_trace, t0, t1)
  local handled, collected, delivered, peer_id = {}, {}, {}, nil
  for _, l in ipairs(read_lines(replica_trace)) do
    if l[1] == "I" then peer_id = l[2]
    elseif l[1] == "H" then handled[#handled + 1] = { tonumber(l[2]), tonumber(l[3]), tonumber(l[4]) }
    elseif l[1] == "C" then collected[#collected + 1] = { tonumber(l[2]), tonumber(l[3]) }
    elseif l[1] == "D" then delivered[#delivered + 1] = { rev = tonumber(l[2]), sent = tonumber(l[3]),
      at = tonumber(l[4]) } end
  end
  local appends, signs, writes = {}, {}, {}
  for _, l in ipairs(read_lines(source_trace)) do
    if l[1] == "A" then appends[tonumber(l[2])] = { appended = tonumber(l[3]), rev = tonumber(l[4]) }
    elseif l[1] == "S" then signs[#signs + 1] = { tonumber(l[2]), tonumber(l[3]) }
    elseif l[1] == "W" and l[2] == peer_id then writes[#writes + 1] = { tonumber(l[3]), tonumber(l[4]) } end
  end
  table.sort(delivered, function(a, b) return a.rev < b.rev end)
  local rows = {}
  local cs, cw, ch, cc = {}, {}, {}, {}
  for _, d in ipairs(delivered) do
    local a = appends[d.sent]
    if a and (not t0 or (d.sent >= t0 and d.sent <= t1)) then
      local s = first_after(signs, 2, a.appended, cs)
      local w = s and first_after(writes, 1, s[2], cw)
      local h = last_upto(handled, 3, d.rev, ch) -- the batch that brought it
      local c = first_after(collected, 1, d.rev, cc) -- the collection that reported this revision
      if s and w and h and c then
        local steps = {
          append = a.appended - d.sent,
          to_sign = s[1] - a.appended,
          sign_pump = w[1] - s[1],
          write = w[2] - w[1],
          wire_to_read = h[1] - w[2], -- (a read may start before the write call returns)
          decrypt_check_queue = h[2] - h[1],
          worker_to_loop = c[2] < 0 and 0 or c[2] - h[2],
          to_handler = d.at - (c[2] < 0 and h[2] or c[2]),
        }
        local ok = true
        for _, k in ipairs(STEPS) do
          if k ~= "wire_to_read" and steps[k] < 0 then ok = false end -- matched the wrong record: skipped
        end
        if ok then
          steps.total = d.at - d.sent
          rows[#rows + 1] = steps
        end
      end
    end
  end
  local lines = { ("live_breakdown: %d of %d events matched (ms: p50 / p99 / max; mean over all, which add up"
    .. " to the total's, and over the slowest 1 %%)"):format(#rows, #delivered) }
  if #rows == 0 then return lines end
  table.sort(rows, function(a, b) return a.total < b.total end)
  local tail = {}
  for i = math.max(1, math.floor(#rows * 0.99)), #rows do tail[#tail + 1] = rows[i] end
  local steps = { table.unpack(STEPS) }
  steps[#steps + 1] = "total"
  for _, k in ipairs(steps) do
    local v, sum, all = {}, 0, 0
    for i, r in ipairs(rows) do
      v[i] = r[k] / 1e6
      all = all + v[i]
    end
    for _, r in ipairs(tail) do sum = sum + r[k] / 1e6 end
    table.sort(v)
    lines[#lines + 1] = ("live_step %-20s %7.3f / %7.3f / %8.3f   mean %7.3f, slowest 1%%: %7.3f"):format(k,
      v[math.max(1, math.ceil(#v * 0.5))], v[math.max(1, math.ceil(#v * 0.99))], v[#v], all / #rows, sum / #tail)
  end
  return lines
end

-- ---- a traced phase, for bench/sync.lua ---------------------------------------------------

--- Lines gathered by the phases so far, to print at the end.
M.lines = {}

--- Starts a traced live phase `what` of the processes `procs` ({name =
-- pid}): their schedstat now. Returns a phase with `stop()` (at the end of
-- the phase: their schedstat then, as lines) and `join(dir, replica_pid)`
-- (once the processes quit and wrote their traces in dir: the breakdown
-- of the events sent within the phase).
function M.phase(what, procs)
  local before = {}
  for name, pid in pairs(procs) do before[name] = M.schedstat(pid) end
  local ph = { t0 = hr() }
  function ph.stop()
    ph.t1 = hr()
    for name, pid in pairs(procs) do
      for _, l in ipairs(M.sched_lines(("sched %s %s"):format(what, name), pid, before[name], M.schedstat(pid))) do
        M.lines[#M.lines + 1] = l
      end
    end
  end
  function ph.join(dir, replica_pid)
    local lines = M.breakdown(dir .. "/source.trace", ("%s/replica-%d.trace"):format(dir, replica_pid), ph.t0, ph.t1)
    for i, l in ipairs(lines) do M.lines[#M.lines + 1] = (i == 1 and "%s " or "%s   "):format(what) .. l end
  end
  return ph
end

return M
