-- Metrics end to end: `odo run --metrics` processes on loopback, scraped
-- with curl and checked by promtool and against `odo status --json`; a
-- real Prometheus server (its own temporary folder, a loopback port
-- chosen now, never 9090/9100) scraping two nodes every second and
-- answering odo_stream_last_revision through its HTTP query API; and
-- `--log-format json` lines.
local H = require "helper"
local cjson = require "cjson"

local function sample(text, series)
  for line in text:gmatch("[^\n]+") do
    if line:sub(1, #series + 1) == series .. " " then return tonumber(line:sub(#series + 2)) end
  end
end

describe("odo run --metrics", function()
  local w = H.odo_swarm(false)
  local ports
  setup(w.setup)
  teardown(w.teardown)
  after_each(w.after_each)

  -- `odo run` with --metrics on its own port, and any extra arguments
  local function run(name, port, metrics_port, peer, ...)
    local args = { "--metrics", "127.0.0.1:" .. metrics_port, ... }
    local p = w.start(name, { port = port, peers = { peer }, args = args })
    p.metrics = "127.0.0.1:" .. metrics_port
    return p
  end

  local function scrape(p)
    local out, ok = H.run("curl -sf http://" .. p.metrics .. "/metrics")
    return ok and out or nil
  end

  local function stream_of(st, id)
    for _, s in ipairs(st and st.streams or {}) do
      if s.id == id then return s end
    end
  end

  -- A (source) and B (follows A), 50 events appended on A and replicated
  local function pair()
    ports = H.free_ports(5)
    local a = run("a", ports[1], ports[2], nil, "--log-format", "json")
    local b = run("b", ports[3], ports[4], ports[1])
    local aid = H.running_id(a.dir)
    assert.is_truthy(aid, H.read_file(a.log))
    local out, ok = H.odo_append(a.dir, H.lines(50))
    assert.is_true(ok, out)
    assert.is_true(H.wait(function()
      local s = stream_of(H.status(b.dir), aid)
      return s and math.tointeger(s.last) == 50 and s.caught_up == true
    end, 30000), H.read_file(b.log))
    return a, b, aid
  end

  it("serves text that promtool accepts, with the values odo status --json shows", function()
    local a, b, aid = pair()
    local text = assert(scrape(b), "no answer from " .. b.metrics)
    local file = H.write_file(w.tmp .. "/b.txt", text)
    local out, ok = H.run("promtool check metrics < '" .. file .. "'")
    assert.is_true(ok, out .. "\n" .. text)
    local st = H.status(b.dir)
    local s = stream_of(st, aid)
    local label = '{stream="' .. aid .. '"}'
    assert.equal(s.last, sample(text, "odo_stream_last_revision" .. label))
    assert.equal(s.first, sample(text, "odo_stream_first_revision" .. label))
    assert.equal(s.snapshot, sample(text, "odo_stream_snapshot_revision" .. label))
    assert.equal(s.lag, sample(text, "odo_stream_lag_revisions" .. label))
    assert.equal(1, sample(text, "odo_stream_caught_up" .. label))
    assert.is_true(sample(text, "odo_stream_source_head_age_seconds" .. label) >= 0)
    local active = 0
    for _, p in ipairs(st.peers) do if p.state == "active" then active = active + 1 end end
    assert.equal(active, sample(text, 'odo_peers{state="active"}'))
    assert.equal(50, sample(text, "odo_events_received_total"))
    assert.is_true(sample(text, "odo_batch_apply_seconds_count") >= 1)
    assert.is_true(sample(text, "odo_bytes_received_total") > 0)
    assert.equal(1, sample(text, 'odo_handshakes_total{result="success"}'))
    assert.equal(1, sample(text, 'odo_discovery_candidates_total{source="static"}'))
    -- the source counts its appends (through the control socket)
    local atext = assert(scrape(a))
    assert.equal(50, sample(atext, "odo_events_appended_total"))
    assert.is_true(sample(atext, "odo_append_duration_seconds_count") >= 1)
    assert.is_true(sample(atext, "odo_bytes_sent_total") > 0)
    -- the 50 events went to its one replica, counted by the C engine
    assert.equal(50, sample(atext, "odo_events_sent_total"))
    assert.equal(0, sample(text, "odo_events_sent_total"))
    -- anything else: 404
    local code = H.run("curl -s -o /dev/null -w '%{http_code}' http://" .. b.metrics .. "/")
    assert.equal("404", code)
    -- --log-format json: one object per line, with the same keys
    local n = 0
    for line in H.read_file(a.log):gmatch("[^\n]+") do
      local obj = cjson.decode(line)
      assert.truthy(line:match('^{"time":"[^"]+","level":"%a+","event":"[%w_]+","peer":'), line)
      assert.truthy(obj.message, line)
      if obj.event == "peer" and obj.peer ~= cjson.null then
        assert.truthy(obj.peer:match("^" .. ("%x"):rep(64) .. "$"), line) -- the whole id
        n = n + 1
      end
    end
    assert.is_true(n >= 1, H.read_file(a.log))
  end)

  it("a Prometheus server scrapes two nodes and answers odo_stream_last_revision", function()
    local a, b, aid = pair()
    local pport = ports[5]
    assert.is_true(pport ~= 9090 and pport ~= 9100)
    local pdir = w.tmp .. "/prometheus-" .. pport
    os.execute("mkdir -p '" .. pdir .. "/data'")
    H.write_file(pdir .. "/prometheus.yml", ([[
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: odo
    scrape_interval: 1s
    static_configs:
      - targets: ['%s', '%s']
]]):format(a.metrics, b.metrics))
    local prom = w.spawn(("exec prometheus --config.file='%s/prometheus.yml' --storage.tsdb.path='%s/data'"
      .. " --web.listen-address=127.0.0.1:%d --log.level=warn"):format(pdir, pdir, pport), pdir .. ".log")
    local result
    local url = ("http://127.0.0.1:%d/api/v1/query?query=odo_stream_last_revision"):format(pport)
    local ok = H.wait(function()
      local out, got = H.run("curl -sf '" .. url .. "'")
      if not got then return false end
      local okj, t = pcall(cjson.decode, out)
      if not okj or t.status ~= "success" then return false end
      local by_instance = {}
      for _, r in ipairs(t.data.result) do
        if r.metric.stream == aid then by_instance[r.metric.instance] = tonumber(r.value[2]) end
      end
      result = by_instance
      return by_instance[a.metrics] == 50 and by_instance[b.metrics] == 50
    end, 60000)
    assert.is_true(ok, cjson.encode(result or {}) .. "\n" .. H.read_file(prom.log))
  end)
end)
