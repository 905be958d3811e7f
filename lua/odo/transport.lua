--- The transport: adapter sockets joined to C sessions.
--
-- Lua moves opaque ciphertext between a socket and a session (`odo.core`
-- session: TLS, frames, introductions, heartbeats); the session turns it
-- into events. A connection reports them to its handlers:
--
--   on_handshake(conn, peer_id)      TLS done
--   on_hello(conn, hello)            introductions done: {id, port, features, version, instance}
--   on_message(conn, type, payload)  a frame for a layer above
--   on_pong(conn, rtt_ms)
--   on_drain(conn)                   the output queue fell below its low watermark
--   on_close(conn, info)             exactly once: {code, name, reason, by}
--
-- @module odo.transport
local core = require "odo.core"
local compat = require "odo.compat"
local Admission = require "odo.admission"

local Transport = {}
Transport.__index = Transport

local Conn = {}
Conn.__index = Conn
Conn.__name = "odo.Connection"

local function noop() end

--- A transport.
-- @tparam table opts
--   `adapter` (sockets and timers), `tls` (an odo.core TLS context),
--   `port` (the listen port to announce in HELLO), `instance` (this
--   node's run; random by default), `host` (this node's host, for the
--   in-memory adapter), `max_frame`, `high`, `low` (see core.session),
--   `handshake_timeout_ms` (default 10000), `protect` (runs callbacks:
--   `function(fn, ...)`, default pcall and print), `admission` (the
--   bounds on unauthenticated incoming connections: see `odo.admission`),
--   `socket_buffer` (bytes: the kernel's send and receive buffers of each
--   socket, when the adapter's sockets have `buffer_size`; nil: the
--   kernel's own sizing),
--   `tune_allocator` (boolean: tune glibc's malloc for the whole process,
--   see `odo.core.tune_allocator`; `odo run` asks for it, an embedded node
--   does not by default)
function Transport.new(opts)
  assert(type(opts) == "table", "Transport.new takes options")
  assert(opts.adapter, "opts.adapter is required")
  assert(opts.tls, "opts.tls (a TLS context) is required")
  local instance = opts.instance or core.random_instance()
  -- stop glibc giving memory back after every large free (see util.c):
  -- process-wide, so only when the program asked for it
  if opts.tune_allocator then core.tune_allocator() end
  local admission = opts.admission or {}
  admission.adapter = opts.adapter
  return setmetatable({
    admission = Admission.new(admission),
    adapter = opts.adapter,
    tls = opts.tls,
    id = opts.tls:id(),
    port = opts.port or 0,
    host = opts.host,
    instance = instance,
    max_frame = opts.max_frame,
    socket_buffer = opts.socket_buffer,
    high = opts.high,
    low = opts.low,
    handshake_timeout_ms = opts.handshake_timeout_ms or 10000,
    protect = opts.protect or function(fn, ...)
      local ok, err = compat.xpcall(fn, debug.traceback, ...)
      if not ok then io.stderr:write("odo transport: ", tostring(err), "\n") end
    end,
    conns = {},
    servers = {},
    bytes_in = 0,  -- every byte read from and written to peers' sockets
    bytes_out = 0,
  }, Transport)
end

function Transport:_session(server)
  local s, err = core.session(self.tls, {
    server = server,
    port = self.port,
    instance = self.instance,
    max_frame = self.max_frame,
    high = self.high,
    low = self.low,
  })
  return assert(s, err)
end

function Transport:_conn(sock, server, handlers)
  local conn = setmetatable({
    transport = self,
    sock = sock,
    session = self:_session(server),
    incoming = server,
    handlers = handlers or {},
    closed = false,
    flushing = 0,
  }, Conn)
  self.conns[conn] = true
  self.admission.open = self.admission.open + 1
  if self.socket_buffer and sock.buffer_size then sock:buffer_size(self.socket_buffer) end
  conn.remote_host, conn.remote_port = sock:peer()
  conn.hello_timer = self.adapter.timer(self.handshake_timeout_ms, function()
    self.protect(conn._timeout, conn)
  end)
  conn.reader = function(err, data)
    self.protect(conn._on_read, conn, err, data)
  end
  sock:read_start(conn.reader)
  if not server then conn:_events(conn.session:start()) end
  return conn
end

--- Listens on host:port (0: a free port); `on_accept(conn)` for each
-- incoming connection once its TLS handshake is done (the peer proved its
-- certificate), which should set `conn.handlers`. Until then the
-- connection is pending, under the bounds of `odo.admission`. Returns the
-- server `{port, close}` or nil, err, name.
function Transport:listen(host, port, on_accept)
  local server, err, name = self.adapter.listen(host, port, function(sock)
    self.protect(function()
      if not self.admission:make_room((sock:peer())) then return sock:close() end
      local conn = self:_conn(sock, true, {})
      conn.on_accept = on_accept
      self.admission:add(conn)
    end)
  end)
  if not server then return nil, err, name end
  self.servers[server] = true
  return server
end

--- Dials host:port. `handlers` as in the module description;
-- `handlers.on_error(err, name)` if the TCP connection fails. Returns a
-- handle with cancel().
function Transport:dial(host, port, handlers)
  handlers = handlers or {}
  return self.adapter.connect(host, port, function(sock, err, name)
    self.protect(function()
      if not sock then return (handlers.on_error or noop)(err, name) end
      local conn = self:_conn(sock, false, handlers)
      if handlers.on_connect then handlers.on_connect(conn) end
    end)
  end, self.host)
end

--- Closes every server and connection (connections with BYE "shutdown").
function Transport:close(reason)
  for server in pairs(self.servers) do server.close() end
  self.servers = {}
  for conn in pairs(self.conns) do conn:bye("shutdown", reason or "the node is stopping") end
end

-- ---- connections ---------------------------------------------------------------

function Conn:_handler(name, ...)
  local fn = self.handlers[name]
  if fn then fn(self, ...) end
end

--- Writes whatever the connection's session holds to the socket now. `send`
-- does it on the next loop turn; whoever writes to `conn.session` itself
-- (the sync engine, `odo.sync`) calls this after.
function Conn:flush()
  self.unflushed = 0
  if self.sock_closed then return end
  while true do
    local out = self.session:output()
    if not out then return end
    self.flushing = self.flushing + 1
    local n = #out
    self.transport.bytes_out = self.transport.bytes_out + n
    self.sock:write(out, function(err)
      self.transport.protect(function()
        self.flushing = self.flushing - 1
        if self.session:written(n) and not self.closed then self:_handler("on_drain") end
        if err and not self.closed then
          self:_finish({ code = 101, name = "eof", reason = "write failed: " .. tostring(err), by = "us" })
        end
        if self.closed and self.flushing == 0 then self:_close_socket() end
      end)
    end)
  end
end

function Conn:_close_socket()
  if self.sock_closed then return end
  self.sock_closed = true
  self.sock:close()
  self.transport.conns[self] = nil
  self.transport.admission.open = self.transport.admission.open - 1
end

function Conn:_finish(info)
  if self.closed then return end
  self.closed = true
  self.close_info = info
  self.transport.admission:done(self)
  if self.on_accept and info.name ~= "eof" then
    -- it never proved who it is: no handler knows it, so say why here
    self.transport.admission:notice(info.name, ("a connection from %s ended before it was authenticated: %s: %s")
      :format(tostring(self.remote_host), tostring(info.name), tostring(info.reason)))
  end
  if self.hello_timer then self.hello_timer.stop() end
  self:flush() -- a BYE or an alert may be waiting
  if self.flushing == 0 then self:_close_socket() end
  self:_handler("on_close", info)
end

function Conn:_events(events)
  self:flush()
  for _, ev in ipairs(events) do
    local kind = ev.event
    if kind == "hello" then
      if self.hello_timer then
        self.hello_timer.stop()
        self.hello_timer = nil
      end
      self.hello = ev
      if ev.id == self.transport.id and ev.instance ~= self.transport.instance then
        -- the same key on two running nodes: one identity for two nodes
        self:bye("shared key", "another node presents this node's key (" .. ev.id:sub(1, 16)
          .. "...); each node needs its own key: make one with `odo cert node`")
        return
      end
      self:_handler("on_hello", ev)
    elseif kind == "message" then
      self:_handler("on_message", ev.type, ev.payload)
    elseif kind == "pong" then
      self.rtt = ev.rtt
      self:_handler("on_pong", ev.rtt)
    elseif kind == "handshake" then
      self.peer_id = ev.peer
      local accept = self.on_accept
      if accept then
        -- the peer proved its certificate: no longer pending
        self.on_accept = nil
        self.transport.admission:done(self)
        accept(self)
      end
      self:_handler("on_handshake", ev.peer)
    elseif kind == "closed" then
      self:_finish(ev)
    end
    if self.closed then return end
  end
end

function Conn:_on_read(err, data)
  if self.closed then return end
  self.last_rx = self.transport.adapter.now()
  self.last_rx_ms = self.last_rx
  if self.on_accept then self.transport.admission:progress(self) end
  if err then
    return self:_finish({ code = 101, name = "eof", reason = "read failed: " .. tostring(err), by = "peer" })
  end
  if data == nil then
    return self:_events(self.session:eof())
  end
  self.transport.bytes_in = self.transport.bytes_in + #data
  self:_events(self.session:feed(data, self.transport.adapter.now()))
end

function Conn:_timeout()
  self.hello_timer = nil
  if self.closed or self.hello then return end
  self:bye("timeout", ("introductions did not finish within %d ms"):format(self.transport.handshake_timeout_ms))
end

--- Sends a frame (type 0x10 to 0xff). Returns whether the connection is
-- still under its high watermark, or nil, err, name when closed.
function Conn:send(type_, payload)
  if self.closed then return nil, "ECLOSED: the connection is closed", "ECLOSED" end
  local ok, err, name = self.session:send(type_, payload)
  -- frames sent in one loop turn go out in one socket write, unless they
  -- add up to a lot
  self.unflushed = (self.unflushed or 0) + #(payload or "")
  if self.unflushed >= 262144 then
    self:flush()
  elseif not self.flush_pending then
    self.flush_pending = true
    self.transport.adapter.defer(function()
      self.flush_pending = false
      self.transport.protect(self.flush, self)
    end)
  end
  return ok, err, name
end

--- Sends a heartbeat; `on_pong` reports its round-trip time.
function Conn:ping()
  if self.closed then return nil end
  local ok = self.session:ping(self.transport.adapter.now())
  self:flush()
  return ok
end

--- Whether the connection takes more output (open and under the
-- watermarks).
function Conn:writable()
  return not self.closed and self.session:writable()
end

--- Ends the connection with BYE (a code name such as "duplicate", or a
-- number) and a reason; the socket closes once the BYE is written.
function Conn:bye(code, reason)
  if self.closed then return end
  self:_events(self.session:bye(code or "normal", reason or "bye"))
end

--- Closes at once, without a BYE.
function Conn:close(reason)
  if self.closed then return end
  self:_finish({ code = 101, name = "eof", reason = reason or "closed", by = "us" })
  self:_close_socket()
end

--- Stops reading from the socket while `held` is true (backpressure:
-- what was read waits on its way to the disk); reads again once false.
-- Returns false when the adapter's sockets cannot stop reading.
function Conn:hold_reading(held)
  if not self.sock.read_stop then return false end
  if self.closed or (self.reading_held or false) == held then return true end
  self.reading_held = held
  if held then
    self.sock:read_stop()
  else
    self.sock:read_start(self.reader)
  end
  return true
end

--- The session's counters and state (see core session:info).
function Conn:info()
  local info = self.session:info()
  info.host, info.port = self.remote_host, self.remote_port
  info.incoming = self.incoming
  return info
end

Transport.Connection = Conn
return Transport
