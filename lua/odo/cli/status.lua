--- `odo status`: the node's peers and streams.
--
-- `odo status --dir DIR [--json] [--dot] [--watch [SECONDS]]` asks the
-- running node through DIR/odo.sock; with no node running, it reads the
-- store (streams, and peers from history).
--
-- The table shows whole stream ids (to paste into `odo tail` and `odo
-- verify`), with column headers. With the watch flag it is redrawn in
-- place on a terminal (one table per interval otherwise), with each
-- stream's rate; with the dot flag the command prints a Graphviz graph:
-- `odo status --dir D --dot | dot -Tsvg > swarm.svg`.
--
-- @module odo.cli.status
local cli = require "odo.cli"
local cjson = require "cjson"
local compat = require "odo.compat"

-- odo.control and odo.store (and the core with them) load when a status
-- is asked for: `odo --help` shows this command's legend without them
local function Control() return require "odo.control" end

local Status = {}

-- What the peer states mean (`odo status --help` shows it).
Status.LEGEND = [[
Peer states:
  connecting   this node is dialling the peer (TCP, TLS, introductions)
  incoming     the peer dialled this node; introductions under way
  active       introduced: exchanging catalogues and events, with heartbeats
  lifesupport  the connection failed or went quiet; retried after a backoff
  purgatory    refused for a while (it is this node itself, a duplicate
               connection, or it sent what its source did not sign)
  history      (no node running) a peer this node was introduced to before
Streams: FIRST..LAST are the revisions held (after compaction), SNAPSHOT
the newest snapshot's revision, LAG how far the best copy a peer
advertises is ahead, CAUGHT-UP whether this node holds all its upstream
has (or is the source), UPSTREAM the peer it follows ("self": its own).]]

local function from_store(dir)
  local store, err, name = require("odo.store").open(dir .. "/store", { create = false })
  if not store then return nil, err, name end
  local peers = {}
  for i, p in ipairs(store:peers()) do
    peers[i] = { id = p.id, host = p.host, port = p.port, state = "history", reason = p.reason,
      last_seen = p.last_seen }
  end
  local t = Control().status_table(store.node_id, nil, peers, store:streams())
  store:close()
  return t
end

--- The status of the node in `dir`: asks the node; with none running,
-- reads the store; a store busy but no node answering means one is
-- starting (or stopping): ask again. Returns the table that the json flag prints,
-- or nil, err.
function Status.fetch(dir)
  local st, err, name
  for _ = 1, 30 do
    local answer
    answer, err, name = Control().request(dir .. "/odo.sock", { cmd = "status" })
    if answer then
      if not answer.ok then return nil, answer.error end
      st = answer.result
      break
    elseif name == "ENOENT" or name == "ECONNREFUSED" then
      st, err, name = from_store(dir)
      if st or name ~= "EBUSY" then break end
      require("luv").sleep(100)
    else
      break
    end
  end
  if not st then return nil, err end
  Control().array(st.peers)
  Control().array(st.streams)
  return st
end

local function value(v) return v ~= nil and v ~= cjson.null and v or nil end

local function int(v)
  v = value(v)
  return v and tostring(compat.tointeger(v) or v) or "-"
end

