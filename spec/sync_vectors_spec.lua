-- docs/PROTOCOL.md's "Sync" and "Signatures" test vectors: the signed
-- bytes and the fixture key's signatures are what the code produces and
-- accepts; the frames, built by hand from the documented layouts, are what
-- a source's engine sends and what a receiving engine verifies and stores;
-- and the page still shows every vector verbatim.
local H = require "helper"
local core = require "odo.core"
local Store = require "odo.store"

local KEY = H.root .. "/spec/fixtures/ed25519-vector.key"

-- The fixture stream's id as str8, as the page writes it.
local SID = "40 3230633331323764323162336636366235616665373436313531303665363737\n"
  .. "   6238616162363462396131643534343231316138666238323664396166383430"
local H2 = "9f838cbab97b0ce463f6b74557f908cdf79a127124d1f806bf72d7e3adb509b1"

-- Values, each as the page writes it (whitespace is not part of the bytes).
local V = {
  key_pem = "-----BEGIN PRIVATE KEY-----\n"
    .. "MC4CAQAwBQYDK2VwBCIEICfV2MqxJ0sYmtED73UUvRDQOe/GG7gojbcH+EAONYl0\n"
    .. "-----END PRIVATE KEY-----",
  spki = "302a300506032b6570032100b91dd9f213143b1a2aa7ceff7ec3e7c3fea3dcb3a366feab4cf3c1fc82c3baac",
  id = "20c3127d21b3f66b5afe74615106e677b8aab64b9a1d544211a8fb826d9af840",
  h0 = "afa96346188e8ce41e5fce31cf0d0577f36fe2916e7abc3d367bece2eb1ac59b",
  h1 = "7c6e793f6a18fcfa85f549bb0224947d34d58c1883b05ddb7815e61ac6406f4b",
  h2 = H2,
  head_msg = "6f646f2d6a6f75726e616c2068656164207631 00\n" .. SID .. "\n0000000000000002\n" .. H2,
  head_sig = "f6cc4853e357839d7bf4950901bd3eb3adfe6a2d36eda4b05536cd4ec0365426\n"
    .. "bc2654370d3edcf56cc0b5b7310473ef59cee591fd84b12fd64694dac623480e",
  snap_data = "000000000000000200000000000003e9017800000000",
  snap_data_sha = "b6225b6abf0a9bcc61a7f02dd2f34a06207177c9279809a175fd9a5cb2fa67b1",
  snap_msg = "6f646f2d6a6f75726e616c20736e617073686f74207631 00\n" .. SID .. "\n0000000000000002\n" .. H2
    .. "\nb6225b6abf0a9bcc61a7f02dd2f34a06207177c9279809a175fd9a5cb2fa67b1\n04 6c617374",
  snap_sig = "b9d57ef7b897f485787eb24031b26797663b87a7722dce7fb2fb54c193d21df4\n"
    .. "594bd0fe7e6f9eb2f12ac510c0464a1e1316e55037039a45a369c8edba996108",
}

-- Whole frames, as the page writes them.
local F = {
  catalogue = "0000009b 10\n01 0001\n"
    .. "002c 302a300506032b6570032100b91dd9f213143b1a2aa7ceff7ec3e7c3fea3dcb3a366feab4cf3c1fc82c3baac\n"
    .. "00000001\n" .. SID .. "\n0000000000000001 0000000000000002 0000000000000000 0000000000000002 01 00 0000",
  subscribe = "0000005f 11\n01 00000002\n" .. SID .. "\n0000000000000001\n07 756e6b6e6f776e 0000000000000001",
  refused = "00000029 16\n07 756e6b6e6f776e 0001\n001c 74686973206e6f646520686173206e6f20737563682073747265616d",
  events = "000000db 14\n" .. SID .. "\n0000000000000001 00000002\n"
    .. "00000000000003e8 03 707574 00000005 68656c6c6f\n"
    .. "00000000000003e9 01 78 00000000\n"
    .. "0000000000000002 " .. H2 .. "\n"
    .. "0040 f6cc4853e357839d7bf4950901bd3eb3adfe6a2d36eda4b05536cd4ec0365426\n"
    .. "     bc2654370d3edcf56cc0b5b7310473ef59cee591fd84b12fd64694dac623480e",
  caught_up = "0000004a 15\n" .. SID .. "\n0000000000000002",
  snapshot = "000000cf 13\n" .. SID .. "\n0000000000000002 " .. H2 .. "\n04 6c617374\n"
    .. "0040 b9d57ef7b897f485787eb24031b26797663b87a7722dce7fb2fb54c193d21df4\n"
    .. "     594bd0fe7e6f9eb2f12ac510c0464a1e1316e55037039a45a369c8edba996108\n"
    .. "00000016 00000000\n000000000000000200000000000003e9017800000000",
  unsubscribe = "00000046 12\n00000001\n" .. SID,
}

