-- scripts/compat-smoke.lua - the Lua side on Lua 5.1 (and LuaJIT), with the
-- core built against the 5.1 headers (build/lua5.1/odo/core.so, made by
-- `make check-compat`, which runs this with `lua5.1`) or, under LuaJIT,
-- against LuaJIT 2.1's (build/luajit/odo/core.so, `make check-luajit`). Loads every module;
-- checks the compat helpers; a store: append, read back, verify; a node on
-- luv: a subscription, group commit, a coroutine, the control socket; two
-- nodes replicating over mutual TLS; the
-- JSON of events (binary data as base64, UTF-8 as text); and bin/odo under
-- the same interpreter: --help, cert, offline append/tail/status/verify,
-- and `odo run` answering status/append/tail through its control socket.
-- Silent but for one summary line; exits 1 with the failure otherwise.
-- luacheck: std min

local root = arg and arg[0] and arg[0]:match("^(.*)/scripts/[^/]*$") or "."
package.path = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. package.path
-- LuaJIT (`make check-luajit`) loads the core built against its own headers
local core_dir = rawget(_G, "jit") and "luajit" or "lua5.1"
package.cpath = root .. "/build/" .. core_dir .. "/?.so;" .. package.cpath

local LUA = arg and arg[-1] or "lua5.1" -- the interpreter running this, for bin/odo
local uv = require "luv"
local cjson = require "cjson"

local tmp = os.tmpname()
os.remove(tmp)
local checks = 0
local run_proc -- `odo run`, while it runs

