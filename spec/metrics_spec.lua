-- Metrics in one process: the text a node serves on GET /metrics (read
-- over a real loopback socket), checked by promtool; the cap on
-- per-stream series; the HTTP responder's limits (404, a garbage client,
-- an oversize head, a client that sends nothing does not hold others).
local H = require "helper"
local uv = require "luv"

-- Sends `request` to host:port and reads until the server closes; calls
-- back with the whole answer. `hold`: send nothing and stay connected.
local function http(addr, request, done)
  local host, port = addr:match("^(.+):(%d+)$")
  local tcp = uv.new_tcp()
  local chunks = {}
  tcp:connect(host, tonumber(port), function(err)
    assert(not err, err)
    tcp:read_start(function(rerr, data)
      if rerr or not data then
        tcp:close()
        return done(table.concat(chunks))
      end
      chunks[#chunks + 1] = data
    end)
    if request then tcp:write(request) end
  end)
  return tcp
end

local function get(addr, request)
  local answer
  http(addr, request or "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", function(a) answer = a end)
  assert.is_true(H.luv_until(function() return answer ~= nil end, 10000), "no answer from " .. addr)
  return answer
end

local function body(answer) return answer:match("\r\n\r\n(.*)$") end

-- The value of a sample `name{labels}` in a text exposition, or nil.
local function sample(text, series)
  for line in text:gmatch("[^\n]+") do
    if line:sub(1, #series + 1) == series .. " " then return tonumber(line:sub(#series + 2)) end
  end
end

local function promtool(text)
  local file = H.write_file(H.tmpdir() .. "/metrics.txt", text)
  return H.run("promtool check metrics < '" .. file .. "'")
end

describe("odo.metrics", function()
  teardown(H.cleanup)
  after_each(function()
    -- let every handle finish closing (a process may not end with some
    -- still closing), and check none is left running
    require("odo.adapter.luv").shutdown()
    uv.run()
    assert.same({}, H.active_handles())
  end)

  it("serves GET /metrics in the text format that promtool accepts, with the node's figures", function()
    local node = H.node { metrics = "127.0.0.1:0" }
    assert.truthy(node.metrics_address:match("^127%.0%.0%.1:%d+$"))
    assert(node:append(nil, { { type = "t", data = "a" }, { type = "t", data = "b" } }))
    local named = node:stream_id("sensors")
    assert(node:append(named, { type = "t", data = "c" }))
    local done
    node:append_async(nil, { type = "t", data = "d" }, nil, function(last) done = last end)
    assert.is_true(H.luv_until(function() return done ~= nil end))
    local answer = get(node.metrics_address)
    assert.truthy(answer:match("^HTTP/1%.1 200 OK\r\n"))
    assert.truthy(answer:find("Content-Type: text/plain; version=0.0.4", 1, true))
    local text = body(answer)
    local out, ok = promtool(text)
    assert.is_true(ok, out .. "\n" .. text)
    assert.equal(3, sample(text, 'odo_stream_last_revision{stream="node-a"}'))
    assert.equal(1, sample(text, 'odo_stream_last_revision{stream="' .. named .. '"}'))
    assert.equal(1, sample(text, 'odo_stream_caught_up{stream="node-a"}'))
    assert.equal(4, sample(text, "odo_events_appended_total"))
    assert.equal(3, sample(text, "odo_append_duration_seconds_count"))
    assert.equal(3, sample(text, 'odo_append_duration_seconds_bucket{le="+Inf"}'))
    for _, state in ipairs({ "connecting", "incoming", "active", "lifesupport", "purgatory" }) do
      assert.equal(0, sample(text, 'odo_peers{state="' .. state .. '"}'))
    end
    for _, name in ipairs({ "odo_stream_first_revision", "odo_stream_snapshot_revision", "odo_stream_lag_revisions",
      "odo_stream_source_head_age_seconds", "odo_events_received_total", "odo_events_appended_total",
      "odo_bytes_received_total", "odo_bytes_sent_total", "odo_verify_failures_total", "odo_handshakes_total",
      "odo_discovery_candidates_total", "odo_append_duration_seconds", "odo_batch_apply_seconds" }) do
      assert.truthy(text:find("# TYPE " .. name .. " ", 1, true), name)
      assert.truthy(text:find("# HELP " .. name .. " ", 1, true), name)
    end
    node:close()
    assert.same({}, node.errors)
  end)

  it("writes series for at most metrics_streams streams, the most recently active, and aggregates over all", function()
    local node = H.node { metrics = "127.0.0.1:0", metrics_streams = 2 }
    for i = 1, 5 do assert(node:append(node:stream_id("s" .. i), { type = "t", data = "x" })) end
    assert(node:append(node:stream_id("s2"), { type = "t", data = "y" })) -- s2 then s5: the latest
    local text = body(get(node.metrics_address))
    local series = {}
    for id in text:gmatch('odo_stream_last_revision{stream="([^"]+)"}') do series[#series + 1] = id end
    table.sort(series)
    assert.same({ node:stream_id("s2"), node:stream_id("s5") }, series)
    assert.equal(2, sample(text, "odo_streams_exported"))
    assert.equal(5, sample(text, 'odo_streams{origin="source"}'))
    assert.equal(6, sample(text, "odo_streams_events"))
    local out, ok = promtool(text)
    assert.is_true(ok, out)
    node:close()
  end)

  it("answers 404 to anything but GET /metrics, 400 to garbage and to an oversize head", function()
    local node = H.node { metrics = "127.0.0.1:0" }
    local a = node.metrics_address
    assert.truthy(get(a, "GET / HTTP/1.1\r\n\r\n"):match("^HTTP/1%.1 404 "))
    assert.truthy(get(a, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n"):match("^HTTP/1%.1 404 "))
    assert.truthy(get(a, "GET /metrics?x=1 HTTP/1.0\r\n\r\n"):match("^HTTP/1%.1 200 "))
    assert.truthy(get(a, "\1\2\3 garbage\r\n\r\n"):match("^HTTP/1%.1 400 "))
    assert.truthy(get(a, "GET /metrics HTTP/1.1\r\nX: " .. ("y"):rep(20000)):match("^HTTP/1%.1 400 "))
    node:close()
    assert.same({}, node.errors)
  end)

  it("a client that sends nothing holds no one else, and is cut after the time limit", function()
    local node = H.node { metrics = "127.0.0.1:0" }
    local http_metrics = require "odo.http_metrics"
    -- a second responder on the node's loop with a short limit
    local server = assert(http_metrics.serve(node.adapter, "127.0.0.1:0",
      function() return node.metrics:text() end, { timeout_ms = 300 }))
    local addr = "127.0.0.1:" .. server.port
    local silent
    local t0 = uv.now()
    http(addr, nil, function(a) silent = a end)
    -- meanwhile others are answered
    assert.truthy(get(addr):match("^HTTP/1%.1 200 "))
    assert.is_true(H.luv_until(function() return silent ~= nil end, 5000))
    assert.truthy(silent:match("^HTTP/1%.1 400 "))
    assert.is_true(uv.now() - t0 >= 290)
    server.close()
    node:close()
  end)

  it("refuses a metrics address that is not HOST:PORT, and says when it cannot listen", function()
    assert.has_error(function() H.node { metrics = "nowhere" } end, "opts.metrics must be HOST:PORT")
    local n1 = H.node { metrics = "127.0.0.1:0" }
    local odo = require "odo"
    local n2, err, name = odo.node { dir = H.tmpdir(), node_id = "b", metrics = n1.metrics_address }
    assert.is_nil(n2)
    assert.equal("EADDRINUSE", name)
    assert.truthy(tostring(err):find("EADDRINUSE", 1, true))
    n1:close()
  end)
end)
