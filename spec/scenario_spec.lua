-- A fixed sync scenario recorded end to end: two engines over real TLS
-- sessions in memory, fixed keys (Ed25519 signs deterministically) and
-- every timestamp given, so every plaintext sync message and every stored
-- record comes out the same on every run. The recording is committed under
-- spec/fixtures/scenario/ and this spec checks it byte for byte: the wire
-- (every sync message, in order, both directions), what each engine told
-- Lua, and a dump of both stores. A change of the wire or storage format
-- shows here first; such a change is made on purpose, with a protocol or
-- store format bump, and the fixtures rewritten by running this spec with
-- ODO_WRITE_FIXTURES=1.
--
-- The scenario: a source a with its own stream (1500 kv events) and a
-- named stream (40 events); a snapshot of each (kv on a worker thread,
-- last in the loop), compaction and purge; b meets a (catalogues both
-- ways), asks for both streams and an unknown one (refused), catches up
-- from a's snapshot, then follows live appends; a snapshots again and
-- b asks for that snapshot to compact against it; b builds a local
-- snapshot, unsubscribes from the named stream, and records a in its peer
-- history.
local H = require "helper"
local core = require "odo.core"
local odo = require "odo"
local Store = require "odo.store"

local DIR = H.root .. "/spec/fixtures/scenario"
local WRITE = os.getenv("ODO_WRITE_FIXTURES") == "1"
-- sync message names by type, from the codec (core.sync_msg.EVENTS = 0x14)
local NAMES = {}
for k, v in pairs(core.sync_msg) do
  if type(v) == "number" then NAMES[v] = k end
end
local sh = H.sh

