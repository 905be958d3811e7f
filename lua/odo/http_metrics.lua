--- A small HTTP responder for `GET /metrics`, over the adapter's
-- `listen` and sockets, on the node's own loop.
--
-- It answers `GET /metrics` (a query string is ignored) with the text of
-- `body()` as `text/plain; version=0.0.4` and anything else with 404,
-- then closes the connection (HTTP/1.1 with `Connection: close`). A
-- client cannot hold the node: a request's head must arrive within
-- `timeout_ms` (default 5000) and fit in `max_request` bytes (default
-- 8192), each connection lives at most twice `timeout_ms` (a client that
-- does not read its answer is cut), and at most `max_clients` (default
-- 16) are served at once (more are closed at once).
--
-- @module odo.http_metrics
local M = {}

--- The content type of the Prometheus text exposition format.
M.CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

local REASONS = { [200] = "OK", [400] = "Bad Request", [404] = "Not Found", [500] = "Internal Server Error" }

local function response(status, body, ctype)
  return table.concat({
    ("HTTP/1.1 %d %s\r\n"):format(status, REASONS[status]),
    "Content-Type: ", ctype or "text/plain; charset=utf-8", "\r\n",
    "Content-Length: ", tostring(#body), "\r\n",
    "Connection: close\r\n\r\n",
    body,
  })
end

--- Splits "HOST:PORT" (also "[v6]:PORT"); nil, message when it is not one.
function M.parse_address(s)
  local host, port
  if type(s) == "string" then host, port = s:match("^%[?([^%]]+)%]?:(%d+)$") end
  port = tonumber(port)
  if not host or port > 65535 then return nil, ("'%s' is not HOST:PORT"):format(tostring(s)) end
  return host, port
end

-- The answer to a request head (the bytes up to the blank line).
local function answer(head, body, on_error)
  local method, target, version = head:match("^(%u+) (%S+) (HTTP/%d%.%d)\r?\n")
  if not method then return response(400, "a request line is METHOD TARGET HTTP/1.x\n") end
  local path = target:match("^[^?#]*")
  if method ~= "GET" or path ~= "/metrics" or not version then
    return response(404, "only GET /metrics is served here\n")
  end
  local ok, text = pcall(body)
  if not ok then
    on_error("metrics: " .. tostring(text))
    return response(500, "the metrics could not be gathered\n")
  end
  return response(200, text, M.CONTENT_TYPE)
end

--- Serves `GET /metrics` on `address` ("HOST:PORT"; port 0: any).
-- @tparam table adapter with `listen` and `timer`
-- @tparam string address
-- @tparam function body returns the metrics text
-- @tparam[opt] table opts `timeout_ms`, `max_request`, `max_clients`,
--   `on_error` (`function(message)`), `protect` (runs callbacks:
--   `function(fn, ...)`)
-- @return `{host, port, close}` or nil, "NAME: message", "NAME"
function M.serve(adapter, address, body, opts)
  opts = opts or {}
  local host, port = M.parse_address(address)
  if not host then return nil, "EINVAL: metrics address " .. port, "EINVAL" end
  assert(type(adapter.listen) == "function", "the adapter cannot listen (see docs/ADAPTERS.md)")
  local timeout_ms = opts.timeout_ms or 5000
  local max_request = opts.max_request or 8192
  local max_clients = opts.max_clients or 16
  local on_error = opts.on_error or function(msg) io.stderr:write("odo: ", msg, "\n") end
  local protect = opts.protect or function(fn, ...) return fn(...) end
  local clients, count = {}, 0

  local function serve_one(sock)
    if count >= max_clients then return sock:close() end
    local c = { buf = "" }
    clients[sock] = c
    count = count + 1
    local function finish()
      if not clients[sock] then return end
      clients[sock] = nil
      count = count - 1
      if c.head_timer then c.head_timer.stop() end
      if c.life_timer then c.life_timer.stop() end
      sock:close()
    end
    c.finish = finish
    c.head_timer = adapter.timer(timeout_ms, function() protect(function()
      c.head_timer = nil
      if not c.answered then
        c.answered = true
        sock:write(response(400, "the request took too long\n"), function() protect(finish) end)
      end
    end) end)
    c.life_timer = adapter.timer(2 * timeout_ms, function() protect(function()
      c.life_timer = nil
      finish()
    end) end)
    sock:read_start(function(err, data)
      protect(function()
        if not clients[sock] or c.answered then
          if err or data == nil then finish() end
          return
        end
        if err or data == nil then return finish() end
        c.buf = c.buf .. data
        local head = c.buf:match("^(.-\r?\n)\r?\n")
        local reply
        if head then
          reply = answer(head, body, on_error)
        elseif #c.buf > max_request then
          reply = response(400, ("a request head is at most %d bytes\n"):format(max_request))
        else
          return
        end
        c.answered, c.buf = true, ""
        if c.head_timer then
          c.head_timer.stop()
          c.head_timer = nil
        end
        sock:write(reply, function() protect(finish) end)
      end)
    end)
  end

  local server, err, name = adapter.listen(host, port, function(sock) protect(serve_one, sock) end)
  if not server then return nil, err, name end
  return {
    host = server.host or host,
    port = server.port,
    close = function()
      server.close()
      local list = {}
      for _, c in pairs(clients) do list[#list + 1] = c end
      for _, c in ipairs(list) do c.finish() end
    end,
  }
end

return M
