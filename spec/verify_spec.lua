-- Verifiable streams: heads and snapshots signed by the source, checked by
-- every replica whoever relays them. A tampering relay (spec/relay.lua: a
-- man in the middle in front of a real node, altering the sync messages
-- it passes with odo.core's codec) changes what a node serves; each
-- alteration must be refused for exactly the reason it breaks, and the
-- replica must converge through an honest relay. In memory (real TLS,
-- real signatures), plus odo verify.
local H = require "helper"
local odo = require "odo"
local core = require "odo.core"
local Relay = require "relay"

-- batches of 1000 events each ending at its first head (the cases below
-- name them), not catch-up batches of several heads
local FAST = H.merge(H.FAST, { purgatory_ms = 600000, sync_bulk_batch_bytes = 0 })

describe("verifiable streams", function()
  local env = H.memory_world("v", 5) -- 5: the tampering relay's own side
  local pki, net, nodes, relay
  setup(function() env.setup(); pki = env.pki end)
  teardown(H.cleanup)
  before_each(function() env.before_each(); net, nodes, relay = env.net, env.nodes, nil end)
  -- no handler of any node raised (H.node collects them in n.errors)
  after_each(function()
    if relay then relay.close() end
    for _, n in ipairs(env.after_each()) do assert.same({}, n.errors) end
  end)

  local function node(i, opts)
    opts = opts or {}
    local n = H.net_node(net, i, opts.tls or pki.n[i], {
      peers = opts.peers, listen = opts.listen, policy = H.merge(FAST, opts.policy) })
    n.violations, n.peerlog = {}, {}
    n:on("violation", function(pid, stream, code, reason)
      local st = stream and n.store:stream(stream)
      n.violations[#n.violations + 1] = { pid, stream, code, reason, st and st.last or 0 }
    end)
    n:on("peer", function(p, old, new, reason) n.peerlog[#n.peerlog + 1] = { p.id, old, new, reason } end)
    nodes[#nodes + 1] = n
    return n
  end

  -- What a tampering relay does to the messages node m serves (its store
  -- holds what it relays), by kind: each alters EVENTS or SNAPSHOT.
  local function tamper(kind, m)
    local function mid(msg) return (#msg.events - 1) // 2 + 1 end
    local alter = {
      data = function(msg) -- changes one event's data
        local ev = msg.events[mid(msg)]
        ev.data = ev.data:sub(1, -2) .. string.char(ev.data:byte(-1) ~ 0x20)
      end,
      overlap = function(msg) -- sends the second batch again from the middle of the first
        if msg.first ~= 1001 then return end
        msg.events, msg.first = m.store:read(msg.stream, 501, msg.head_rev), 501
      end,
      second = function(msg) -- changes one event's data in the second batch
        if msg.first ~= 1001 then return end
        local ev = msg.events[mid(msg)]
        ev.data = ev.data:sub(1, -2) .. string.char(ev.data:byte(-1) ~ 0x20)
      end,
      drop = function(msg) -- leaves out an event in the middle
        if #msg.events > 1 then table.remove(msg.events, mid(msg)) end
      end,
      reorder = function(msg) -- swaps two events
        local i = mid(msg)
        if msg.events[i + 1] then msg.events[i], msg.events[i + 1] = msg.events[i + 1], msg.events[i] end
      end,
      foreign = function(msg) -- another stream's first batch under this id
        for _, st in ipairs(m.store:streams()) do
          if st.id ~= msg.stream and st.last >= st.first then
            local h = m.store:head_find(st.id, st.first)
            msg.events = m.store:read(st.id, st.first, h.rev)
            msg.head_rev, msg.head_hash, msg.sig = h.rev, h.hash, h.sig
            return
          end
        end
      end,
      old_head = function(msg) -- keeps the events, claims an older head
        local old = m.store:head_find(msg.stream, 1)
        if old.rev < msg.head_rev then msg.head_rev, msg.head_hash, msg.sig = old.rev, old.hash, old.sig end
      end,
      snapshot = function(msg) -- changes a byte of a snapshot
        if #msg.data > 0 then msg.data = msg.data:sub(1, -2) .. string.char(msg.data:byte(-1) ~ 0x01) end
      end,
    }
    local f = assert(alter[kind], kind)
    local on = kind == "snapshot" and "snapshot" or "events"
    return function(msg)
      if msg.kind == on then f(msg) end
      return msg
    end
  end

  local last = H.node_last

  -- source a (10.0.0.1), a tampering relay m (.2) and an honest relay h
  -- (.3) that both follow a; replica r (.4) knows only the relays and
  -- prefers m. m is a real node on port 4001 behind spec/relay.lua on
  -- port 4000, which alters what m serves. `r_policy`: more of r's policy.
  local function world(kind, source_policy, prepare, r_policy)
    local a = node(1, { policy = source_policy })
    if prepare then prepare(a) else
      for _ = 1, 3 do a:append(nil, H.events(1000)) end
      a:append(a:stream_id("other"), H.events(1500, "other"))
    end
    local m = node(2, { peers = { "10.0.0.1:4000" }, listen = "10.0.0.2:4001" })
    local h = node(3, { peers = { "10.0.0.1:4000" } })
    local done = function()
      for _, st in ipairs(a.store:streams()) do
        if last(m, st.id) < st.last or last(h, st.id) < st.last then return false end
      end
      return true
    end
    assert.is_true(net.run_until(done, 20000))
    relay = Relay.start(net, { host = "10.0.0.2", port = 4000, front_tls = core.tls_context(pki.n[2]),
      back_tls = core.tls_context(pki.n[5]), to_host = "10.0.0.2", to_port = 4001, alter = tamper(kind, m) })
    local r = node(4, { peers = { "10.0.0.2:4000", "10.0.0.3:4000" }, policy = H.merge({
      upstream = function(stream, candidates, ours, current, n)
        for _, c in ipairs(candidates) do if c.id == m.id then return m.id end end
        return odo.policy.upstream(stream, candidates, ours, current, n)
      end,
    }, r_policy) })
    -- everything r's application ever sees
    r.seen = {}
    r:subscribe(nil, 1, function(batch)
      if batch.snapshot then r.seen[#r.seen + 1] = { batch.stream, "snapshot", batch.snapshot.data } return end
      for _, ev in ipairs(batch) do r.seen[#r.seen + 1] = { batch.stream, ev.rev, ev.data } end
    end)
    return a, m, h, r
  end

  local function converged(a, r)
    return function()
      for _, st in ipairs(a.store:streams()) do
        local rs = r.store:stream(st.id)
        if not rs or rs.last ~= st.last then return false end
      end
      return true
    end
  end

  local function honest(a, r)
    for _, st in ipairs(a.store:streams()) do
      local rs = r.store:stream(st.id)
      assert.equal(H.hex(st.hash), H.hex(rs.hash))
      assert.is_true(r.store:verify(st.id))
    end
    -- nothing r's application saw differs from what a wrote; only
    -- revisions a has compacted away (below its first held) go unchecked
    assert.is_true(#r.seen > 0, "r's application saw nothing")
    for _, s in ipairs(r.seen) do
      if s[2] ~= "snapshot" then
        local first = a.store:stream(s[1]).first
        if s[2] >= first then
          local ev = assert(a.store:read(s[1], s[2], s[2]))
          assert.equal(s[2], ev[1] and ev[1].rev, ("%s #%d"):format(s[1], s[2]))
          assert.equal(ev[1].data, s[3])
        end
      end
    end
  end

  -- r refused m for exactly `reason` (a function of the stream refused)
  local function refused(r, m, reason)
    assert.is_true(#r.violations >= 1, "no violation reported")
    local v = r.violations[1]
    assert.equal(m.id, v[1])
    assert.equal("verification failed", v[3])
    assert.equal(reason(v[2]), v[4])
    local went
    for _, e in ipairs(r.peerlog) do
      if e[1] == m.id and e[3] == "purgatory" then went = e end
    end
    assert.is_truthy(went, "the tampering relay did not go to purgatory")
    assert.equal("verification failed", went[4])
    -- each violation also went to r's error handler, and nothing else did
    assert.equal(#r.violations, #r.errors, table.concat(r.errors, "\n"))
    for i, e in ipairs(r.errors) do assert.is_truthy(e:find(r.violations[i][4], 1, true), e) end
    for i = #r.errors, 1, -1 do r.errors[i] = nil end
  end

  -- every stream's first batch is 1..1000 (heads every 1000 revisions);
  -- a's own stream then has 1001..2000, "other" 1001..1500
  local function unchained(stream)
    return ("events 1 to 1000 of stream %s do not chain to their signed head: "
      .. "they are not what the source wrote"):format(stream)
  end
  for _, case in ipairs({
    { "data", "changes one event's data", unchained },
    { "drop", "drops an event in the middle", function()
      return "a batch of 999 events from 1 does not end at its head 1000"
    end },
    { "reorder", "reorders two events", unchained },
    { "foreign", "replays another stream's events under this stream's id", function(stream)
      return ("the head at 1000 of stream %s is not signed by its source"):format(stream)
    end },
    { "old_head", "replays an old signed head", function(stream)
      return ("a batch of %d events from 1001 does not end at its head 1000")
        :format(stream:find("/other", 1, true) and 500 or 1000)
    end },
  }) do
    it("detects a relay that " .. case[2] .. ", and converges through another", function()
      local a, m, _, r = world(case[1])
      assert.is_true(net.run_until(converged(a, r), 30000))
      refused(r, m, case[3])
      honest(a, r)
    end)
  end

  -- the commit queue's verifiers (or its worker, with none) check a
  -- batch's chain: the refused batch is not stored, nor a later batch of
  -- its stream queued behind it; the batch before it is
  for _, verifiers in ipairs({ 1, 0, 4 }) do
    it(("refuses a tampered second batch on the commit queue (%d verifier threads), keeping the first, nothing "
      .. "after it"):format(verifiers), function()
      local a, m, _, r = world("second", nil, nil, { verify_threads = verifiers })
      assert.is_true(net.run_until(converged(a, r), 30000))
      local v = r.violations[1]
      refused(r, m, function(stream)
        return ("events 1001 to %d of stream %s do not chain to their signed head: they are not what the source wrote")
          :format(stream:find("/other", 1, true) and 1500 or 2000, stream)
      end)
      assert.equal(1000, v[5])
      honest(a, r)
    end)
  end

  -- a batch from before the stream's tip (batches of it still on their way
  -- to the disk count): only the events past the tip are kept
  it("keeps the events past what it holds of a batch that overlaps it", function()
    local a, _, _, r = world("overlap")
    assert.is_true(net.run_until(converged(a, r), 30000))
    assert.same({}, r.violations)
    honest(a, r)
  end)

  it("detects a relay that forges a snapshot, and converges through another", function()
    local a, m, _, r = world("snapshot", {
      reducer = "kv", snapshot_every_events = 1000, compact_after_events = 1,
      snapshot_every_ms = 1e9, compact_after_ms = 1e9,
    }, function(a)
      for i = 1, 1500 do a:append(nil, odo.kv.put("k" .. (i % 10), "v" .. i)) end
      assert.is_true(net.run_until(function() return a.store:stream(a.id).first > 1 end, 5000))
    end)
    assert.is_true(net.run_until(converged(a, r), 30000))
    refused(r, m, function(stream)
      assert.equal(a.id, stream)
      return ("the snapshot at 1000 of stream %s is not signed by its source"):format(stream)
    end)
    honest(a, r)
    local snap = r.store:snapshot_get(a.id)
    assert.equal(a.store:snapshot_get(a.id).data, snap.data)
    -- a replica that never met the source verifies its snapshot with the
    -- key that travelled with the catalogue
    assert.is_true(core.verify(r.store:key_get(a.id),
      core.snapshot_message(a.id, snap.rev, snap.hash, snap.data, snap.format), snap.sig))
  end)

  it("signs a head every 1000 revisions and at the end of every live batch", function()
    local a = node(1)
    a:append(nil, H.events(2500))
    net.drain()
    local revs = {}
    local rev = 1
    while true do
      local h = a.store:head_find(a.id, rev)
      if not h then break end
      revs[#revs + 1] = h.rev
      rev = h.rev + 1
    end
    assert.same({ 1000, 2000, 2500 }, revs)
    -- appends in one loop turn share one head (signing coalesces them)
    for _ = 1, 30 do a:append(nil, H.events(1)) end
    net.drain()
    assert.equal(2530, a.store:head_find(a.id, 2501).rev)
    assert.is_nil(a.store:head_find(a.id, 2531))
  end)

  it("signs events appended while the node was stopped when it next runs", function()
    local dir = H.tmpdir()
    local a = H.node { dir = dir, tls = pki.n[1], adapter = net, policy = FAST }
    a:append(nil, H.events(10))
    net.drain()
    a:close()
    local s = assert(odo.store.open(dir .. "/store"))
    s:append(nil, H.events(1500, "offline"))
    local verdict = require("odo.verify").stream(s, s.node_id)
    assert.is_true(verdict.ok)
    assert.matches("events 11 to 1510 are not signed yet", verdict.notes[1])
    s:close()
    local a2 = H.node { dir = dir, tls = pki.n[1], adapter = net, policy = FAST }
    nodes[#nodes + 1] = a2
    net.drain()
    assert.equal(1510, a2.store:head_last(a2.id).rev)
    verdict = require("odo.verify").stream(a2.store, a2.id)
    assert.same({}, verdict.notes)
    assert.is_true(verdict.ok)
  end)

  it("works end to end with the seed README's RSA-4096 self-signed certificates", function()
    local r1, r2 = pki.seed("rsa1", 4096), pki.seed("rsa2", 4096)
    pki.bundle("rsa-bundle.pem", { r1, r2 })
    local a = node(1, { tls = r1 })
    local b = node(2, { tls = r2, peers = { "10.0.0.1:4000" } })
    for _ = 1, 40 do a:append(nil, H.events(1)) end -- one loop turn: one head
    a:append(nil, H.events(2000))
    assert.is_true(net.run_until(function() return last(b, a.id) == 2040 end, 30000))
    assert.is_true(b.store:verify(a.id))
    local h = b.store:head_last(a.id)
    assert.equal(2040, h.rev)
    assert.equal(512, #h.sig) -- RSA-4096
    assert.is_true(core.verify(b.store:key_get(a.id), core.head_message(a.id, h.rev, h.hash), h.sig))
    assert.is_true(require("odo.verify").stream(b.store, a.id).ok)
  end)

  it("odo verify reports a tampered store, saying what and where", function()
    local a = node(1)
    a:append(nil, H.events(1490))
    -- the last ten one at a time: records of their own on the source
    for i = 1491, 1500 do a:append(nil, { { type = "t", data = "e" .. i } }) end
    local b = node(2, { peers = { "10.0.0.1:4000" } })
    assert.is_true(net.run_until(function() return last(b, a.id) == 1500 end, 10000))
    local dir = b.dir
    b:close()
    net.drain()
    -- forge event 700's data behind the store's back, with a valid
    -- checksum: the replica holds it in a segment (a received batch, one
    -- record keyed by its last revision), which no longer chains to its
    -- stored hash; the report names the segment's first revision
    local num
    for _, rec in ipairs(H.records(dir .. "/store")) do
      if rec.key == "c" .. a.id then num = string.unpack(">I8", rec.value, 6) end
    end
    local prefix = "z" .. string.pack(">I8", num)
    local key, raw, first
    for _, rec in ipairs(H.records(dir .. "/store")) do
      local k = rec.key
      if not key and #k == 18 and k:sub(1, 9) == prefix and k:byte(18) == 0 then
        local seg_last = string.unpack(">I8", k, 10)
        local count = string.unpack(">I4", rec.value, 6)
        if seg_last >= 700 and seg_last - count + 1 <= 700 then
          key, raw, first = k, rec.value, seg_last - count + 1
        end
      end
    end
    assert(key, "no segment holds event 700")
    assert.is_true(first < 700) -- the tampered byte is in a later event
    local payload = raw:sub(5, -2) .. string.char((raw:byte(-1) + 1) % 256)
    local out, ok = H.ldb("putframed", dir .. "/store", H.hex(key), H.hex(payload))
    assert(ok, out)
    out = H.run(("'%s' verify --dir '%s'"):format(H.odo, dir))
    assert.matches("BAD +" .. a.id, out)
    assert.matches("chain broken at revision " .. first .. ":", out, 1, true)
    assert.matches("stored as one segment", out, 1, true)
    local _, rc = H.run(("'%s' verify --dir '%s' '%s'"):format(H.odo, dir, a.id))
    assert.is_false(rc)
    -- the source's own copy is fine
    a:close()
    out, rc = H.run(("'%s' verify --dir '%s' '%s'"):format(H.odo, a.dir, a.id))
    assert.is_true(rc, out)
    -- one event of a record of its own, forged, is named by its revision
    key = prefix .. string.pack(">I8", 1495)
    for _, rec in ipairs(H.records(a.dir .. "/store")) do
      if rec.key == key then raw = rec.value end
    end
    payload = raw:sub(5, -2) .. string.char((raw:byte(-1) + 1) % 256)
    out, ok = H.ldb("putframed", a.dir .. "/store", H.hex(key), H.hex(payload))
    assert(ok, out)
    out = H.run(("'%s' verify --dir '%s'"):format(H.odo, a.dir))
    assert.matches("chain broken at revision 1495", out, 1, true)
  end)
end)
