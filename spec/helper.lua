-- spec/helper.lua - what specs share: temporary directories, running
-- commands, the raw LevelDB tool, hex.
local H = {}

H.root = (function()
  local p = io.popen("pwd")
  local d = p:read("*l")
  p:close()
  return d
end)()

--- Runs a shell command; returns its output (stdout and stderr) and
-- whether it exited 0.
function H.run(cmd)
  local p = io.popen("(" .. cmd .. ") 2>&1")
  local out = p:read("*a")
  local ok = p:close()
  return out, ok == true
end

local dirs = {}

--- A fresh, empty temporary directory, removed by H.cleanup().
function H.tmpdir()
  local out = H.run("mktemp -d /tmp/odo-spec.XXXXXX")
  local d = out:gsub("%s+$", "")
  dirs[#dirs + 1] = d
  return d
end

function H.cleanup()
  for i = #dirs, 1, -1 do
    os.execute("rm -rf '" .. dirs[i] .. "'")
    dirs[i] = nil
  end
end

function H.hex(s)
  return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

function H.unhex(h)
  return (h:gsub("..", function(x) return string.char(tonumber(x, 16)) end))
end

--- Runs build/tools/ldb (raw LevelDB access behind the store's back).
function H.ldb(...)
  local args = { H.root .. "/build/tools/ldb" }
  for _, a in ipairs({ ... }) do args[#args + 1] = "'" .. a .. "'" end
  return H.run(table.concat(args, " "))
end

--- Every raw record of a closed store as {key=bytes, value=bytes}.
function H.records(dir)
  local out, ok = H.ldb("list", dir)
  assert(ok, out)
  local recs = {}
  for k, v in out:gmatch("(%x+) (%x*)\n") do
    recs[#recs + 1] = { key = H.unhex(k), value = H.unhex(v) }
  end
  return recs
end

--- SHA-256 by the openssl command, an implementation independent of ours.
function H.sha256(bytes)
  local f = os.tmpname()
  local fh = assert(io.open(f, "wb"))
  fh:write(bytes)
  fh:close()
  local out = H.run("openssl dgst -sha256 -binary '" .. f .. "' | od -An -tx1 | tr -d ' \\n'")
  os.remove(f)
  return H.unhex(out)
end

--- The documented event encoding (docs/STORAGE.md), built independently.
function H.encode_event(rev, ts, typ, data)
  return string.pack(">I8I8s1s4", rev, ts, typ, data)
end

-- ---- driving a loop ---------------------------------------------------------

--- Runs luv's loop until cond() is true or `timeout_ms` passed (default
-- 10000, multiplied by ODO_SLOW under sanitizers); returns cond().
function H.luv_until(cond, timeout_ms)
  local uv = require "luv"
  local deadline = uv.now() + (timeout_ms or 10000) * H.slow
  local wake = uv.new_timer()
  wake:start(5, 5, function() end) -- never block longer than 5 ms
  while not cond() and uv.now() < deadline do
    uv.run("once")
    uv.update_time()
  end
  wake:close()
  uv.run("nowait")
  return not not cond()
end

H.slow = tonumber(os.getenv("ODO_SLOW")) or 1

--- Handles of luv's default loop that are still active (after a spec has
-- closed everything, there should be none).
function H.active_handles()
  local uv = require "luv"
  uv.run("nowait")
  local list = {}
  uv.walk(function(h)
    if not h:is_closing() and h:is_active() then list[#list + 1] = tostring(h) end
  end)
  return list
end

--- A node for specs: errors raised in callbacks are collected in
-- `node.errors` (specs assert there are none) instead of printed.
function H.node(opts)
  local odo = require "odo"
  opts = opts or {}
  opts.dir = opts.dir or H.tmpdir()
  if opts.node_id == nil and not opts.tls then opts.node_id = "node-a" end
  if opts.node_id == false then opts.node_id = nil end
  local errors = {}
  opts.on_error = opts.on_error or function(e) errors[#errors + 1] = e end
  local node, err = odo.node(opts)
  assert(node, err)
  node.errors = errors
  return node
end

--- Quick swarm timings for specs on the in-memory adapter.
H.FAST = {
  handshake_timeout_ms = 3000,
  heartbeat_interval_ms = 2000,
  heartbeat_timeout_ms = 4000,
  purgatory_ms = 60000,
  tick_ms = 500,
  backoff = { 500, 1000, 2000 },
  backoff_jitter = 0,
}

--- A copy of a with b's entries on top.
function H.merge(a, b)
  local t = {}
  for k, v in pairs(a) do t[k] = v end
  for k, v in pairs(b or {}) do t[k] = v end
  return t
end

--- Node i of an in-memory network `net`, listening on 10.0.0.i:4000 with
-- certificate `tls`; opts: dir, peers, policy (on top of H.FAST), on_error.
function H.net_node(net, i, tls, opts)
  opts = opts or {}
  return H.node {
    dir = opts.dir or H.tmpdir(),
    node_id = false,
    tls = tls,
    listen = opts.listen or ("10.0.0." .. i .. ":4000"),
    peers = opts.peers,
    adapter = net,
    policy = H.merge(H.FAST, opts.policy),
    on_error = opts.on_error,
  }
end

--- Nodes 1..#links on the simulated network, node i dialling the nodes
-- links[i] names (H.net_node's addresses): make(i, peers) makes node i.
function H.link_nodes(links, make)
  local ns = {}
  for i, to in ipairs(links) do
    local peers = {}
    for _, j in ipairs(to) do peers[#peers + 1] = "10.0.0." .. j .. ":4000" end
    ns[i] = make(i, peers)
  end
  return ns
end

--- Fails the test (an error, from an after_each too) when a node of
-- `nodes` reported an error (its `errors`, H.node); returns nodes.
function H.check_errors(nodes)
  for i, n in ipairs(nodes) do
    if n.errors and #n.errors > 0 then
      local lines = {}
      for k, e in ipairs(n.errors) do lines[k] = tostring(e) end
      error(("node %d reported errors:\n%s"):format(i, table.concat(lines, "\n")), 0)
    end
  end
  return nodes
end

--- Closes the nodes, then fails as H.check_errors does.
function H.close_checked(nodes)
  for _, n in ipairs(nodes) do n:close() end
  return H.check_errors(nodes)
end

--- The world the in-memory specs share: a PKI with `count` node
-- certificates (pki.n[i], named prefix .. i), a fresh simulated network
-- per test, and the nodes a test made (append to w.nodes), closed and
-- settled after it. Hand w.setup, w.before_each and w.after_each to busted.
function H.memory_world(prefix, count)
  local memory = require "odo.adapter.memory"
  local w = { nodes = {} }
  function w.setup()
    w.pki = H.pki(H.tmpdir())
    w.pki.n = {}
    for i = 1, count do w.pki.n[i] = w.pki.node(prefix .. i) end
  end
  function w.before_each()
    w.net = memory.new(1000000)
    w.nodes = {}
  end
  --- Closes the test's nodes, lets the network settle; returns the nodes.
  function w.after_each()
    for _, n in ipairs(w.nodes) do n:close() end
    w.net.run_until(function() return false end, 50)
    return w.nodes
  end
  --- Node i of the test (H.net_node with the world's key i, or opts.tls),
  -- closed by after_each; opts: peers, policy (over `defaults`), dir,
  -- on_error.
  function w.node(i, opts, defaults)
    opts = opts or {}
    local n = H.net_node(w.net, i, opts.tls or w.pki.n[i], { dir = opts.dir, peers = opts.peers,
      policy = H.merge(defaults or {}, opts.policy), on_error = opts.on_error })
    w.nodes[#w.nodes + 1] = n
    return n
  end
  --- after_each, then fails the test when a node reported an error (its
  -- `errors`, H.node): hand it to busted's after_each as it is.
  function w.after_each_checked()
    return H.check_errors(w.after_each())
  end
  return w
end

--- Events of n for append: {type = "t", data = prefix .. i}.
function H.events(n, prefix)
  local t = {}
  for i = 1, n do t[i] = { type = "t", data = (prefix or "e") .. i } end
  return t
end

-- ---- processes --------------------------------------------------------------------

--- n distinct free TCP ports on 127.0.0.1 (bound at once, then released).
-- Below the kernel's ephemeral range (ip_local_port_range): a port
-- taken from that range (bind to port 0) can be handed meanwhile to any
-- outgoing connection on the machine, and was ("address already in use"
-- when a node started on it). A random one below it is only at risk
-- from another spec picking the same number within the moment.
local function ephemeral_low()
  local f = io.open("/proc/sys/net/ipv4/ip_local_port_range")
  local low = f and tonumber(f:read("*n"))
  if f then f:close() end
  return low or 32768
end

function H.free_ports(n)
  local uv = require "luv"
  local high = ephemeral_low() - 1
  local low = math.max(1024, high - 20000)
  local socks, ports, taken = {}, {}, {}
  while #ports < n do
    local port = math.random(low, high)
    local s = uv.new_tcp()
    if not taken[port] and s:bind("127.0.0.1", port) and s:listen(1, function() end) then
      taken[port] = true
      socks[#socks + 1] = s
      ports[#ports + 1] = port
    else
      s:close()
    end
  end
  for _, s in ipairs(socks) do s:close() end
  uv.run("nowait")
  return ports
end

--- Starts a shell command in the background with its output in `log`;
-- returns its pid.
function H.spawn(cmd, log)
  local out = H.run(("(%s) >'%s' 2>&1 & echo $!"):format(cmd, log))
  return tonumber(out:match("(%d+)"))
end

function H.kill(pid, sig)
  os.execute(("kill -%s %d 2>/dev/null"):format(sig or "TERM", pid))
end

function H.alive(pid)
  return os.execute(("kill -0 %d 2>/dev/null"):format(pid)) == true
end

--- Polls cond() every 50 ms of real time until it is true or timeout_ms
-- (times ODO_SLOW) passed; returns cond()'s last value as a boolean.
function H.wait(cond, timeout_ms)
  local uv = require "luv"
  local deadline = uv.hrtime() + (timeout_ms or 10000) * H.slow * 1e6
  while not cond() do
    if uv.hrtime() > deadline then return not not cond() end
    uv.sleep(50)
  end
  return true
end

--- Writes text to path (replacing it); returns path.
function H.write_file(path, text)
  local fh = assert(io.open(path, "wb"))
  fh:write(text)
  fh:close()
  return path
end

function H.read_file(path)
  local fh = io.open(path, "rb")
  if not fh then return "" end
  local s = fh:read("a")
  fh:close()
  return s
end

--- The core under test as an absolute LUA_CPATH entry (ODO_CPATH, by
-- default build/?.so).
function H.core_cpath()
  local cpath = os.getenv("ODO_CPATH") or "build/?.so"
  if cpath:sub(1, 1) ~= "/" then cpath = H.root .. "/" .. cpath:gsub("^%./", "") end
  return cpath
end

--- Runs Lua source `code` in a child lua5.4 (from directory `cwd`, default
-- the checkout) with lua/ and the core under test on its paths; returns
-- its output (stdout and stderr) and its exit status (a crash by signal N
-- is 128 + N, as the shell says).
function H.lua_child(code, cwd)
  local file = H.write_file(os.tmpname(), code)
  local p = io.popen(("cd '%s' && LUA_PATH='%s/lua/?.lua;%s/lua/?/init.lua;;' LUA_CPATH='%s;;' lua5.4 '%s' 2>&1")
    :format(cwd or H.root, H.root, H.root, H.core_cpath(), file))
  local out = p:read("*a")
  local _, _, status = p:close()
  os.remove(file)
  return out, status
end

--- bin/odo with the core under test (ODO_CPATH passes through).
H.odo = H.root .. "/bin/odo"

--- Starts `odo run` in the background: `opts` = {dir, port, certs =
-- {ca, cert, key}, peers = {port...}, config = path}; returns
-- {pid, dir, log, port}. Its log is dir .. ".log".
function H.odo_run(opts)
  local args = { ("'%s' run --dir '%s' --listen 127.0.0.1:%d --ca '%s' --cert '%s' --key '%s'")
    :format(H.odo, opts.dir, opts.port, opts.certs.ca, opts.certs.cert, opts.certs.key) }
  if opts.config then args[#args + 1] = ("--config '%s'"):format(opts.config) end
  for _, p in ipairs(opts.peers or {}) do args[#args + 1] = "--peer 127.0.0.1:" .. p end
  for _, a in ipairs(opts.args or {}) do args[#args + 1] = "'" .. a .. "'" end -- opts.args: more arguments
  local p = { dir = opts.dir, log = opts.dir .. ".log", port = opts.port }
  p.pid = H.spawn(table.concat(args, " "), p.log)
  return p
end

--- Runs `odo CMD ...` (arguments quoted); returns output and success.
function H.odo_cmd(...)
  local args = { "'" .. H.odo .. "'" }
  for _, a in ipairs({ ... }) do args[#args + 1] = "'" .. tostring(a) .. "'" end
  return H.run(table.concat(args, " "))
end

--- The world of a describe block whose tests start `odo run` nodes: a PKI
-- with node certificate n1 (w.pki, in w.tmp), and the processes a test
-- started (append pids to w.procs), killed after it. Hand w.setup,
-- w.before_each and w.after_each to busted (and H.cleanup to teardown).
-- w.run(dir, config) starts a node in dir, waits until it runs, and
-- returns the process (see H.odo_run) and the node id.
function H.odo_world()
  local w = {}
  function w.setup()
    w.tmp = H.tmpdir()
    w.pki = H.pki(w.tmp)
    w.pki.n1 = w.pki.node("n1")
  end
  function w.before_each() w.procs = {} end
  function w.after_each()
    for _, pid in ipairs(w.procs) do H.kill(pid, "KILL") end
  end
  function w.run(dir, config)
    local p = H.odo_run { dir = dir, port = H.free_ports(1)[1], certs = w.pki.n1, config = config }
    w.procs[#w.procs + 1] = p.pid
    assert(H.wait(function() local st = H.status(dir); return st and st.running end), H.read_file(p.log))
    return p, H.status(dir).id
  end
  return w
end

--- The JSON of `odo status --dir DIR --json`, or nil.
function H.status(dir)
  local out, ok = H.run(("'%s' status --dir '%s' --json 2>/dev/null"):format(H.odo, dir))
  if not ok then return nil end
  local okj, t = pcall(require("cjson").decode, out)
  return okj and t or nil
end

-- ---- certificates ------------------------------------------------------------

local function sh(cmd)
  local out, ok = H.run(cmd)
  assert(ok, cmd .. "\n" .. out)
  return out
end
--- Runs a shell command that must succeed; returns its output.
H.sh = sh

--- Test certificates made with the openssl command line in `dir`:
--   an Ed25519 CA with nodes signed by it (`pki.node(name)` makes one),
--   an untrusted CA with node "mallory", an expired node,
--   seed-style self-signed RSA certificates sharing one subject
--   (`pki.seed(name, bits)`), and bundles of them.
-- Each node is `{ca=, cert=, key=}`, ready for core.tls_context.
function H.pki(dir)
  local p = { dir = dir }
  local function ca(name)
    sh(("cd '%s' && openssl req -x509 -newkey ed25519 -nodes -keyout %s.key -out %s.pem -subj /CN=%s -days 30 2>&1")
      :format(dir, name, name, name))
    return dir .. "/" .. name .. ".pem"
  end
  p.ca = ca("ca")
  p.evil_ca = ca("evil")
  local function signed(name, by, days)
    sh(("cd '%s' && openssl req -newkey ed25519 -nodes -keyout %s.key -out %s.csr -subj /CN=%s 2>&1"
      .. " && openssl x509 -req -in %s.csr -CA %s.pem -CAkey %s.key -CAcreateserial -out %s.pem -days %d 2>&1")
      :format(dir, name, name, name, name, by, by, name, days))
    return { ca = p.ca, cert = dir .. "/" .. name .. ".pem", key = dir .. "/" .. name .. ".key" }
  end
  function p.node(name) return signed(name, "ca", 30) end
  p.mallory = signed("mallory", "evil", 30)
  p.mallory.ca = p.evil_ca
  p.expired = signed("expired", "ca", -1)
  --- A self-signed RSA certificate made as the seed's README does, with
  -- the subject `openssl req` gives when its questions are answered with
  -- the defaults.
  function p.seed(name, bits)
    sh(("cd '%s' && openssl genrsa -out %s.key %d 2>&1 && openssl req -new -key %s.key -out %s.csr"
      .. " -subj '/C=AU/ST=Some-State/O=Internet Widgits Pty Ltd' 2>&1"
      .. " && openssl x509 -req -days 365 -in %s.csr -signkey %s.key -out %s.pem 2>&1")
      :format(dir, name, bits or 2048, name, name, name, name, name))
    return { cert = dir .. "/" .. name .. ".pem", key = dir .. "/" .. name .. ".key" }
  end
  --- A bundle file of the given certificates (the seed's CA file).
  function p.bundle(name, nodes)
    local files = {}
    for _, n in ipairs(nodes) do files[#files + 1] = "'" .. n.cert .. "'" end
    sh(("cat %s > '%s/%s'"):format(table.concat(files, " "), dir, name))
    for _, n in ipairs(nodes) do n.ca = dir .. "/" .. name end
    return dir .. "/" .. name
  end
  return p
end

--- Moves ciphertext between two core sessions until neither has output;
-- returns the events each one saw.
function H.pump(a, b, now)
  local ea, eb = {}, {}
  for _ = 1, 100 do
    local moved = false
    local o = a:output()
    if o then
      a:written(#o)
      for _, e in ipairs(b:feed(o, now or 0)) do eb[#eb + 1] = e end
      moved = true
    end
    o = b:output()
    if o then
      b:written(#o)
      for _, e in ipairs(a:feed(o, now or 0)) do ea[#ea + 1] = e end
      moved = true
    end
    if not moved then break end
  end
  return ea, eb
end

--- The first event named `name` in a list, or nil.
function H.find_event(events, name)
  for _, e in ipairs(events) do
    if e.event == name then return e end
  end
end

--- A --config file's text for `odo run` processes: swarm timings
-- shortened so process specs stay quick.
H.QUICK_RUN_CONFIG = [[
return { policy = {
  tick_ms = 100,
  heartbeat_interval_ms = 300,
  heartbeat_timeout_ms = 1200,
  handshake_timeout_ms = 1500,
  backoff = { 200, 400, 800, 800, 800, 800, 800, 800, 800, 800, 800, 800, 800, 800 },
  backoff_cap_ms = 800,
} }
]]

--- The node id of the `odo run` serving `dir`, once its status says it
-- runs (nil after 20 s).
function H.running_id(dir)
  local id
  H.wait(function()
    local st = H.status(dir)
    id = st and st.running and st.id
    return id
  end, 20000)
  return id
end

-- ---- worlds of `odo run` processes -------------------------------------------

--- The world of a describe block whose tests start `odo run` processes
-- for several nodes: a PKI in w.tmp (w.pki; w.certs(name) makes node
-- `name`'s certificate once), a --config file w.config holding `config`
-- (default H.QUICK_RUN_CONFIG; false: none), and the processes started
-- (w.procs). Hand w.setup and w.teardown to busted, and w.after_each
-- where each test's processes are to be stopped after it.
function H.odo_swarm(config)
  local w = { procs = {} }
  local started = 0
  function w.setup()
    w.tmp = H.tmpdir()
    w.pki = H.pki(w.tmp)
    if config ~= false then w.config = H.write_file(w.tmp .. "/fast.lua", config or H.QUICK_RUN_CONFIG) end
  end
  --- Node `name`'s certificate of the test CA (made on first use).
  function w.certs(name)
    w.pki[name] = w.pki[name] or w.pki.node(name)
    return w.pki[name]
  end
  --- Starts `odo run` for node `name` (see H.odo_run; by default in a
  -- fresh folder w.tmp/NAME-N, on a free port, with name's certificate
  -- and w.config); returns the process, with p.name.
  function w.start(name, opts)
    started = started + 1
    local o = H.merge({ dir = ("%s/%s-%d"):format(w.tmp, name, started), config = w.config }, opts)
    o.port = o.port or H.free_ports(1)[1]
    o.certs = o.certs or w.certs(name)
    local p = H.odo_run(o)
    p.name = name
    w.procs[#w.procs + 1] = p
    return p
  end
  --- w.start, then waits until the node runs; p.id is its node id.
  function w.run(name, opts)
    local p = w.start(name, opts)
    p.id = H.running_id(p.dir)
    assert(p.id, H.read_file(p.log))
    return p
  end
  --- Starts a shell command in the background (see H.spawn), stopped with
  -- the nodes; returns the process {pid, log}.
  function w.spawn(cmd, log)
    local p = { pid = H.spawn(cmd, log), log = log }
    w.procs[#w.procs + 1] = p
    return p
  end
  local function gone(p) return H.wait(function() return not H.alive(p.pid) end, 5000) end
  --- Sends process p each signal given (default KILL), waits (5 s at
  -- most) until it is gone and forgets it; returns whether it is gone.
  function w.stop(p, ...)
    local signals = select("#", ...) > 0 and { ... } or { "KILL" }
    for _, sig in ipairs(signals) do H.kill(p.pid, sig) end
    for i = #w.procs, 1, -1 do
      if w.procs[i] == p then table.remove(w.procs, i) end
    end
    return gone(p)
  end
  --- Sends every process each signal given (default KILL), then waits
  -- until they are gone.
  function w.stop_all(...)
    local signals = select("#", ...) > 0 and { ... } or { "KILL" }
    local procs = w.procs
    w.procs = {}
    for _, p in ipairs(procs) do
      for _, sig in ipairs(signals) do H.kill(p.pid, sig) end
    end
    for _, p in ipairs(procs) do gone(p) end
  end
  function w.after_each() w.stop_all() end
  function w.teardown()
    w.stop_all()
    H.cleanup()
  end
  return w
end

--- The entry of stream `id` in the status of the node in `dir`, or nil.
function H.stream_of(dir, id)
  local st = H.status(dir)
  for _, s in ipairs(st and st.streams or {}) do
    if s.id == id then return s end
  end
end

--- The last revision of stream `id` an in-process node `n` holds (0: none).
function H.node_last(n, id)
  local st = n.store:stream(id)
  return st and st.last or 0
end

--- The last revision of stream `id` the node in `dir` holds (0: none).
function H.last_of(dir, id)
  local s = H.stream_of(dir, id)
  return s and s.last or 0
end

--- A condition for H.wait: the node in `dir` holds stream `id` up to
-- revision `rev`, no more.
function H.holds(dir, id, rev)
  return function() return H.last_of(dir, id) == rev end
end

--- The logs of processes (each {log = path}), each under a line naming it.
function H.logs(procs)
  local out = {}
  for _, p in ipairs(procs) do out[#out + 1] = "== " .. p.log .. "\n" .. H.read_file(p.log) end
  return table.concat(out, "\n")
end

--- Runs `odo append --dir DIR [args...]` with `lines` (one event each) on
-- its standard input; returns its output and whether it succeeded.
function H.odo_append(dir, lines, args)
  local file = H.write_file(os.tmpname(), table.concat(lines, "\n") .. "\n")
  local cmd = { ("'%s' append --dir '%s'"):format(H.odo, dir) }
  for _, a in ipairs(args or {}) do cmd[#cmd + 1] = "'" .. a .. "'" end
  local out, ok = H.run(table.concat(cmd, " ") .. " < '" .. file .. "'")
  os.remove(file)
  return out, ok
end

--- `n` event lines prefix .. 1 to prefix .. n, for H.odo_append.
function H.lines(n, prefix)
  local t = {}
  for i = 1, n do t[i] = (prefix or "event ") .. i end
  return t
end

return H