-- Lays rows (arrays of strings) out in columns, the last one unpadded.
local function columns(rows)
  local widths = {}
  for _, r in ipairs(rows) do
    for i = 1, #r - 1 do widths[i] = math.max(widths[i] or 0, #r[i]) end
  end
  local out = {}
  for k, r in ipairs(rows) do
    local cells = {}
    for i = 1, #r - 1 do cells[i] = r[i] .. (" "):rep(widths[i] - #r[i]) end
    cells[#r] = r[#r]
    out[k] = "  " .. table.concat(cells, "  ")
  end
  return out
end

--- The status as text: the node line, a peers table and a streams table
-- with headers and whole ids. `rates` (optional): stream id -> events
-- per second, shown in a RATE column.
function Status.text(st, rates)
  local out = {}
  out[#out + 1] = ("node %s %s"):format(st.id, st.running and ("listening on " .. st.listen) or "(not running)")
  out[#out + 1] = ("peers: %d"):format(#st.peers)
  if #st.peers > 0 then
    local rows = { { "STATE", "ADDRESS", "RTT", "REASON", "ID" } }
    for _, p in ipairs(st.peers) do
      local addr = tostring(value(p.host) or "?") .. ":" .. int(p.port):gsub("^%-$", "?")
      local rtt = value(p.rtt) and ("%.1fms"):format(p.rtt) or "-"
      rows[#rows + 1] = { p.state, addr, rtt, value(p.reason) or "-", value(p.id) or "?" }
    end
    for _, line in ipairs(columns(rows)) do out[#out + 1] = line end
  end
  out[#out + 1] = ("streams: %d"):format(#st.streams)
  if #st.streams > 0 then
    local head = { "FIRST", "LAST", "SNAPSHOT", "LAG", "CAUGHT-UP", "UPSTREAM" }
    if rates then head[#head + 1] = "RATE" end
    head[#head + 1] = "STREAM"
    local rows = { head }
    for _, s in ipairs(st.streams) do
      local up = value(s.upstream)
      up = up and (up == "self" and "self" or up:sub(1, 16)) or "-"
      local caught = s.own and "source" or (s.caught_up == true and "yes" or (value(s.lag) and "no" or "-"))
      local r = { int(s.first), int(s.last), int(s.snapshot), int(s.lag), caught, up }
      if rates then r[#r + 1] = rates[s.id] and ("%.1f/s"):format(rates[s.id]) or "-" end
      r[#r + 1] = s.id
      rows[#rows + 1] = r
    end
    for _, line in ipairs(columns(rows)) do out[#out + 1] = line end
  end
  local sources = value(st.discovery) or {}
  if #sources > 0 then
    out[#out + 1] = ("discovery: %d"):format(#sources)
    local rows = { { "SOURCE", "FOUND", "LAST FOUND", "STATE", "LAST ERROR" } }
    for _, d in ipairs(sources) do
      rows[#rows + 1] = { Status.source_name(d), tostring(#(value(d.found) or {})),
        Status.ago(st, d.found_at), Status.source_state(st, d),
        value(d.error) and (Status.ago(st, d.error_at) .. ": " .. d.error) or "-" }
    end
    for _, line in ipairs(columns(rows)) do out[#out + 1] = line end
  end
  return table.concat(out, "\n")
end

--- A discovery source's name in the table ("dns swarm.test", "mdns"),
-- with the swarm it keeps to when it has one.
function Status.source_name(d)
  local swarm = value(d.swarm)
  return tostring(value(d.name) or "?") .. (swarm and (" (swarm " .. tostring(swarm) .. ")") or "")
end

--- What a source says of its own state, when it says something: the DHT's
-- "connected, 3 good/1 dubious nodes, announced 12s ago".
function Status.source_state(st, d)
  local parts = {}
  if value(d.state) then parts[#parts + 1] = tostring(d.state) end
  if value(d.good) then parts[#parts + 1] = ("%d good/%d dubious nodes"):format(d.good, value(d.dubious) or 0) end
  if value(d.announced_at) then parts[#parts + 1] = "announced " .. Status.ago(st, d.announced_at) end
  return #parts > 0 and table.concat(parts, ", ") or "-"
end

--- How long before the status was taken a time on the node's clock
-- (`st.now_ms`) was: "12s ago", or "-" when there is none.
function Status.ago(st, at)
  at, st.now_ms = value(at), value(st.now_ms)
  if not at or not st.now_ms then return "-" end
  return ("%ds ago"):format(math.max(0, math.floor((st.now_ms - at) / 1000 + 0.5)))
end

-- ---- the picture ------------------------------------------------------------------

-- Graphviz styles per peer state.
local STATE_STYLE = {
  active = 'color="forestgreen", penwidth=2',
  connecting = 'color="steelblue", style="dashed"',
  incoming = 'color="steelblue", style="dotted"',
  lifesupport = 'color="darkorange", style="dashed"',
  purgatory = 'color="red3", style="bold,dashed"',
  history = 'color="gray60", style="dotted"',
}

-- A DOT string: quotes and backslashes escaped, newlines as DOT's \n.
local function q(s)
  return '"' .. tostring(s):gsub('[\\"]', "\\%0"):gsub("\n", "\\n") .. '"'
end

local function short_stream(id, names)
  local src, rest = id:match("^([^/]+)(.*)$")
  return (names[src] or src:sub(1, 8)) .. rest
end

--- A Graphviz digraph of one or more nodes' statuses: each node (bold
-- box), the peers it knows (ellipses, coloured by state, joined by an
-- edge styled the same), and for each stream it replicates an edge from
-- its upstream labelled with the stream and its lag; a dashed edge from
-- a stream's source to an upstream that relays it. `names` (optional):
-- node id -> label.
function Status.dot(statuses, names)
  names = names or {}
  local function lbl(id) return names[id] or tostring(id):sub(1, 12) end
  local out = { "digraph odo {", "  rankdir=LR;", '  node [fontname="Helvetica", fontsize=11];',
    '  edge [fontname="Helvetica", fontsize=9];' }
  local selves, declared = {}, {}
  for _, st in ipairs(statuses) do selves[st.id] = true end
  for _, st in ipairs(statuses) do
    out[#out + 1] = ("  %s [shape=box, style=bold, label=%s];"):format(q(st.id),
      q(lbl(st.id) .. (st.running and ("\n" .. tostring(st.listen)) or "\n(not running)")))
    declared[st.id] = true
  end
  local function declare(id, extra)
    if declared[id] then return end
    declared[id] = true
    out[#out + 1] = ("  %s [label=%s%s];"):format(q(id), q(lbl(id)), extra or "")
  end
  for _, st in ipairs(statuses) do
    for _, p in ipairs(st.peers) do
      local id = value(p.id) or (tostring(value(p.host)) .. ":" .. int(p.port))
      local style = STATE_STYLE[p.state] or ""
      declare(id, style ~= "" and (", " .. style) or "")
      -- between two drawn nodes, one edge per pair
      if not (selves[id] and id < st.id) then
        out[#out + 1] = ("  %s -> %s [dir=none, label=%s, %s];"):format(q(st.id), q(id), q(p.state), style)
      end
    end
  end
  for _, st in ipairs(statuses) do
    for _, s in ipairs(st.streams) do
      local up = value(s.upstream)
      if up and up ~= "self" then
        declare(up)
        out[#out + 1] = ("  %s -> %s [color=\"navy\", label=%s];"):format(q(up), q(st.id),
          q(short_stream(s.id, names) .. " lag " .. int(s.lag)))
        if s.source ~= up and not selves[up] then
          declare(s.source, ', style="dashed"')
          out[#out + 1] = ("  %s -> %s [style=dashed, color=\"gray40\", label=%s];"):format(q(s.source), q(up),
            q("source of " .. short_stream(s.id, names)))
        end
      end
    end
  end
  out[#out + 1] = "}"
  return table.concat(out, "\n") .. "\n"
end

-- ---- watching ------------------------------------------------------------------------

-- Whether stdout is a terminal.
local function is_tty()
  local ok, uv = pcall(require, "luv")
  return ok and uv.guess_handle(1) == "tty"
end

-- Events per second of each stream since the previous sample.
local function rates_since(prev, st, seconds)
  local rates = {}
  if not prev then return rates end
  local before = {}
  for _, s in ipairs(prev.streams) do before[s.id] = s.last end
  for _, s in ipairs(st.streams) do
    if before[s.id] then rates[s.id] = (s.last - before[s.id]) / seconds end
  end
  return rates
end

local function watch(dir, seconds)
  local uv = require "luv"
  local tty = is_tty()
  local prev
  local function draw()
    local st, err = Status.fetch(dir)
    local body
    if st then
      body = Status.text(st, rates_since(prev, st, seconds))
      prev = st
    else
      body = "odo: " .. tostring(err):gsub("^%u[%u%d_]*: ", "")
    end
    local stamp = ("every %gs: odo status --dir %s    %s"):format(seconds, dir, os.date("%H:%M:%S"))
    if tty then
      -- home, the table, clear what the last one left below it
      io.stdout:write("\27[H\27[2J", stamp, "\n\n", body, "\n")
    else
      io.stdout:write(stamp, "\n", body, "\n\n")
    end
    io.stdout:flush()
  end
  -- Ctrl-C: the interpreter's handler raises "interrupted!" at the next
  -- Lua instruction; stop there, quietly, with the status shells expect
  local ok, err = pcall(function()
    while true do
      draw()
      uv.sleep(math.floor(seconds * 1000))
    end
  end)
  if not ok and tostring(err):find("interrupted!", 1, true) then return 130 end
  io.stderr:write("odo: ", tostring(err), "\n")
  return 1
end

local function interval(arg)
  if not arg then return nil end
  local v = arg[1] or "2"
  local n = tonumber(v)
  if not n or n < 0.1 or n > 86400 then
    return false, ("'%s' is not an interval in seconds (0.1 to 86400)"):format(v)
  end
  return n
end

local function run(args)
  local seconds, why = interval(args.watch)
  if seconds == false then
    io.stderr:write("odo: --watch: ", why, "\n")
    return 2
  end
  if seconds and (args.json or args.dot) then
    io.stderr:write("odo: --watch draws the table; it does not go with --json or --dot\n")
    return 2
  end
  if seconds then return watch(args.dir, seconds) end
  local st, err = Status.fetch(args.dir)
  if not st then return cli.fail(err) end
  if args.json then print(Control().encode(st))
  elseif args.dot then io.stdout:write(Status.dot({ st }))
  else print(Status.text(st)) end
  return 0
end

-- The command (a callable table, so specs and the demo can reach its parts).
return setmetatable(Status, { __call = function(_, args) return run(args) end })
