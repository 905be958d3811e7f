-- examples/policy.lua - two policies of one's own, for `odo run --config`:
--
--   odo run --dir n3 --listen 127.0.0.1:4003 --ca ca/ca.pem --cert n3/node.pem \
--     --key n3/node.key --peer 127.0.0.1:4001 --peer 127.0.0.1:4002 \
--     --config examples/policy.lua
--
-- Each writes a line to the node's log when it decides something. Every
-- policy there is, with its default: lua/odo/policy.lua.

-- Which upstream to follow for a stream: a relay rather than the stream's
-- source, to spare the source's uplink (the relay with the most events;
-- on a tie the one followed already); the source when no relay has it.
local function upstream(stream, candidates, _, current)
  local source, choice = stream:match("^[^/]+"), nil
  for _, c in ipairs(candidates) do
    if c.id ~= source and (not choice or c.last > choice.last or (c.last == choice.last and c.id == current)) then
      choice = c
    end
  end
  local id = choice and choice.id or (#candidates > 0 and candidates[1].id) or nil
  if id ~= current then io.stderr:write(("policy: %s now follows %s\n"):format(stream, tostring(id))) end
  return id
end

-- When to dial a lost peer again: after 200 ms, doubling up to 10 s; a
-- peer that is not a configured seed is forgotten after 8 failures.
local function backoff(failures, peer)
  if failures > 8 and not peer.pinned then return nil end
  local ms = math.min(200 * 2 ^ (failures - 1), 10000)
  io.stderr:write(("policy: dialling %s:%s again in %d ms (failure %d)\n"):format(
    peer.host, tostring(peer.port), ms, failures))
  return ms
end

return { policy = { upstream = upstream, backoff = backoff, backoff_jitter = 0 } }
