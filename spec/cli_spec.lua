-- The odo command as a person meets it, run as child processes: stream
-- ids by prefix, tail's line shape, append --binary, events over the
-- limit, --dir mistakes, Ctrl-C on tail -f; with no node and through a
-- running node (issue 13: defects 3, 4, 6, 7, 12).
local H = require "helper"
local cjson = require "cjson"
local luv_adapter = require "odo.adapter.luv"

-- A store in a fresh folder with streams node-a, node-a/sensors and
-- node-a/settings (no node left running).
local function local_store()
  local dir = H.tmpdir()
  local n = H.node { dir = dir }
  n:append(nil, H.events(2, "own"))
  n:append("node-a/sensors", H.events(1, "sensor"))
  n:append("node-a/settings", H.events(1, "setting"))
  n:close()
  luv_adapter.shutdown()
  return dir
end

local function decode_lines(out)
  local t = {}
  for line in out:gmatch("[^\n]+") do t[#t + 1] = cjson.decode(line) end
  return t
end

-- `odo ...` with `input` on its stdin; returns output and success.
local function odo_with_input(input, ...)
  local f = H.write_file(os.tmpname(), input)
  local args = {}
  for _, a in ipairs({ ... }) do args[#args + 1] = "'" .. a .. "'" end
  local out, ok = H.run(("'%s' %s <'%s'"):format(H.odo, table.concat(args, " "), f))
  os.remove(f)
  return out, ok
end

-- The exact shape of a tail line, keys in order.
local LINE = '^{"stream":"[^"]+","rev":%d+,"ts":%d+,"type":"[^"]*","data[_base64]*":"[^"]*"}$'

-- The checks every way in (store or node) must pass, on a folder whose
-- own stream is `id`, holding id/sensors and id/settings.
local function prefix_checks(dir, id)
  local out, ok = H.odo_cmd("tail", "--dir", dir, id)
  assert.is_true(ok, out)
  local lines = decode_lines(out)
  assert.same({ id, "own1" }, { lines[1].stream, lines[1].data }) -- an exact id wins over its /name streams
  out, ok = H.odo_cmd("tail", "--dir", dir, id:sub(1, 5) .. "/sen")
  assert.is_true(ok, out)
  assert.equal(id .. "/sensors", decode_lines(out)[1].stream)
  out, ok = H.odo_cmd("tail", "--dir", dir, id:sub(1, 5) .. "/se")
  assert.is_false(ok)
  assert.matches("is the start of 2 streams: " .. id:gsub("%p", "%%%0") .. "/sensors, ", out)
  assert.matches("odo status %-%-dir", out)
  out, ok = H.odo_cmd("tail", "--dir", dir, "zz-none")
  assert.is_false(ok)
  assert.matches("^odo: no stream 'zz%-none' here %(`odo status %-%-dir .*` lists the streams%)\n$", out)
  -- -f does not wait for a stream that is not there
  out, ok = H.odo_cmd("tail", "--dir", dir, "zz-none", "-f")
  assert.is_false(ok)
  assert.matches("no stream 'zz%-none' here", out)
  out = H.odo_cmd("verify", "--dir", dir, id:sub(1, 5) .. "/sen")
  assert.matches(id:gsub("%p", "%%%0") .. "/sensors %(1 events", out)
  out, ok = H.odo_cmd("verify", "--dir", dir, "zz-none")
  assert.is_false(ok)
  assert.matches("no stream 'zz%-none' here", out)
  -- lines keep the key order
  out = H.odo_cmd("tail", "--dir", dir, id)
  for line in out:gmatch("[^\n]+") do assert.matches(LINE, line) end
end

-- The binary and oversize checks, with or without a node.
local function append_checks(dir, id)
  local bytes = "one\ntwo\0\255\n"
  local out, ok = odo_with_input(bytes, "append", "--dir", dir, "--binary", "--type", "blob")
  assert.is_true(ok, out)
  local rev = tonumber(out)
  out, ok = odo_with_input("a\nb", "append", "--dir", dir, "--raw")
  assert.is_true(ok, out)
  assert.equal(rev + 1, tonumber(out))
  out = H.odo_cmd("tail", "--dir", dir, id, "--from", rev)
  local lines = decode_lines(out)
  assert.equal(2, #lines)
  assert.same({ "blob", nil, "b25lCnR3bwD/Cg==" }, { lines[1].type, lines[1].data, lines[1].data_base64 })
  assert.same({ "text", "a\nb" }, { lines[2].type, lines[2].data })
  -- over the limit: refused, and the lines before it kept
  local big = "first\n" .. ("x"):rep(4194305) .. "\nlast\n"
  out, ok = odo_with_input(big, "append", "--dir", dir)
  assert.is_false(ok)
  assert.matches("^odo: line 2 is over 4194304 bytes, the limit of an event's data; the 1 before it were"
    .. " %(last revision " .. (rev + 2) .. "%)\n$", out)
  out, ok = odo_with_input(("y"):rep(4194305), "append", "--dir", dir, "--binary")
  assert.is_false(ok)
  assert.matches("^odo: event 1 is over 4194304 bytes, the limit of an event's data; nothing was appended\n$", out)
  out = H.odo_cmd("tail", "--dir", dir, id, "--from", rev + 2)
  assert.same({ "first" }, (function()
    local t = {}
    for _, l in ipairs(decode_lines(out)) do t[#t + 1] = l.data end
    return t
  end)())
end

describe("odo tail, append and verify with no node running", function()
  teardown(H.cleanup)

  it("take a unique prefix of a stream id, say when there is no such stream, and keep tail's key order",
    function()
      prefix_checks(local_store(), "node-a")
    end)

  it("append --binary takes stdin whole; an event over the limit is refused", function()
    append_checks(local_store(), "node-a")
  end)
end)

describe("odo tail, append and verify through a running node", function()
  local w = H.odo_world()
  setup(w.setup)
  teardown(H.cleanup)
  before_each(w.before_each)
  after_each(w.after_each)

  it("take a unique prefix, say when there is no such stream, keep tail's key order", function()
    local dir = w.tmp .. "/prefix"
    local _, id = w.run(dir)
    assert.is_true(select(2, H.odo_cmd("append", "--dir", dir, "own1", "own2")))
    assert.is_true(select(2, H.odo_cmd("append", "--dir", dir, "--stream", "sensors", "s")))
    assert.is_true(select(2, H.odo_cmd("append", "--dir", dir, "--stream", "settings", "s")))
    prefix_checks(dir, id)
  end)

  it("append --binary takes stdin whole; an event over the limit is refused at once", function()
    local dir = w.tmp .. "/append"
    local _, id = w.run(dir)
    append_checks(dir, id)
  end)

  it("append streams many lines to the node, and tail reads them back in order", function()
    local dir = w.tmp .. "/many"
    local _, id = w.run(dir)
    local n = 25000
    local input = {}
    for i = 1, n do input[i] = ("line %d"):format(i) end
    local out, ok = odo_with_input(table.concat(input, "\n") .. "\n", "append", "--dir", dir)
    assert.is_true(ok, out)
    assert.equal(n .. "\n", out)
    out, ok = H.odo_cmd("tail", "--dir", dir, id, "--from", n - 1)
    assert.is_true(ok, out)
    local lines = decode_lines(out)
    assert.same({ n - 1, "line " .. (n - 1), n, "line " .. n }, { lines[1].rev, lines[1].data, lines[2].rev,
      lines[2].data })
  end)
end)

describe("Ctrl-C on an idle odo tail -f", function()
  local w = H.odo_world()
  setup(w.setup)
  teardown(H.cleanup)
  before_each(w.before_each)
  after_each(w.after_each)

  -- Starts `odo tail -f` in the background; returns its pid, and where
  -- its output and exit status go.
  local function tail_f(dir, stream)
    local base = H.tmpdir()
    local t = { log = base .. "/log", status = base .. "/status" }
    -- the shell reports the pid of odo itself, then its exit status
    H.spawn(("'%s' tail --dir '%s' '%s' -f & echo $! >'%s/pid'; wait $!; echo $? >'%s'"):format(
      H.odo, dir, stream, base, t.status), t.log)
    assert.is_true(H.wait(function() return H.read_file(base .. "/pid"):match("%d+") ~= nil end))
    t.pid = tonumber(H.read_file(base .. "/pid"):match("%d+"))
    w.procs[#w.procs + 1] = t.pid
    return t
  end

  local function interrupt(t)
    H.kill(t.pid, "INT")
    assert.is_true(H.wait(function() return H.read_file(t.status) ~= "" end, 5000), "tail -f did not stop")
    assert.equal("130", H.read_file(t.status):match("%d+"))
    local log = H.read_file(t.log)
    assert.not_matches("interrupted", log)
    assert.not_matches("traceback", log)
    return log
  end

  it("stops it at once, quietly, with status 130, through a running node", function()
    local dir = w.tmp .. "/node"
    local _, id = w.run(dir)
    assert.is_true(select(2, H.odo_cmd("append", "--dir", dir, "hello")))
    local t = tail_f(dir, id)
    assert.is_true(H.wait(function() return H.read_file(t.log):find('"hello"') ~= nil end), H.read_file(t.log))
    assert.equal('{"stream":"' .. id .. '"', interrupt(t):match('^{"stream":"[^"]*"'))
  end)

  it("says it waits for a stream of this node's own that has no event yet", function()
    local dir = local_store()
    local t = tail_f(dir, "node-a/later")
    assert.is_true(H.wait(function() return H.read_file(t.log):find("waiting") ~= nil end), H.read_file(t.log))
    assert.equal("odo: node-a/later has no events yet; waiting for them (Ctrl-C stops)\n", interrupt(t))
  end)

  it("stops it the same way while it follows the store (no node running)", function()
    local dir = local_store()
    local t = tail_f(dir, "node-a")
    assert.is_true(H.wait(function() return H.read_file(t.log):find('"own2"') ~= nil end), H.read_file(t.log))
    interrupt(t)
  end)
end)

describe("odo with a --dir that is not a node's folder", function()
  local w = H.odo_world()
  setup(w.setup)
  teardown(H.cleanup)
  before_each(w.before_each)
  after_each(w.after_each)

  -- `odo ...` as the user nobody.
  local function as_nobody(...)
    local args = {}
    for _, a in ipairs({ ... }) do args[#args + 1] = "'" .. a .. "'" end
    return H.run(("setpriv --reuid=nobody --regid=nogroup --clear-groups '%s' %s"):format(H.odo,
      table.concat(args, " ")))
  end

  it("says to start a node with odo run in a folder where none ran", function()
    for _, dir in ipairs({ w.tmp .. "/missing", H.tmpdir() }) do
      for _, cmd in ipairs({ { "tail", "--dir", dir, "x" }, { "append", "--dir", dir, "x" },
        { "verify", "--dir", dir } }) do
        local out, ok = H.odo_cmd(table.unpack(cmd))
        assert.is_false(ok)
        assert.matches("^odo: no node has run in " .. dir:gsub("%p", "%%%0") .. ".*: start one there with"
          .. " `odo run %-%-dir", out)
        assert.not_matches("LOCK", out)
      end
    end
  end)

  it("says a regular file is not a node's folder", function()
    local file = H.write_file(w.tmp .. "/a-file", "x")
    for _, cmd in ipairs({ "tail", "append" }) do
      local out, ok = H.odo_cmd(cmd, "--dir", file, "x")
      assert.is_false(ok)
      assert.equal("odo: " .. file .. " is a file, not a node's folder\n", out)
    end
  end)

  it("says permission denied on a store it may not write, and on a node's socket it may not open", function()
    local dir = local_store()
    os.execute(("chmod -R a+rX '%s'"):format(dir)) -- readable by all, writable by root only
    local out, ok = as_nobody("tail", "--dir", dir, "node-a")
    assert.is_false(ok)
    assert.equal("odo: permission denied on " .. dir .. "/store (a node's store is read and written by the user"
      .. " that runs the node)\n", out)
    local ndir = w.tmp .. "/running"
    w.run(ndir)
    os.execute(("chmod a+rx '%s' '%s'"):format(w.tmp, ndir)) -- the folder may be entered, the socket is 0600
    for _, cmd in ipairs({ { "tail", "--dir", ndir, "x" }, { "append", "--dir", ndir, "x" } }) do
      out, ok = as_nobody(table.unpack(cmd))
      assert.is_false(ok)
      assert.equal("odo: permission denied on " .. ndir .. "/odo.sock (the node runs as another user?)\n", out)
    end
  end)
end)