-- The two events of docs/STORAGE.md's vectors.
local EVENTS = { { type = "put", data = "hello", ts = 1000 }, { type = "x", data = "", ts = 1001 } }

local function bin(v) return H.unhex((v:gsub("%s", ""))) end

local function sh(cmd)
  local out, ok = H.run(cmd)
  assert(ok, cmd .. "\n" .. out)
  return out
end

local function write(path, bytes)
  local fh = assert(io.open(path, "wb"))
  fh:write(bytes)
  fh:close()
end

-- ---- frames built by hand from the page's layouts ----------------------------------

local function frame(type, payload)
  return string.pack(">I4B", #payload + 1, type) .. payload
end

local function catalogue_frame(full, keys, entries)
  local p = { string.pack(">BI2", full and 1 or 0, #keys) }
  for _, k in ipairs(keys) do p[#p + 1] = string.pack(">s2", k) end
  p[#p + 1] = string.pack(">I4", #entries)
  for _, e in ipairs(entries) do
    p[#p + 1] = string.pack(">s1I8I8I8I8BBI2", e.id, e.first, e.last, e.snapshot, e.fresh, e.flags, e.hops, e.key)
  end
  return frame(0x10, table.concat(p))
end

local function events_frame(id, first, evs, head_rev, head_hash, sig)
  local p = { string.pack(">s1I8I4", id, first, #evs) }
  for _, e in ipairs(evs) do p[#p + 1] = string.pack(">I8s1s4", e.ts, e.type, e.data) end
  p[#p + 1] = string.pack(">I8", head_rev) .. head_hash .. string.pack(">s2", sig)
  return frame(0x14, table.concat(p))
end

local function snapshot_frame(id, rev, hash, format, sig, total, offset, bytes)
  return frame(0x13, string.pack(">s1I8", id, rev) .. hash
    .. string.pack(">s1s2I4I4", format, sig, total, offset) .. bytes)
end

-- The message payload of a whole frame.
local function payload(f) return f:sub(6) end

-- The frames ("message" events) among a session's events, rebuilt whole.
local function frames_of(events)
  local out = {}
  for _, e in ipairs(events) do
    if e.event == "message" then out[#out + 1] = frame(e.type, e.payload) end
  end
  return out
end

describe("sync and signature test vectors", function()
  local dir, pki, ftls, tls_a, tls_b

  setup(function()
    dir = H.tmpdir()
    pki = H.pki(dir)
    pki.a = pki.node("a")
    pki.b = pki.node("b")
    -- a self-signed certificate for the fixture key, so it makes a context
    local cert = dir .. "/vector.pem"
    sh(("openssl req -x509 -new -key '%s' -subj /CN=odo-vector -days 30 -out '%s' 2>&1"):format(KEY, cert))
    ftls = assert(core.tls_context({ ca = cert, cert = cert, key = KEY }))
    tls_a = assert(core.tls_context(pki.a))
    tls_b = assert(core.tls_context(pki.b))
  end)
  teardown(H.cleanup)

  -- Two sessions over memory, introduced: a dialled b.
  local function pair()
    local a = core.session(tls_a, { port = 4001 })
    local b = core.session(tls_b, { port = 4002, server = true })
    a:start()
    H.pump(a, b)
    assert.equal("open", a:info().state)
    assert.equal("open", b:info().state)
    return a, b
  end

  -- The fixture key's own stream holding the two events.
  local function source_store()
    local s = assert(Store.open(H.tmpdir() .. "/store", { node_id = V.id }))
    assert(s:append(nil, EVENTS))
    return s
  end

  -- A receiving node (b's key) with a sync engine attached to a session.
  local function receiver()
    local _, b = pair()
    local store = assert(Store.open(H.tmpdir() .. "/store", { node_id = tls_b:id() }))
    local engine = core.sync(store.core, tls_b)
    engine:attach(b, tls_a:id())
    return engine, b, store
  end

  it("the fixture key: its SubjectPublicKeyInfo and node id", function()
    assert.equal(V.key_pem .. "\n", H.read_file(KEY))
    local der = sh(("openssl pkey -in '%s' -pubout -outform DER | od -An -tx1 | tr -d ' \\n'"):format(KEY))
    assert.equal(V.spki, der)
    assert.equal(V.id, H.hex(H.sha256(bin(V.spki))))
    assert.equal(V.id, ftls:id())
    assert.equal(bin(V.spki), ftls:public_key())
  end)

  it("the chain hashes of the two events on the fixture stream", function()
    local s = source_store()
    local evs = s:read(V.id)
    s:close()
    local h0 = H.sha256("odo-journal chain v1\0" .. V.id)
    assert.equal(V.h0, H.hex(h0))
    local h1 = H.sha256(h0 .. H.encode_event(1, 1000, "put", "hello"))
    assert.equal(V.h1, H.hex(h1))
    assert.equal(V.h2, H.hex(H.sha256(h1 .. H.encode_event(2, 1001, "x", ""))))
    assert.equal(V.h1, H.hex(evs[1].hash))
    assert.equal(V.h2, H.hex(evs[2].hash))
  end)

  it("(a) head_message and snapshot_message produce the documented bytes", function()
    local h2 = bin(V.h2)
    local head = core.head_message(V.id, 2, h2)
    assert.equal(H.hex(bin(V.head_msg)), H.hex(head))
    assert.equal(head, "odo-journal head v1\0" .. string.pack(">s1I8", V.id, 2) .. h2)
    local data = bin(V.snap_data)
    assert.equal(data, H.encode_event(2, 1001, "x", ""))
    assert.equal(V.snap_data_sha, H.hex(H.sha256(data)))
    local snap = core.snapshot_message(V.id, 2, h2, data, "last")
    assert.equal(H.hex(bin(V.snap_msg)), H.hex(snap))
    assert.equal(snap, "odo-journal snapshot v1\0" .. string.pack(">s1I8", V.id, 2) .. h2
      .. H.sha256(data) .. string.pack("s1", "last"))
  end)

  it("(b) the fixture key signs them with the documented signatures", function()
    for _, v in ipairs({ { V.head_msg, V.head_sig }, { V.snap_msg, V.snap_sig } }) do
      local msg, sig = bin(v[1]), bin(v[2])
      assert.equal(H.hex(sig), H.hex(ftls:sign(msg)))
      -- and so does the openssl command line (Ed25519 is deterministic)
      local f = dir .. "/msg.bin"
      write(f, msg)
      assert.equal(H.hex(sig), sh(("openssl pkeyutl -sign -rawin -inkey '%s' -in '%s' | od -An -tx1 | tr -d ' \\n'")
        :format(KEY, f)))
    end
    -- the source's engine stores the same signatures for its head and for
    -- a snapshot stored before it existed
    local s = source_store()
    assert(s:snapshot_put(V.id, 2, bin(V.snap_data), { format = "last" }))
    assert.equal("", s:snapshot_get(V.id, "source").sig)
    local engine = core.sync(s.core, ftls)
    assert.equal(1, (engine:sign_heads()))
    local head = s:head_find(V.id, 1)
    assert.same({ 2, V.h2, H.hex(bin(V.head_sig)) }, { head.rev, H.hex(head.hash), H.hex(head.sig) })
    assert.is_true(engine:sign_snapshot(V.id))
    assert.equal(H.hex(bin(V.snap_sig)), H.hex(s:snapshot_get(V.id, "source").sig))
    assert.is_false(engine:sign_snapshot(V.id))
    -- with the engine there, the store signs a source snapshot as it stores it
    assert(s:snapshot_put(V.id, 2, bin(V.snap_data), { format = "last" }))
    assert.equal(H.hex(bin(V.snap_sig)), H.hex(s:snapshot_get(V.id, "source").sig))
    engine:close()
    s:close()
  end)

  it("(c) core.verify accepts them and refuses any changed byte", function()
    local spki = bin(V.spki)
    for _, v in ipairs({ { V.head_msg, V.head_sig }, { V.snap_msg, V.snap_sig } }) do
      local msg, sig = bin(v[1]), bin(v[2])
      assert.is_true(core.verify(spki, msg, sig))
      local function flip(s, i) return s:sub(1, i - 1) .. string.char(s:byte(i) ~ 1) .. s:sub(i + 1) end
      for i = 1, #msg do assert.is_false(core.verify(spki, flip(msg, i), sig), "message byte " .. i) end
      for i = 1, #sig do assert.is_false(core.verify(spki, msg, flip(sig, i)), "signature byte " .. i) end
      assert.is_false(core.verify(tls_a:public_key(), msg, sig))
    end
  end)

  it("RSA keys sign with RSA-PSS (SHA-256, MGF1-SHA-256, salt 32) and EC keys with ECDSA, as openssl reads them",
    function()
      local msg = bin(V.head_msg)
      local m = dir .. "/rsa-msg.bin"
      write(m, msg)
      -- RSA: the seed's kind of key
      local rsa = pki.seed("rsa-vec", 2048)
      local rctx = assert(core.tls_context({ ca = rsa.cert, cert = rsa.cert, key = rsa.key }))
      local sig = rctx:sign(msg)
      assert.equal(256, #sig)
      write(dir .. "/rsa.sig", sig)
      sh(("openssl x509 -in '%s' -pubkey -noout > '%s/rsa-pub.pem'"):format(rsa.cert, dir))
      local pss = "-sigopt rsa_padding_mode:pss -sigopt rsa_mgf1_md:sha256 -sigopt rsa_pss_saltlen:"
      local verify = "openssl dgst -sha256 -verify '%s/rsa-pub.pem' " .. pss .. "%d -signature '%s/rsa.sig' '%s'"
      local _, ok32 = H.run(verify:format(dir, 32, dir, m))
      local _, ok20 = H.run(verify:format(dir, 20, dir, m))
      assert.is_true(ok32)
      assert.is_false(ok20)
      for _, salt in ipairs({ 32, 20 }) do
        sh(("openssl dgst -sha256 -sign '%s' " .. pss .. "%d -out '%s/rsa-o.sig' '%s'"):format(rsa.key, salt, dir, m))
        assert.equal(salt == 32, core.verify(rctx:public_key(), msg, H.read_file(dir .. "/rsa-o.sig")))
      end
      -- EC: ECDSA over SHA-256, DER signatures
      sh(("cd '%s' && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ec.key"
        .. " -out ec.pem -subj /CN=ec -days 30 2>&1"):format(dir))
      local ectx = assert(core.tls_context({ ca = dir .. "/ec.pem", cert = dir .. "/ec.pem", key = dir .. "/ec.key" }))
      sig = ectx:sign(msg)
      assert.equal(0x30, sig:byte(1)) -- SEQUENCE { r, s }
      write(dir .. "/ec.sig", sig)
      sh(("openssl x509 -in '%s/ec.pem' -pubkey -noout > '%s/ec-pub.pem'"):format(dir, dir))
      sh(("openssl dgst -sha256 -verify '%s/ec-pub.pem' -signature '%s/ec.sig' '%s'"):format(dir, dir, m))
      sh(("openssl dgst -sha256 -sign '%s/ec.key' -out '%s/ec-o.sig' '%s'"):format(dir, dir, m))
      assert.is_true(core.verify(ectx:public_key(), msg, H.read_file(dir .. "/ec-o.sig")))
    end)

  it("(d) are the ones docs/PROTOCOL.md shows, verbatim", function()
    local fh = assert(io.open(H.root .. "/docs/PROTOCOL.md"))
    local doc = fh:read("a")
    fh:close()
    for _, t in ipairs({ V, F }) do
      for k, v in pairs(t) do
        assert.truthy(doc:find(v, 1, true), k .. " is missing from docs/PROTOCOL.md")
      end
    end
  end)

  it("the frames are what a source's engine sends, byte for byte", function()
    local src = source_store()
    local ys = core.sync(src.core, ftls)
    ys:sign_heads()
    local a, b = pair()
    local rstore = assert(Store.open(H.tmpdir() .. "/store", { node_id = tls_b:id() }))
    local yr = core.sync(rstore.core, tls_b)
    ys:attach(a, tls_b:id())
    yr:attach(b, tls_a:id())
    local function hexes(list)
      local out = {}
      for i, f in ipairs(list) do out[i] = H.hex(f) end
      return out
    end
    -- each side hands the other's engine what arrived, returning the frames
    local function hand(events, engine, s)
      local fs, notes = frames_of(events), {}
      for _, f in ipairs(fs) do
        for _, n in ipairs(engine:handle(s, f:byte(5), payload(f))) do notes[#notes + 1] = n end
      end
      return fs, notes
    end
    local function to_b() return hand(select(2, H.pump(a, b)), yr, b) end
    local function to_a() return hand((H.pump(a, b)), ys, a) end

    assert.is_true(ys:catalogue(a))
    local fs, notes = to_b()
    assert.same(hexes({ bin(F.catalogue) }), hexes(fs))
    assert.equal("catalogue", notes[1].event)

    yr:subscribe(b, { { id = V.id, from = 1 }, { id = "unknown", from = 1 } }, true)
    fs, notes = to_a()
    assert.same(hexes({ bin(F.subscribe) }), hexes(fs))
    assert.same({ { event = "subscribed", stream = V.id, from = 1 } }, notes)
    ys:pump()
    fs, notes = to_b()
    assert.same(hexes({ bin(F.refused), bin(F.events), bin(F.caught_up) }), hexes(fs))
    assert.same({ "refused", "events", "caught_up" }, { notes[1].event, notes[2].event, notes[3].event })
    assert.same({ 2, 2 }, { notes[2].last, notes[2].count })

    -- a snapshot, compaction, and a subscriber behind it
    assert(src:snapshot_put(V.id, 2, bin(V.snap_data), { format = "last" })) -- signed as stored
    assert.equal(3, src:compact(V.id, 2))
    yr:subscribe(b, { { id = V.id, from = 1 } }, true)
    to_a()
    ys:pump()
    fs, notes = to_b()
    assert.same(hexes({ bin(F.snapshot), bin(F.caught_up) }), hexes(fs))
    assert.same({ "snapshot", 2 }, { notes[1].event, notes[1].rev })

    yr:unsubscribe(b, { V.id })
    fs, notes = to_a()
    assert.same(hexes({ bin(F.unsubscribe) }), hexes(fs))
    assert.same({}, notes)
    assert.same({}, ys:info(a).serving)
    ys:close()
    yr:close()
    src:close()
    rstore:close()
  end)

  it("(e) an EVENTS frame built per the document is verified and stored; a changed data byte stores nothing",
    function()
      local built = events_frame(V.id, 1, EVENTS, 2, bin(V.h2), bin(V.head_sig))
      assert.equal(H.hex(bin(F.events)), H.hex(built))
      local engine, session, store = receiver()
      -- not asked for yet: dropped
      assert.same({}, engine:handle(session, 0x14, payload(built)))
      engine:subscribe(session, { { id = V.id, from = 1 } }, true)
      store.core:key_put(V.id, bin(V.spki))

      local function refused(f, why)
        local notes = engine:handle(session, 0x14, payload(f))
        assert.equal(1, #notes)
        assert.same({ "violation", "verification failed" }, { notes[1].event, notes[1].code })
        assert.matches(why, notes[1].reason)
      end
      local tampered = built:gsub("hello", "hellp")
      assert.equal(#built, #tampered)
      refused(tampered, "do not chain to their signed head")
      assert.is_nil(store:stream(V.id))
      assert.same({}, store:streams())
      refused(built:sub(1, -2) .. string.char(built:byte(-1) ~ 1), "is not signed by its source")
      assert.is_nil(store:stream(V.id))

      local notes = engine:handle(session, 0x14, payload(built))
      assert.same({ { event = "events", stream = V.id, last = 2, count = 2 } }, notes)
      local evs = store:read(V.id)
      assert.equal(2, #evs)
      for i, e in ipairs(evs) do
        assert.same({ i, EVENTS[i].ts, EVENTS[i].type, EVENTS[i].data }, { e.rev, e.ts, e.type, e.data })
      end
      assert.same({ V.h1, V.h2 }, { H.hex(evs[1].hash), H.hex(evs[2].hash) })
      local head = store:head_find(V.id, 1)
      assert.same({ 2, V.h2, H.hex(bin(V.head_sig)) }, { head.rev, H.hex(head.hash), H.hex(head.sig) })
      local st = store:stream(V.id)
      assert.same({ 1, 2, false }, { st.first, st.last, st.own })
      -- the same batch again is what the store holds: dropped as stale
      assert.same({}, engine:handle(session, 0x14, payload(built)))
      assert.equal(2, #store:read(V.id))
      engine:close()
      store:close()
    end)

  it("a CATALOGUE frame built per the document is read, and binds the source's key", function()
    local function entry()
      return { id = V.id, first = 1, last = 2, snapshot = 0, fresh = 2, flags = 1, hops = 0, key = 0 }
    end
    local built = catalogue_frame(true, { bin(V.spki) }, { entry() })
    assert.equal(H.hex(bin(F.catalogue)), H.hex(built))
    local engine, session, store = receiver()
    -- a key that is not the source's is ignored
    local notes = engine:handle(session, 0x10, payload(catalogue_frame(true, { tls_a:public_key() }, { entry() })))
    assert.equal("catalogue", notes[1].event)
    assert.is_nil(store:key_get(V.id))
    engine:subscribe(session, { { id = V.id, from = 1 } }, true)
    local events = events_frame(V.id, 1, EVENTS, 2, bin(V.h2), bin(V.head_sig))
    notes = engine:handle(session, 0x14, payload(events))
    assert.same({ "violation", "verification failed" }, { notes[1].event, notes[1].code })
    assert.matches("no public key is known", notes[1].reason)

    notes = engine:handle(session, 0x10, payload(built))
    assert.same({ { event = "catalogue", full = true, entries = {
      { id = V.id, first = 1, last = 2, snapshot = 0, source = true, direct = false, follows_you = false,
        hops = 0, fresh = 2 } } } }, notes)
    assert.equal(V.spki, H.hex(store:key_get(V.id)))
    -- the key came with the catalogue: the batch now verifies
    notes = engine:handle(session, 0x14, payload(events))
    assert.same({ { event = "events", stream = V.id, last = 2, count = 2 } }, notes)
    engine:close()
    store:close()
  end)

  it("a SNAPSHOT frame built per the document is verified and installed; a changed data byte is refused", function()
    local data = bin(V.snap_data)
    local built = snapshot_frame(V.id, 2, bin(V.h2), "last", bin(V.snap_sig), #data, 0, data)
    assert.equal(H.hex(bin(F.snapshot)), H.hex(built))
    local engine, session, store = receiver()
    engine:subscribe(session, { { id = V.id, from = 1 } }, true)
    store.core:key_put(V.id, bin(V.spki))
    local tampered = built:sub(1, -2) .. "\1"
    local notes = engine:handle(session, 0x13, payload(tampered))
    assert.same({ "violation", "verification failed" }, { notes[1].event, notes[1].code })
    assert.matches("is not signed by its source", notes[1].reason)
    assert.is_nil(store:stream(V.id))

    notes = engine:handle(session, 0x13, payload(built))
    assert.same({ { event = "snapshot", stream = V.id, rev = 2 } }, notes)
    local st = store:stream(V.id)
    assert.same({ 3, 2, 2 }, { st.first, st.last, st.snapshot })
    local snap = store:snapshot_get(V.id, "source")
    assert.same({ 2, V.h2, "last", V.snap_data, H.hex(bin(V.snap_sig)) },
      { snap.rev, H.hex(snap.hash), snap.format, H.hex(snap.data), H.hex(snap.sig) })
    engine:close()
    store:close()
  end)
end)