-- Counts a check; raises with `what` (and the details) when ok is false.
local function check(ok, what, ...)
  checks = checks + 1
  if not ok then
    local details = {}
    for i = 1, select("#", ...) do details[i] = tostring((select(i, ...))) end
    error(what .. (#details > 0 and (": " .. table.concat(details, " ")) or ""), 2)
  end
  return ok
end

local function cleanup()
  if run_proc and not run_proc:is_closing() then
    run_proc:kill("sigkill")
    run_proc:close()
  end
  os.execute("rm -rf '" .. tmp .. "'")
end

-- Runs luv's loop until cond() holds or ms pass; returns cond().
local function run_until(cond, ms)
  local deadline = uv.now() + ms
  local wake = uv.new_timer()
  wake:start(5, 5, function() end)
  while not cond() and uv.now() < deadline do
    uv.run("once")
    uv.update_time()
  end
  wake:close()
  uv.run("nowait")
  return cond()
end

-- `bin/odo ARGS...` under this interpreter: its output (stdout and
-- stderr) and exit status.
local function odo_cmd(...)
  local args = { "'" .. LUA .. "'", "'" .. root .. "/bin/odo'" }
  for _, a in ipairs({ ... }) do args[#args + 1] = "'" .. a .. "'" end
  local p = io.popen(table.concat(args, " ") .. " 2>&1; echo \"exit $?\"")
  local out = p:read("*a")
  p:close()
  local text, status = out:match("^(.-)exit (%d+)%s*$")
  return text, tonumber(status)
end

-- package.searchpath, which Lua 5.1 lacks: the file require would load.
local function searchpath(name, path)
  for template in path:gmatch("[^;]+") do
    local file = template:gsub("%?", (name:gsub("%.", "/")))
    local f = io.open(file, "rb")
    if f then
      f:close()
      return file
    end
  end
end

local core_path = searchpath("odo.core", package.cpath)

local function json_lines(text)
  local t = {}
  for line in text:gmatch("[^\n]+") do t[#t + 1] = cjson.decode(line) end
  return t
end

local function smoke()
  check(_VERSION == "Lua 5.1", "compat-smoke runs under Lua 5.1 or LuaJIT, not", _VERSION)
  check(core_path and core_path:find("build/" .. core_dir .. "/odo/core.so", 1, true),
    "the core built for " .. core_dir .. " first", core_path, "(make check-compat or make check-luajit builds it)")

  -- ---- every module loads ----------------------------------------------------
  local modules = {}
  local function scan(dir, prefix)
    local req = assert(uv.fs_scandir(dir))
    while true do
      local name, kind = uv.fs_scandir_next(req)
      if not name then break end
      if kind == "directory" then scan(dir .. "/" .. name, prefix .. "." .. name)
      elseif name == "init.lua" then modules[#modules + 1] = prefix
      elseif name:match("%.lua$") then modules[#modules + 1] = prefix .. "." .. name:sub(1, -5) end
    end
  end
  scan(root .. "/lua/odo", "odo")
  table.sort(modules)
  for _, m in ipairs(modules) do check(require(m) ~= nil, "require", m) end
  for _, m in ipairs({ "odo", "odo.control", "odo.policy", "odo.cli", "odo.cli.append", "odo.cli.cert",
    "odo.cli.run", "odo.cli.status", "odo.cli.tail", "odo.cli.verify" }) do
    check(package.loaded[m] ~= nil, "module not found", m)
  end
  local odo, Control, compat = require "odo", require "odo.control", require "odo.compat"

  -- ---- the compat helpers -----------------------------------------------------
  check(compat.tointeger(3) == 3 and compat.tointeger("7") == 7, "tointeger of whole numbers")
  check(compat.tointeger(3.5) == nil and compat.tointeger(nil) == nil and compat.tointeger(1 / 0) == nil
    and compat.tointeger(0 / 0) == nil, "tointeger of the rest is nil")
  check(select(2, compat.xpcall(function(a, b, c) return c or a + b end, debug.traceback, 1, 2)) == 3
    and select(2, compat.xpcall(function(_, _, c) return c end, debug.traceback, nil, nil, "c")) == "c",
    "xpcall passes the arguments")
  local ok, err = compat.xpcall(function(x) error("boom " .. x, 0) end, function(e) return "handled " .. e end, 1)
  check(not ok and err == "handled boom 1", "xpcall's handler", ok, err)
  for _, s in ipairs({ "", "ascii", "h\195\169llo \226\156\147 \240\157\132\158", "\0nul", "\244\143\191\191" }) do
    check(compat.utf8_valid(s), "valid UTF-8", ("%q"):format(s))
  end
  for _, s in ipairs({ "\255", "\128", "\192\128", "\224\128\128", "\237\160\128", "\244\144\128\128",
    "\195", "\226\156", "ok\240\157\132" }) do
    check(not compat.utf8_valid(s), "invalid UTF-8", ("%q"):format(s))
  end

  -- ---- events as JSON ------------------------------------------------------------
  local vectors = { [""] = "", f = "Zg==", fo = "Zm8=", foo = "Zm9v", foob = "Zm9vYg==", fooba = "Zm9vYmE=",
    foobar = "Zm9vYmFy", ["\0\255\128"] = "AP+A", ["\251\255\191"] = "+/+/" }
  local Lines = require "odo.control.lines"
  for s, b in pairs(vectors) do check(Lines.base64(s) == b, "base64", ("%q"):format(s), Lines.base64(s)) end
  local text = Lines.events("s", { { rev = 1, ts = 1700000000000, type = "t", data = "\0\1\255" } })
  check(text == '{"stream":"s","rev":1,"ts":1700000000000,"type":"t","data_base64":"AAH/"}\n',
    "binary data as data_base64, keys in order", text)
  text = Lines.events("s/x", { { rev = 2, ts = 5, type = "t", data = "h\195\169" } })
  check(text == '{"stream":"s/x","rev":2,"ts":5,"type":"t","data":"h\195\169"}\n', "an event line", text)
  local back = cjson.decode(text)
  check(back.data == "h\195\169" and back.data_base64 == nil and back.ts == 5, "UTF-8 data as data", text)
  text = Control.encode(Control.status_table("n", nil, {}, {}))
  check(text:find('"peers":[]', 1, true) and text:find('"streams":[]', 1, true), "empty arrays", text)

  -- ---- a --config file: its globals stay in its environment --------------------
  assert(uv.fs_mkdir(tmp, 448))
  local function write(path, content)
    local f = assert(io.open(path, "wb"))
    f:write(content)
    f:close()
    return path
  end
  local env = setmetatable({}, { __index = _G })
  local chunk = assert(compat.loadfile(write(tmp .. "/env.lua", "answer = 42; return answer"), env))
  check(chunk() == 42 and env.answer == 42 and rawget(_G, "answer") == nil, "loadfile with an environment")
  check(compat.loadfile(write(tmp .. "/bin.luac", string.dump(function() end)), env) == nil, "binary chunks refused")
  local conf, cerr = require("odo.cli.run").load_config(write(tmp .. "/conf.lua", "peers = 1; return { sync = false }"))
  check(conf and conf.sync == false and rawget(_G, "peers") == nil, "odo run --config", cerr)

  -- ---- a store ----------------------------------------------------------------------
  local store = assert(odo.open_store(tmp .. "/store", { node_id = "smoke-store" }))
  local last = assert(store:append(nil, {
    { type = "t", data = "one" }, { type = "bin", data = "\0\1\255" }, { type = "t", data = "h\195\169" } }))
  check(last == 3, "append returns the last revision", last)
  local _, cname
  _, cerr, cname = store:append(nil, { type = "t", data = "late" }, { expected = 1 })
  check(cname == "ECONFLICT", "an append at a stale revision is refused", cerr)
  local evs = assert(store:read(nil, 1, 3))
  check(#evs == 3 and evs[2].data == "\0\1\255" and evs[3].rev == 3 and evs[1].type == "t", "read back")
  local n = 0
  for ev in store:events() do n = n + 1; check(ev.rev == n, "events in order") end
  check(n == 3, "the events iterator", n)
  check(store:verify() == true, "the chain verifies")
  check(store:stream("smoke-store").last == 3, "the catalogue")
  store:close()

  -- ---- a node on luv -----------------------------------------------------------------
  local dir = tmp .. "/node"
  local errors = {}
  local node = assert(odo.node {
    dir = dir,
    node_id = "smoke-node",
    on_error = function(e) errors[#errors + 1] = e end,
  })
  local got, caught_up = {}, false
  node:subscribe(node.id, 1, function(batch)
    for _, ev in ipairs(batch) do got[#got + 1] = ev end
  end, { on_caught_up = function() caught_up = true end })
  check(node:append(nil, { { type = "t", data = "a" }, { type = "bin", data = "\255\254" } }) == 2, "node append")
  local async = {}
  for i = 1, 3 do
    node:append_async(nil, { type = "t", data = "async" .. i }, nil, function(rev) async[#async + 1] = rev end)
  end
  local waited
  node:spawn(function() waited = node:append_wait(nil, { type = "t", data = "from a coroutine" }) end)
  check(run_until(function() return #got == 6 and caught_up and waited end, 10000),
    "the subscriber receives every event", #got, tostring(caught_up), tostring(waited))
  check(async[1] == 3 and async[3] == 5 and waited == 6, "group commit and append_wait", async[3], waited)
  check(got[2].data == "\255\254" and got[6].data == "from a coroutine" and got[6].rev == 6, "the events as appended")

  -- the control socket: the server and a client in this process
  local control = assert(Control.serve(node, dir .. "/odo.sock"))
  local sock = dir .. "/odo.sock"
  local answer = assert(Control.request(sock, { cmd = "status" }, nil, 5000))
  check(answer.ok and answer.result.id == "smoke-node" and answer.result.streams[1].last == 6, "control status")
  answer = assert(Control.request(sock, { cmd = "append", type = "t", data = { "x", "y" } }, nil, 5000))
  check(answer.ok and answer.result.last == 8, "control append", Control.encode(answer))
  local chunks = {}
  answer = assert(Control.request(sock, { cmd = "tail", stream = node.id, from = 2 }, function(msg, payload)
    if msg.lines then chunks[#chunks + 1] = payload end
    return msg.lines == nil and msg.stream == nil
  end, 5000))
  local lines = json_lines(table.concat(chunks))
  check(answer.ok and #lines == 7 and lines[1].rev == 2 and lines[1].data_base64 == "//4=",
    "control tail", #lines, Control.encode(lines[1]))
  answer = assert(Control.request(sock, { cmd = "tail", stream = node.id, from = 0 }, nil, 5000))
  check(not answer.ok and answer.error:match("^EINVAL: 0 is not a revision"), "tail from 0", answer.error)
  -- a node without a certificate signs nothing: its chain is whole, its
  -- signatures cannot be checked
  answer = assert(Control.request(sock, { cmd = "verify" }, nil, 5000))
  local v = answer.ok and answer.result.streams[1]
  check(v and v.events == 8 and #v.problems == 1 and v.problems[1]:match("^no public key"), "control verify",
    Control.encode(answer))
  check(run_until(function() return #got == 8 end, 5000), "the subscription sees the control appends", #got)
  control.close()
  node:close()
  require("odo.adapter.luv").shutdown()
  run_until(function() return false end, 50)
  check(#errors == 0, "no error reached the node's handler", errors[1])

  -- ---- bin/odo under this interpreter ------------------------------------------------------
  local out, status = odo_cmd("--help")
  check(status == 0 and out:find("Usage: odo", 1, true) and out:find("tail", 1, true), "odo --help", status, out)
  out, status = odo_cmd("tail", "--dir", dir, node.id, "--from", "0")
  check(status == 2, "a usage error exits 2", status, out)
  -- offline: the node is closed, the commands read the store
  out, status = odo_cmd("append", "--dir", dir, "--type", "cli", "p", "q")
  check(status == 0 and out == "10\n", "offline odo append", status, out)
  out, status = odo_cmd("tail", "--dir", dir, node.id, "--from", "9")
  lines = json_lines(out)
  check(status == 0 and #lines == 2 and lines[1].rev == 9 and lines[2].data == "q", "offline odo tail", out)
  out = odo_cmd("tail", "--dir", dir, node.id, "--from", "2")
  check(out:find('"data_base64":"//4="', 1, true) and out:find('"rev":2[,}]'), "binary data in tail", out)
  out, status = odo_cmd("status", "--dir", dir)
  check(status == 0 and out:find("FIRST%s+LAST") and out:find("\n%s+1%s+10%s.-smoke%-node\n"), "offline odo status", out)
  out, status = odo_cmd("verify", "--dir", dir)
  check(status == 1 and out:find("BAD   smoke-node (10 events, 0 signed heads)\n      no public key", 1, true),
    "offline odo verify", out)

  -- certificates, then `odo run` with clients talking to it
  local pki = tmp .. "/pki"
  out, status = odo_cmd("cert", "ca", "--out", pki)
  check(status == 0, "odo cert ca", out)
  out, status = odo_cmd("cert", "node", "--ca", pki, "--out", pki .. "/n1")
  local id = out:match("^(%S+)\n$")
  check(status == 0 and id, "odo cert node", out)
  -- TLS: two nodes in this process replicate each other's streams over
  -- mutual TLS on loopback
  out, status = odo_cmd("cert", "node", "--ca", pki, "--out", pki .. "/n2")
  local id2 = out:match("^(%S+)\n$")
  check(status == 0 and id2, "odo cert node (a second)", out)
  local function tls_of(name)
    return { ca = pki .. "/ca.pem", cert = pki .. "/" .. name .. "/node.pem", key = pki .. "/" .. name .. "/node.key" }
  end
  local na = assert(odo.node { dir = tmp .. "/tls-a", tls = tls_of("n1"), listen = "127.0.0.1:0",
    on_error = function(e) errors[#errors + 1] = e end })
  local nb = assert(odo.node { dir = tmp .. "/tls-b", tls = tls_of("n2"),
    peers = { "127.0.0.1:" .. na.listen.port }, on_error = function(e) errors[#errors + 1] = e end })
  check(na.id == id and nb.id == id2, "the nodes' ids are their certificates'", na.id, nb.id)
  na:append(nil, { type = "t", data = "from a" })
  nb:append(nil, { { type = "t", data = "from b" }, { type = "t", data = "again" } })
  local function holds(n, stream, rev)
    local st = n.store:stream(stream)
    return st and st.last >= rev
  end
  check(run_until(function() return holds(nb, id, 1) and holds(na, id2, 2) end, 15000),
    "each node replicates the other's stream over TLS")
  check(nb:read(id, 1, 1)[1].data == "from a" and na:read(id2, 2, 2)[1].data == "again", "the replicated events")
  na:close()
  nb:close()
  run_until(function() return false end, 50)
  check(#errors == 0, "no error in the TLS nodes", errors[1])

  local rdir, log = tmp .. "/run", tmp .. "/run.log"
  local fd = assert(uv.fs_open(log, "w", 420))
  local exit_code
  run_proc = assert(uv.spawn(LUA, {
    args = { root .. "/bin/odo", "run", "--dir", rdir, "--listen", "127.0.0.1:0", "--ca", pki .. "/ca.pem",
      "--cert", pki .. "/n1/node.pem", "--key", pki .. "/n1/node.key" },
    stdio = { nil, fd, fd },
  }, function(code) exit_code = code end))
  uv.fs_close(fd)
  local function log_text()
    local f = io.open(log, "rb")
    local s = f and f:read("*a") or ""
    if f then f:close() end
    return s
  end
  local st
  check(run_until(function()
    local o, s = odo_cmd("status", "--dir", rdir, "--json")
    st = s == 0 and cjson.decode(o)
    return st and st.running
  end, 10000), "odo run starts", log_text())
  check(st.id == id, "the node's id is its certificate's", st.id, id)
  out, status = odo_cmd("append", "--dir", rdir, "hello", "\255")
  check(status == 0 and out == "2\n", "odo append through the node", status, out)
  out, status = odo_cmd("tail", "--dir", rdir, id)
  lines = json_lines(out)
  check(status == 0 and #lines == 2 and lines[1].data == "hello" and lines[2].data_base64 == "/w=="
    and out:find('"rev":2[,}]'), "odo tail through the node", out)
  out, status = odo_cmd("status", "--dir", rdir)
  check(status == 0 and out:find("listening on 127.0.0.1:", 1, true) and out:find("\n%s+1%s+2%s.-" .. id),
    "odo status through the node", out)
  out, status = odo_cmd("verify", "--dir", rdir)
  check(status == 0 and out:find("ok    " .. id .. " (2 events, ", 1, true) == 1, "odo verify through the node", out)
  run_proc:kill("sigterm")
  check(run_until(function() return exit_code ~= nil end, 10000), "odo run stops on SIGTERM", log_text())
  run_proc:close()
  check(exit_code == 0 and log_text():find("stopped\n", 1, true), "odo run exits 0", exit_code, log_text())
  uv.run("nowait")
end

local ok, err = xpcall(smoke, debug.traceback)
cleanup()
if not ok then
  io.stderr:write("compat-smoke: ", tostring(err), "\n")
  os.exit(1)
end
print(("compat-smoke: %d checks passed under %s (%s, core %s)"):format(checks, _VERSION, LUA, core_path))
