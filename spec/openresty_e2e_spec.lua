-- A node inside real nginx (Debian's nginx with libnginx-mod-http-lua,
-- LuaJIT, the core from `make luajit`): the spec writes an nginx.conf in
-- a temporary prefix, starts nginx on a loopback port (`-p DIR -c conf`,
-- load_module for ndk and http-lua) with three workers and the node in
-- worker 0 (odo.openresty over odo.adapter.ngx), and an `odo run` node it
-- dials over mutual TLS. It proves what examples/openresty/README.md
-- claims: outbound peers only; each side's stream reaches the other;
-- appends through HTTP, served by several workers, all land; the node
-- redials a peer that went away; a reload's
-- new worker takes the store over once the old one closed it; `nginx -s
-- quit` closes the node cleanly and every acknowledged append is in the
-- store.
local H = require "helper"
local cjson = require "cjson"

local MODULES = "/usr/lib/nginx/modules"

local function have(cmd)
  local _, ok = H.run("command -v " .. cmd)
  return ok
end

local function curl(port, path, body)
  local cmd = ("curl -s -m 20 'http://127.0.0.1:%d%s'"):format(port, path)
  if body then cmd = cmd .. (" -XPOST --data-binary '%s'"):format(body) end
  local out = H.run(cmd)
  local ok, t = pcall(cjson.decode, out)
  return ok and t or nil, out
end

local function stream_last(st, id)
  for _, s in ipairs(st and st.streams or {}) do
    if s.id == id then return s.last end
  end
  return 0
end

local function conf(t)
  return ([[
load_module %s/ndk_http_module.so;
load_module %s/ngx_http_lua_module.so;
user root;
worker_processes 3;
error_log logs/error.log info;
pid logs/nginx.pid;
events { worker_connections 256; }
http {
  access_log off;
  lua_socket_log_errors off;
  lua_shared_dict odo 8m;
  lua_package_path "%s/lua/?.lua;%s/lua/?/init.lua;;";
  lua_package_cpath "%s/build/luajit/?.so;;";
  init_worker_by_lua_block {
    require("odo.openresty").init_worker {
      dir = "%s/ngx-node",
      tls = { ca = "%s", cert = "%s", key = "%s" },
      peers = { "127.0.0.1:%d" },
    }
  }
  server {
    listen 127.0.0.1:%d reuseport;
    location /odo/ { content_by_lua_block { require("odo.openresty").serve() } }
  }
}
]]):format(MODULES, MODULES, H.root, H.root, H.root, t.dir, t.certs.ca, t.certs.cert, t.certs.key,
    t.peer_port, t.http_port)
end

