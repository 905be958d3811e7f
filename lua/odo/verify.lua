--- Verification of what a store holds: every stream's hash chain, its
-- signed heads (each head's hash is h(rev) as held, and its signature is
-- the source's) and its source snapshot's signature. Used by
-- `odo verify` and by a running node's control socket.
--
-- @module odo.verify
local core = require "odo.core"

local V = {}

local function source_of(id) return id:match("^([^/]+)") end

--- Checks one stream; returns {id, ok, events, heads, problems = {...},
-- notes = {...}} (notes are not failures: unsigned own events, which the
-- node signs when it runs).
function V.stream(store, id)
  local st = store:stream(id)
  local r = { id = id, ok = true, events = 0, heads = 0, problems = {}, notes = {} }
  local function problem(fmt, ...)
    r.ok = false
    r.problems[#r.problems + 1] = fmt:format(...)
  end
  if not st then
    problem("no stream %s in this store", id)
    return r
  end
  r.events = st.last - st.first + 1
  local ok, err, _, bad = store:verify(id)
  if not ok then problem("chain broken at revision %s: %s", tostring(bad), err) end
  local key = store:key_get(source_of(id))
  if not key then
    problem("no public key of source %s is known: signatures cannot be checked", source_of(id):sub(1, 16))
    return r
  end
  -- every signed head held
  local rev, last_head = math.max(st.first - 1, 1), nil
  while true do
    local h, herr = store:head_find(id, rev)
    if h == nil and herr then problem("%s", herr) break end
    if not h then break end
    r.heads = r.heads + 1
    last_head = h
    if h.rev >= st.first then
      local ev = store:read(id, h.rev, h.rev)
      if not ev or not ev[1] or ev[1].hash ~= h.hash then
        problem("the signed head at %d does not match event %d", h.rev, h.rev)
      end
    end
    if not core.verify(key, core.head_message(id, h.rev, h.hash), h.sig) then
      problem("the head at %d is not signed by the source", h.rev)
    end
    rev = h.rev + 1
  end
  local signed = last_head and last_head.rev or (st.first - 1)
  if signed < st.last then
    local msg = ("events %d to %d are not signed yet"):format(signed + 1, st.last)
    if st.own then r.notes[#r.notes + 1] = msg .. " (the node signs them when it runs)"
    else problem("%s: a replica holds only signed events", msg) end
  end
  local snap = store:snapshot_get(id, "source")
  if snap then
    if snap.sig == "" then
      if st.own then r.notes[#r.notes + 1] = ("the snapshot at %d is not signed yet"):format(snap.rev)
      else problem("the snapshot at %d carries no signature", snap.rev) end
    elseif not core.verify(key, core.snapshot_message(id, snap.rev, snap.hash, snap.data, snap.format), snap.sig) then
      problem("the snapshot at %d is not signed by the source", snap.rev)
    end
  end
  return r
end

--- Checks one stream, or every stream; returns {ok, streams = {...}}.
function V.run(store, id)
  local out = { ok = true, streams = {} }
  local ids = {}
  if id then ids[1] = id else
    for _, st in ipairs(store:streams()) do ids[#ids + 1] = st.id end
  end
  for _, sid in ipairs(ids) do
    local r = V.stream(store, sid)
    out.streams[#out.streams + 1] = r
    if not r.ok then out.ok = false end
  end
  return out
end

return V
