-- The control socket and the commands that use it: a server that ends
-- every client's connection when the node stops, tail's edges (revision
-- 0, a start behind the compaction point), and `odo run`'s options and
-- clean stop with `odo tail -f` attached.
local H = require "helper"
local Control = require "odo.control"
local luv_adapter = require "odo.adapter.luv"

describe("control socket", function()
  local nodes
  before_each(function() nodes = {} end)
  after_each(function()
    for _, n in ipairs(nodes) do
      if n.control then n.control.close() end
      n:close()
      assert.same({}, n.errors)
    end
    luv_adapter.shutdown()
    assert.same({}, H.active_handles())
  end)
  teardown(H.cleanup)

  -- a node on luv serving DIR/odo.sock
  local function serve(opts)
    local n = H.node(opts)
    n.control = assert(Control.serve(n, n.dir .. "/odo.sock"))
    nodes[#nodes + 1] = n
    return n
  end

  it("ends a following client's connection with a closing line when it closes", function()
    local n = serve()
    n:append(nil, H.events(2))
    local msgs = {}
    local answer, err = Control.request(n.dir .. "/odo.sock", { cmd = "tail", stream = n.id, follow = true },
      function(msg)
        msgs[#msgs + 1] = msg
        if msg.lines and msg.next == 3 then n.control.close() end -- the node stops
        return msg.lines == nil and msg.stream == nil
      end, 5000)
    assert.is_not_nil(answer, err)
    assert.same({ false, "ECLOSED: the node is stopping", true }, { answer.ok, answer.error, answer.closing })
    assert.same({ n.id, 2 }, { msgs[1].stream, msgs[2].lines })
    -- after_each: no handle left on either side
  end)

  it("answers EINVAL to a tail from revision 0, and EINTERNAL to a command that raises", function()
    local n = serve()
    n:append(nil, H.events(2))
    local answer = Control.request(n.dir .. "/odo.sock", { cmd = "tail", stream = n.id, from = 0 }, nil, 5000)
    assert.is_not_nil(answer)
    assert.is_false(answer.ok)
    assert.matches("^EINVAL: 0 is not a revision", answer.error)
    Control.commands.boom = function() error("boom") end
    answer = Control.request(n.dir .. "/odo.sock", { cmd = "boom" }, nil, 5000)
    Control.commands.boom = nil
    assert.is_false(answer.ok)
    assert.matches("^EINTERNAL: .*boom", answer.error)
    assert.equal(1, #n.errors)
    table.remove(n.errors)
  end)

  -- an append request streaming `pieces` to the node; returns the
  -- messages it received, the answer last
  local function stream_append(n, pieces, split)
    local c = assert(Control.connect(n.dir .. "/odo.sock"))
    c:send { cmd = "append", split = split or "lines" }
    local got, early = {}, false
    for _, p in ipairs(pieces) do
      c:send({}, p)
      c:flush()
      while c:waiting() do got[#got + 1] = c:receive() end
      early = got[#got] ~= nil and got[#got].ok ~= nil -- answered before the end
      if early then break end
    end
    if not early then
      c:send { ["end"] = true }
      repeat got[#got + 1] = c:receive(5000) until got[#got] == nil or got[#got].ok ~= nil
    end
    c:close()
    return got, early
  end

  it("streams an append in pieces and tells each durable batch as progress", function()
    local n = serve()
    local lines = {}
    for i = 1, 25000 do lines[i] = "l" .. i end
    local text = table.concat(lines, "\n")
    -- pieces that cut lines in two
    local got = stream_append(n, { text:sub(1, 70001), text:sub(70002, 150000), text:sub(150001) })
    local answer = table.remove(got)
    assert.is_true(answer.ok, answer.error)
    assert.same({ 25000, 25000 }, { answer.result.last, answer.result.events })
    -- batches of at most 10,000, each told, in order, the last one at the end
    assert.is_true(#got >= 3)
    local before = 0
    for _, m in ipairs(got) do
      assert.is_true(m.progress.events > before and m.progress.events - before <= 10000)
      assert.equal(m.progress.events, m.progress.last)
      before = m.progress.events
    end
    assert.equal(25000, before)
    assert.same({ "l1", "l10000", "l25000" }, { n:read(nil, 1, 1)[1].data, n:read(nil, 10000, 10000)[1].data,
      n:read(nil, 25000, 25000)[1].data })
  end)

  it("refuses an event over the limit while the input still comes, keeping what came before", function()
    local n = serve()
    local piece = ("x"):rep(1048576)
    local pieces = { "before\n" }
    for i = 2, 12 do pieces[i] = piece end -- 11 MiB in one line: the answer comes after 4 MiB and a bit
    local got, early = stream_append(n, pieces)
    assert.is_true(early)
    local answer = got[#got]
    assert.is_false(answer.ok)
    assert.equal("ETOOBIG: line 2 is over 4194304 bytes, the limit of an event's data; the 1 before it were"
      .. " (last revision 1)", answer.error)
    assert.equal(1, n.store:stream(n.id).last)
    -- the node goes on serving
    assert.is_true(Control.request(n.dir .. "/odo.sock", { cmd = "status" }, nil, 5000).ok)
  end)

  it("sends a snapshot line with kind 'snapshot' to a tail that starts behind the compaction point", function()
    local n = serve()
    n:append(nil, H.events(10))
    local done
    n:snapshot(nil, function() n:compact(nil, nil, function() done = true end) end, "last")
    assert.is_true(H.luv_until(function() return done end))
    n:append(nil, H.events(2, "more"))
    local text = {}
    local answer = Control.request(n.dir .. "/odo.sock", { cmd = "tail", stream = n.id, from = 1 },
      function(msg, payload)
        if msg.lines then text[#text + 1] = payload end
        return msg.lines == nil and msg.stream == nil
      end, 5000)
    assert.is_true(answer and answer.ok)
    local lines = {}
    for line in table.concat(text):gmatch("[^\n]+") do lines[#lines + 1] = require("cjson").decode(line) end
    assert.same({ "snapshot", n.id, 10, "last", "source" },
      { lines[1].kind, lines[1].stream, lines[1].rev, lines[1].format, lines[1].origin })
    assert.equal(11, lines[2].rev)
    assert.equal(12, lines[3].rev)
    assert.equal(3, #lines)
  end)
end)

describe("odo tail and odo run", function()
  local w = H.odo_world()
  setup(w.setup)
  teardown(H.cleanup)
  before_each(w.before_each)
  after_each(w.after_each)

  local write = H.write_file

  local function json_lines(out)
    local t = {}
    for line in out:gmatch("[^\n]+") do
      local ok, obj = pcall(require("cjson").decode, line)
      t[#t + 1] = ok and obj or line
    end
    return t
  end

  it("tail refuses --from 0 as wrong usage", function()
    local out, ok = H.odo_cmd("tail", "--dir", w.tmp, "some-stream", "--from", "0")
    assert.is_false(ok)
    assert.matches("revisions start at 1", out)
  end)

  it("tail prints a snapshot line when --from is behind the compaction point (no node running)", function()
    local dir = H.tmpdir()
    local n = H.node { dir = dir }
    n:append(nil, H.events(5))
    local done
    n:snapshot(nil, function() n:compact(nil, nil, function() done = true end) end, "last")
    assert.is_true(H.luv_until(function() return done end))
    n:append(nil, H.events(1, "x"))
    n:close()
    luv_adapter.shutdown()
    local out, ok = H.odo_cmd("tail", "--dir", dir, n.id, "--from", "2")
    assert.is_true(ok, out)
    local lines = json_lines(out)
    assert.same({ "snapshot", 5, "last" }, { lines[1].kind, lines[1].rev, lines[1].format })
    assert.same({ 6, "x1" }, { lines[2].rev, lines[2].data })
    assert.equal(2, #lines)
  end)

  it("run says why it cannot listen on an address, without a traceback", function()
    local c = w.pki.n1
    local out, ok = H.odo_cmd("run", "--dir", H.tmpdir(), "--listen", "no host:4000",
      "--ca", c.ca, "--cert", c.cert, "--key", c.key)
    assert.is_false(ok)
    assert.matches("odo: cannot listen on no host:4000: not an IP address or host name", out)
    assert.not_matches("traceback", out)
  end)

  it("run takes sync from --config, and refuses an unknown key or a wrong policy there", function()
    local run = require "odo.cli.run"
    local conf = assert(run.load_config(write(w.tmp .. "/sync.lua",
      "return { sync = false, peers = { '10.0.0.2:4000' } }")))
    local opts = run.node_options({ dir = "d", peer = { "10.0.0.1:4000" } }, conf)
    assert.is_false(opts.sync)
    assert.same({ "10.0.0.1:4000", "10.0.0.2:4000" }, opts.peers)
    local c = w.pki.n1
    local out, ok = H.odo_cmd("run", "--dir", H.tmpdir(), "--listen", "127.0.0.1:0", "--ca", c.ca,
      "--cert", c.cert, "--key", c.key, "--config", write(w.tmp .. "/typo.lua", "return { snyc = false }"))
    assert.is_false(ok)
    assert.matches("unknown option 'snyc'", out)
    out, ok = H.odo_cmd("run", "--dir", H.tmpdir(), "--listen", "127.0.0.1:0", "--ca", c.ca,
      "--cert", c.cert, "--key", c.key, "--config", write(w.tmp .. "/bad.lua", "return { policy = { tick_ms = 'x' } }"))
    assert.is_false(ok)
    assert.matches("odo: config: policy 'tick_ms' must be a number", out)
  end)

  it("tail through a running node prints the snapshot line, then the events after it", function()
    local dir = w.tmp .. "/run-compact"
    local p, id = w.run(dir, write(w.tmp .. "/compact.lua", [[
      return { sync = true, policy = { reducer = "last", snapshot_every_events = 5,
        compact_after_events = 1, tick_ms = 50 } }
    ]]))
    assert.is_true(select(2, H.odo_cmd("append", "--dir", dir, "a", "b", "c", "d", "e", "f", "g")))
    assert.is_true(select(2, H.odo_cmd("append", "--dir", dir, "h")))
    assert.is_true(H.wait(function()
      local st = H.status(dir)
      return st and st.streams[1] and st.streams[1].first == 8
    end), H.read_file(p.log))
    local out, ok = H.odo_cmd("tail", "--dir", dir, id, "--from", "1")
    assert.is_true(ok, out)
    local lines = json_lines(out)
    assert.same({ "snapshot", 7 }, { lines[1].kind, lines[1].rev })
    assert.same({ 8, "h" }, { lines[2].rev, lines[2].data })
    assert.equal(2, #lines)
  end)

  it("run stops on SIGTERM while `odo tail -f` is attached, and tail goes on with the store", function()
    local dir = w.tmp .. "/run-tail"
    local p, id = w.run(dir)
    assert.is_true(select(2, H.odo_cmd("append", "--dir", dir, "hello")))
    local tail_log = w.tmp .. "/tail.log"
    local tail = H.spawn(("'%s' tail --dir '%s' '%s' -f"):format(H.odo, dir, id), tail_log)
    w.procs[#w.procs + 1] = tail
    assert.is_true(H.wait(function() return H.read_file(tail_log):find('"hello"') ~= nil end),
      H.read_file(tail_log))
    H.kill(p.pid, "TERM")
    assert.is_true(H.wait(function() return not H.alive(p.pid) end), H.read_file(p.log))
    assert.matches("stopped", H.read_file(p.log))
    assert.is_true(H.wait(function() return H.read_file(tail_log):find("the node stopped") ~= nil end),
      H.read_file(tail_log))
    assert.is_true(H.alive(tail)) -- following the store now
    assert.is_true(select(2, H.odo_cmd("append", "--dir", dir, "later")))
    assert.is_true(H.wait(function() return H.read_file(tail_log):find('"later"') ~= nil end),
      H.read_file(tail_log))
  end)
end)
