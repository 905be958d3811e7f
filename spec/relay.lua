-- A man in the middle for specs: listens as one node (its certificate) on
-- the in-memory network and, for each connection, dials the real node
-- behind it with a certificate of its own, then passes every message
-- between the two sessions, decoded and re-encoded with odo.core's sync
-- codec (core.sync_msg), through `alter` on the way from the node to the
-- peer. Fault injection lives here, in the specs, not in the engine: the
-- engine is sans-I/O, so Lua can sit between two of them.
local core = require "odo.core"

local Relay = {}

--- Starts a relay on `host:port` that presents `front_tls` to whoever
-- connects and reaches the node at `to_host:to_port` with `back_tls`.
-- `alter(msg)` gets each sync message the node sends, decoded, and
-- returns the message to pass on (changed or not; it is encoded again),
-- or nil to drop it. Returns {close = fn, connections = n}.
function Relay.start(net, opts)
  local relay = { connections = 0, closed = false }
  local pairs_open = {}

  local function pass(from, to, events, alter)
    for _, e in ipairs(events) do
      if e.event == "message" then
        local t, payload = e.type, e.payload
        if alter and t >= core.sync_msg.CATALOGUE and t <= core.sync_msg.REFUSED then
          local out = alter(assert(core.sync_msg.decode(t, payload)))
          if out == nil then t = nil else t, payload = core.sync_msg.encode(out) end
        end
        if t and not to.closed then to.session:send(t, payload) end
      elseif e.event == "closed" then
        from.closed = true
        if not to.closed then
          to.closed = true
          to.session:bye("normal", "the other side of the relay closed")
        end
      end
    end
  end

  local function flush(side)
    if not side.sock then return end
    while true do
      local out = side.session:output()
      if not out then break end
      local n = #out
      side.sock:write(out, function() side.session:written(n) end)
    end
    if side.closed and not side.sock_closed then
      side.sock_closed = true
      side.sock:close()
    end
  end

  local server = assert(net.listen(opts.host, opts.port, function(sock)
    relay.connections = relay.connections + 1
    local front = { session = assert(core.session(opts.front_tls, { server = true, port = opts.port })), sock = sock }
    local back = { session = assert(core.session(opts.back_tls, { port = 1 })) }
    pairs_open[#pairs_open + 1] = { front, back }
    local function on(side, other, alter)
      return function(_, data)
        if data then
          pass(side, other, side.session:feed(data, net.now()), alter)
        else
          pass(side, other, side.session:eof(), alter)
        end
        flush(front)
        flush(back)
      end
    end
    sock:read_start(on(front, back, nil))
    net.connect(opts.to_host, opts.to_port, function(c)
      if not c then
        front.closed = true
        front.session:bye("normal", "the node behind the relay is not there")
        flush(front)
        return
      end
      back.sock = c
      c:read_start(on(back, front, opts.alter))
      back.session:start()
      flush(back)
    end, opts.host)
  end))

  function relay.close()
    if relay.closed then return end
    relay.closed = true
    server.close()
    for _, p in ipairs(pairs_open) do
      for _, side in ipairs(p) do
        if not side.closed then
          side.closed = true
          side.session:bye("shutdown", "the relay stops")
        end
        flush(side)
      end
    end
  end
  return relay
end

return Relay