describe("a node inside nginx", function()
  local tmp, pki, run, http_port, ngx_id, run_id, nginx_pid

  local function nginx(args)
    return H.run(("nginx -p '%s' -c '%s/nginx.conf' %s"):format(tmp, tmp, args or ""))
  end

  setup(function()
    assert(have("nginx"), "nginx is not installed: make deps")
    assert(have("curl"), "curl is not installed: make deps")
    for _, m in ipairs({ "ndk_http_module.so", "ngx_http_lua_module.so" }) do
      assert(io.open(MODULES .. "/" .. m), m .. " is missing: apt-get install libnginx-mod-http-lua")
    end
    assert(io.open(H.root .. "/build/luajit/odo/core.so"), "build/luajit/odo/core.so is missing: make luajit")
    tmp = H.tmpdir()
    os.execute("mkdir -p '" .. tmp .. "/logs'")
    pki = tmp .. "/pki"
    assert(select(2, H.odo_cmd("cert", "ca", "--out", pki)))
    ngx_id = H.odo_cmd("cert", "node", "--ca", pki, "--out", pki .. "/ngx"):match("^(%x+)")
    run_id = H.odo_cmd("cert", "node", "--ca", pki, "--out", pki .. "/run"):match("^(%x+)")
    local ports = H.free_ports(2)
    http_port = ports[2]
    run = H.odo_run { dir = tmp .. "/run", port = ports[1],
      certs = { ca = pki .. "/ca.pem", cert = pki .. "/run/node.pem", key = pki .. "/run/node.key" } }
    assert(H.wait(function() local st = H.status(run.dir) return st and st.running end, 15000), H.read_file(run.log))
    H.write_file(tmp .. "/nginx.conf", conf { dir = tmp, peer_port = ports[1], http_port = http_port,
      certs = { ca = pki .. "/ca.pem", cert = pki .. "/ngx/node.pem", key = pki .. "/ngx/node.key" } })
    local out, ok = nginx()
    assert(ok, out)
    nginx_pid = tonumber(H.read_file(tmp .. "/logs/nginx.pid"):match("%d+"))
  end)

  teardown(function()
    if nginx_pid and H.alive(nginx_pid) then
      -- its workers first: killed alone, the master leaves them running
      -- (their nodes with them), on this machine's CPUs after the run
      os.execute(("pkill -KILL -P %d 2>/dev/null"):format(nginx_pid))
      H.kill(nginx_pid, "KILL")
    end
    if run then H.kill(run.pid) end
    H.wait(function() return not (run and H.alive(run.pid)) end, 5000)
    H.cleanup()
  end)

  local function errors_logged()
    local bad = {}
    for line in H.read_file(tmp .. "/logs/error.log"):gmatch("[^\n]+") do
      if line:match("%[error%]") or line:match("%[alert%]") or line:match("%[crit%]") or line:match("%[emerg%]") then
        bad[#bad + 1] = line
      end
    end
    return bad
  end

  it("dials the odo run node over mutual TLS and replicates both ways", function()
    local st
    assert.is_true(H.wait(function()
      st = curl(http_port, "/odo/status")
      for _, p in pairs(st and st.peers or {}) do
        if p.id == run_id and p.state == "active" then return true end
      end
    end, 20000), cjson.encode(st or {}) .. H.read_file(tmp .. "/logs/error.log"))
    assert.equal(ngx_id, st.id)
    assert.equal(0, st.worker)
    -- outbound only: the odo run node sees it as an incoming peer that
    -- announced no port to dial back
    local rst = H.status(run.dir)
    local seen
    for _, p in ipairs(rst.peers) do
      if p.id == ngx_id then seen = p end
    end
    assert.is_table(seen, cjson.encode(rst))
    assert.is_true(seen.incoming and (seen.port == nil or seen.port == cjson.null), cjson.encode(seen))
    local res = curl(http_port, "/odo/append?type=hello", "from nginx")
    assert.equal(1, res and res.last)
    assert.is_true(H.wait(function() return stream_last(H.status(run.dir), ngx_id) == 1 end, 15000))
    local _, ok = H.odo_cmd("append", "--dir", run.dir, "from", "odo run")
    assert.is_true(ok)
    assert.is_true(H.wait(function() return stream_last(curl(http_port, "/odo/status"), run_id) == 2 end, 15000))
  end)

  it("lands every append made through HTTP, served by several workers", function()
    local before = stream_last(curl(http_port, "/odo/status"), ngx_id)
    local out = H.run(("seq 1 60 | xargs -P 8 -I{} curl -s -m 20 -XPOST --data-binary 'a{}' "
      .. "'http://127.0.0.1:%d/odo/append?type=load'; echo"):format(http_port))
    local workers, lasts, acked = {}, {}, 0
    for line in out:gmatch("{[^\n]-}") do
      local r = cjson.decode(line)
      assert.is_number(r.last, line)
      workers[r.worker] = true
      assert.is_nil(lasts[r.last], "one revision acknowledged twice: " .. r.last)
      lasts[r.last] = true
      acked = acked + 1
    end
    assert.equal(60, acked, out)
    local n = 0
    for _ in pairs(workers) do n = n + 1 end
    assert.is_true(n >= 2, "served by one worker only")
    for rev = before + 1, before + 60 do assert.is_true(lasts[rev], "revision " .. rev) end
    assert.is_true(H.wait(function() return stream_last(H.status(run.dir), ngx_id) == before + 60 end, 15000))
  end)

  -- the scheduler sleeps between its timers (a poll of the other
  -- workers' requests every 2 ms), not spins: a turn that finds nothing
  -- to do is a wait that ended early, a few against the timers run; a
  -- wait shorter than nginx's millisecond used to return at once, and the
  -- idle node took half a CPU turning
  it("sleeps between its timers while idle instead of spinning", function()
    local a = curl(http_port, "/odo/status")
    assert.is_table(a and a.scheduler, cjson.encode(a or {}))
    local b
    assert.is_true(H.wait(function()
      b = curl(http_port, "/odo/status")
      return b and b.scheduler and b.scheduler.timers - a.scheduler.timers >= 500
    end, 20000))
    local timers, idle = b.scheduler.timers - a.scheduler.timers, b.scheduler.idle - a.scheduler.idle
    assert.is_true(idle <= timers, ("%d idle turns for %d timers run"):format(idle, timers))
  end)

  it("redials its peer after the connection was lost", function()
    local function active()
      local st = curl(http_port, "/odo/status")
      for _, p in pairs(st and st.peers or {}) do
        if p.id == run_id and p.state == "active" then return true end
      end
      return false
    end
    H.kill(run.pid)
    assert.is_true(H.wait(function() return not H.alive(run.pid) end, 10000))
    assert.is_true(H.wait(function() return not active() end, 10000))
    run = H.odo_run { dir = run.dir, port = run.port,
      certs = { ca = pki .. "/ca.pem", cert = pki .. "/run/node.pem", key = pki .. "/run/node.key" } }
    assert.is_true(H.wait(active, 30000), H.read_file(run.log))
    local before = stream_last(curl(http_port, "/odo/status"), run_id)
    assert.is_true(select(2, H.odo_cmd("append", "--dir", run.dir, "after the redial")))
    assert.is_true(H.wait(function() return stream_last(curl(http_port, "/odo/status"), run_id) == before + 1 end,
      15000))
  end)

  it("hands the store to the new worker on reload once the old one closed it", function()
    local old = curl(http_port, "/odo/status")
    local before = curl(http_port, "/odo/append?type=reloading", "before reload")
    local out, ok = nginx("-s reload")
    assert.is_true(ok, out)
    local st
    assert.is_true(H.wait(function()
      st = curl(http_port, "/odo/status")
      return st and st.state == "running" and st.pid ~= old.pid
    end, 20000), cjson.encode(st or {}))
    local res = curl(http_port, "/odo/append?type=reloaded", "after reload")
    assert.equal(before.last + 1, res and res.last)
    local log = H.read_file(tmp .. "/logs/error.log")
    assert.matches("odo: node closed", log)
  end)

  it("stops cleanly on nginx -s quit with every acknowledged append in the store", function()
    -- appends keep coming while nginx quits; each answer is one line
    local answers = tmp .. "/answers"
    local loop = H.spawn(("for i in $(seq 1 400); do curl -s -m 20 -XPOST --data-binary \"q$i\" "
      .. "'http://127.0.0.1:%d/odo/append?type=quit' || break; echo; done"):format(http_port), answers)
    assert.is_true(H.wait(function() return select(2, H.read_file(answers):gsub("\"last\"", "")) >= 20 end, 20000))
    local out, ok = nginx("-s quit")
    assert.is_true(ok, out)
    assert.is_true(H.wait(function() return not H.alive(nginx_pid) end, 20000), "nginx did not stop")
    H.wait(function() return not H.alive(loop) end, 20000)
    local log = H.read_file(tmp .. "/logs/error.log"):match("SIGQUIT.*$") or ""
    assert.matches("odo: worker exiting: closing the node.*odo: node closed", log)
    assert.same({}, errors_logged())
    -- the store, opened by odo tail now that no node holds it
    local tail, tok = H.odo_cmd("tail", "--dir", tmp .. "/ngx-node", ngx_id)
    assert.is_true(tok, tail)
    local stored = {}
    for line in tail:gmatch("[^\n]+") do
      local ev = cjson.decode(line)
      stored[ev.rev] = ev.data
    end
    local acked = 0
    for line in H.read_file(answers):gmatch("{[^\n]-}") do
      local r = cjson.decode(line)
      -- what was not acknowledged says why
      assert.is_true(r.last ~= nil or (r.error or ""):match("^E[%u]+:") ~= nil, line)
      if r.last then
        acked = acked + 1
        assert.is_string(stored[r.last], "acknowledged revision " .. r.last .. " is not in the store")
        assert.matches("^q%d+$", stored[r.last])
      end
    end
    assert.is_true(acked >= 20)
    -- the odo run node saw a goodbye, not a lost connection
    assert.is_true(H.wait(function() return H.read_file(run.log):match("shutdown: the node is stopping") end, 5000),
      H.read_file(run.log))
  end)
end)