-- A value as one deterministic line (tables with sorted keys).
local function show(v)
  if type(v) == "table" then
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = k end
    table.sort(keys, function(x, y) return tostring(x) < tostring(y) end)
    local parts = {}
    for _, k in ipairs(keys) do parts[#parts + 1] = tostring(k) .. "=" .. show(v[k]) end
    return "{" .. table.concat(parts, " ") .. "}"
  elseif type(v) == "string" then
    return v:find("[^%w%p ]") and ("0x" .. H.hex(v)) or ("%q"):format(v)
  end
  return tostring(v)
end

-- Every record of a closed store, one "key value" line each in hex; the
-- store's creation time is the one value the clock gives, so it is masked.
local function dump(dir)
  local lines = {}
  for _, rec in ipairs(H.records(dir)) do
    local v = rec.key == "mcreated" and "<created>" or H.hex(rec.value)
    lines[#lines + 1] = H.hex(rec.key) .. " " .. v
  end
  return table.concat(lines, "\n") .. "\n"
end

-- The first differing line of two texts, for a readable failure.
local function first_difference(want, got)
  local i, wl, gl = 0, want:gmatch("[^\n]*\n?"), got:gmatch("[^\n]*\n?")
  while true do
    i = i + 1
    local w, g = wl(), gl()
    if w ~= g then
      return ("line %d:\n  want %s\n  got  %s"):format(i, (w or "<end>"):sub(1, 300), (g or "<end>"):sub(1, 300))
    end
    if w == nil or w == "" then return "identical" end
  end
end

local function check(name, got)
  local path = DIR .. "/" .. name
  if WRITE then
    H.write_file(path, got)
    return
  end
  local want = H.read_file(path)
  assert(want, "missing fixture " .. path .. " (run with ODO_WRITE_FIXTURES=1)")
  if want ~= got then
    error(("%s differs from the recording: %s"):format(name, first_difference(want, got)), 2)
  end
end

-- kv events with fixed timestamps.
local function puts(from, n, keys, ts)
  local t = {}
  for i = from, from + n - 1 do
    local e = odo.kv.put("k" .. (i % keys), "v" .. i)
    e.ts = ts + i
    t[#t + 1] = e
  end
  return t
end

describe("the recorded sync scenario", function()
  local tmp, tls_a, tls_b

  setup(function()
    tmp = H.tmpdir()
    -- a CA made fresh (it signs no plaintext); node certificates for the
    -- two fixed keys
    sh(("cd '%s' && openssl req -x509 -newkey ed25519 -nodes -keyout ca.key -out ca.pem -subj /CN=ca -days 30 2>&1")
      :format(tmp))
    local function node(name)
      sh(("cd '%s' && openssl req -new -key '%s/%s.key' -out %s.csr -subj /CN=%s 2>&1"
        .. " && openssl x509 -req -in %s.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out %s.pem -days 30 2>&1")
        :format(tmp, DIR, name, name, name, name, name))
      return assert(core.tls_context({ ca = tmp .. "/ca.pem", cert = tmp .. "/" .. name .. ".pem",
        key = DIR .. "/" .. name .. ".key" }))
    end
    tls_a, tls_b = node("a"), node("b")
  end)
  teardown(H.cleanup)

  it("reproduces the recorded wire bytes and stores byte for byte", function()
    local ida, idb = tls_a:id(), tls_b:id()
    local dir_a, dir_b = H.tmpdir() .. "/a", H.tmpdir() .. "/b"
    local sa = assert(Store.open(dir_a, { node_id = ida }))
    local sb = assert(Store.open(dir_b, { node_id = idb }))
    local ya, yb = core.sync(sa.core, tls_a), core.sync(sb.core, tls_b)
    local wire, notes = {}, {}
    local other = sa:stream_id("other")

    -- a's history before b comes: heads, a kv snapshot finished by the
    -- worker thread, a last snapshot finished in the loop, compaction
    assert(sa:append(nil, puts(1, 1500, 7, 1700000000000)))
    assert(sa:append(other, puts(1, 40, 3, 1700000100000)))
    assert.same({ 3, false }, { ya:sign_heads() })
    local kb = assert(core.snapshot_builder(sa.core, ida, "kv", { upto = 600 }))
    while not kb:step(500) do end
    assert(kb:finish_async())
    assert.equal(600, kb:collect())
    local lb = assert(core.snapshot_builder(sa.core, other, "last", { upto = 30 }))
    while not lb:step() do end
    assert.equal(30, lb:finish())
    assert.equal(601, sa:compact(ida))
    assert.equal(31, sa:compact(other))
    assert.equal(0, sa:purge(ida, 100000))
    assert.equal(0, sa:purge(other, 100000))

    -- the sessions: a dials b
    local a = core.session(tls_a, { port = 4001 })
    local b = core.session(tls_b, { port = 4002, server = true })
    a:start()
    H.pump(a, b)
    assert.equal("open", a:info().state)
    ya:attach(a, idb)
    yb:attach(b, ida)

    local side = { [a] = { "b>a", ya }, [b] = { "a>b", yb } }
    -- Moves bytes both ways until neither side has any, handing each sync
    -- message to the receiving engine and recording it and what the
    -- engine reported.
    local function deliver()
      for _ = 1, 1000 do
        local moved = false
        for _, pair in ipairs({ { a, b }, { b, a } }) do
          local from, to = pair[1], pair[2]
          local o = from:output()
          if o then
            moved = true
            from:written(#o)
            for _, e in ipairs(to:feed(o, 0)) do
              if e.event == "message" and NAMES[e.type] then
                local dir, engine = side[to][1], side[to][2]
                wire[#wire + 1] = ("%s %s %s"):format(dir, NAMES[e.type], H.hex(e.payload))
                for _, n in ipairs(engine:handle(to, e.type, e.payload)) do
                  notes[#notes + 1] = dir .. " " .. show(n)
                end
              end
            end
          end
        end
        -- what the messages made the servers owe
        for _, y in ipairs({ ya, yb }) do
          local more, ns = y:pump()
          for _, n in ipairs(ns) do notes[#notes + 1] = "pump " .. show(n) end
          if more then moved = true end
        end
        if not moved and a:info().queued == 0 and b:info().queued == 0 then return end
      end
      error("the scenario did not settle")
    end

    -- catalogues both ways (b has nothing yet)
    assert.is_true(ya:catalogue(a))
    assert.is_true(yb:catalogue(b))
    deliver()
    -- b asks for both streams, live, and for one a does not have
    assert.is_true(yb:subscribe(b, { { id = ida, from = 1 }, { id = other, from = 1 },
      { id = ida .. "/unknown", from = 1 } }, true))
    deliver()
    assert.equal(1500, sb:stream(ida).last)
    assert.equal(40, sb:stream(other).last)

    -- live: appends at a, signed, pushed in one batch per stream
    assert(sa:append(nil, puts(1501, 30, 7, 1700000000000)))
    assert(sa:append(other, puts(41, 5, 3, 1700000100000)))
    assert.same({ 2, false }, { ya:sign_heads() })
    deliver()
    assert.equal(1530, sb:stream(ida).last)
    assert.is_true(ya:catalogue(a, { ida, other }))
    deliver()

    -- a snapshots again at its last revision (worker); b asks for it to
    -- compact against it
    kb = assert(core.snapshot_builder(sa.core, ida, "kv"))
    while not kb:step(500) do end
    assert(kb:finish_async())
    assert.equal(1530, kb:collect())
    assert.is_true(yb:subscribe(b, { { id = ida, from = 1531 } }, true, true))
    deliver()
    assert.equal(1530, sb:stream(ida).snapshot)
    assert.equal(1531, sb:compact(ida))
    assert.equal(0, sb:purge(ida, 100000))

    -- b's own view: a local snapshot of the named stream, built on the
    -- worker thread; it stops following the named stream
    local bb = assert(core.snapshot_builder(sb.core, other, "last"))
    while not bb:step() do end
    assert(bb:finish_async())
    assert.equal(45, bb:collect())
    assert.is_true(yb:unsubscribe(b, { other }))
    deliver()
    assert(sb:peer_put({ id = ida, host = "10.0.0.1", port = 4001, last_seen = 1700000200000 }))
    assert(sa:peer_put({ id = idb, host = "10.0.0.2", port = 4002, last_seen = 1700000200000,
      reason = "left" }))

    assert.is_true(sb:verify(ida))
    assert.is_true(sb:verify(other))
    ya:close()
    yb:close()
    sa:close()
    sb:close()
    check("wire.txt", table.concat(wire, "\n") .. "\n")
    check("notes.txt", table.concat(notes, "\n") .. "\n")
    check("store-a.txt", dump(dir_a))
    check("store-b.txt", dump(dir_b))
  end)

  it("core.sync_msg decodes every recorded message and encodes it back to the same bytes", function()
    local kinds = {}
    for line in H.read_file(DIR .. "/wire.txt"):gmatch("[^\n]+") do
      local name, hex = line:match("^%S+ (%S+) (%x*)$")
      local payload = H.unhex(hex)
      local msg = assert(core.sync_msg.decode(core.sync_msg[name], payload))
      assert.equal(name:lower(), msg.kind)
      local t, again = core.sync_msg.encode(msg)
      assert.equal(core.sync_msg[name], t)
      assert.equal(H.hex(payload), H.hex(again))
      kinds[name] = true
    end
    assert.same({ CATALOGUE = true, SUBSCRIBE = true, UNSUBSCRIBE = true, SNAPSHOT = true,
      EVENTS = true, CAUGHT_UP = true, REFUSED = true }, kinds)
    -- what a receiving engine would say of a malformed one
    local _, err, name = core.sync_msg.decode(core.sync_msg.CAUGHT_UP, "\1x")
    assert.equal("EPROTO", name)
    assert.equal("EPROTO: a malformed CAUGHT_UP", err)
    assert.has_error(function() core.sync_msg.encode({ kind = "refused", stream = "s", code = 1 }) end,
      "sync message field reason must be a string")
  end)
end)
