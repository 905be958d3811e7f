-- examples/chat.lua - a chat where every participant's messages are its
-- own stream. Each participant is a node over mutual TLS; it appends what
-- you type to its stream `<its id>/chat`, and prints every other
-- participant's stream as it arrives (what was said before you joined
-- first, then live). No server: the streams travel from peer to peer.
--
--   odo cert ca --out ca
--   odo cert node --ca ca --out alice --name alice
--   odo cert node --ca ca --out bob --name bob
--   lua5.4 examples/chat.lua --name alice --dir alice/chat --listen 127.0.0.1:4001 \
--     --ca ca/ca.pem --cert alice/node.pem --key alice/node.key
--   lua5.4 examples/chat.lua --name bob --dir bob/chat --listen 127.0.0.1:4002 \
--     --ca ca/ca.pem --cert bob/node.pem --key bob/node.key --peer 127.0.0.1:4001
--
-- Type a line to say it; end of input (Ctrl-D) or Ctrl-C leaves. Run it
-- from the checkout after `make` (or with the rock installed).
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath
local odo = require "odo"
local uv = require "luv"

local parser = require("argparse")("chat.lua", "A chat over odo: each participant's messages are its own stream.")
parser:option("--name", "Your name, as the others see it."):count(1)
parser:option("--dir", "This participant's folder (its store)."):count(1)
parser:option("--listen", "HOST:PORT to accept the others on.", "127.0.0.1:0")
parser:option("--ca", "The CA certificate (PEM)."):count(1)
parser:option("--cert", "This participant's certificate (PEM)."):count(1)
parser:option("--key", "This participant's key (PEM)."):count(1)
parser:option("--peer", "HOST:PORT of another participant (repeatable)."):count("*")
local args = parser:parse()

local function say(fmt, ...)
  io.stdout:write(fmt:format(...), "\n")
  io.stdout:flush()
end

local node, err = odo.node {
  dir = args.dir, listen = args.listen, peers = args.peer,
  tls = { ca = args.ca, cert = args.cert, key = args.key },
}
if not node then
  io.stderr:write("chat: ", tostring(err), "\n")
  os.exit(1)
end
local mine = node:stream_id("chat")
say("* you are %s (%s), listening on %s:%d", args.name, node.id:sub(1, 8), node.listen.host, node.listen.port)
assert(node:append(mine, { type = "joined", data = args.name }))

-- every participant's chat stream: its "joined" event names it
local names = {}
node:subscribe("*", 1, function(batch)
  local source = batch.stream:match("^(%x+)/chat$")
  if not source or batch.snapshot or batch.stream == mine then return end
  for _, ev in ipairs(batch) do
    if ev.type == "joined" then
      names[source] = ev.data
      say("* %s joined", ev.data)
    elseif ev.type == "said" then
      say("<%s> %s", names[source] or source:sub(1, 8), ev.data)
    elseif ev.type == "left" then
      say("* %s left", names[source] or source:sub(1, 8))
    end
  end
end)

-- leaving: say so, give the others a moment to receive it, close
local input, signals = nil, {}
local function leave()
  if node.closed or input == false then return end
  if input and not input:is_closing() then input:close() end
  input = false
  for _, s in ipairs(signals) do if not s:is_closing() then s:close() end end
  node:append(mine, { type = "left" })
  local t = uv.new_timer()
  t:start(500, 0, function()
    t:close()
    node:close()
    require("odo.adapter.luv").shutdown()
  end)
end

-- each line typed is one event of this participant's stream
input = uv.guess_handle(0) == "tty" and uv.new_tty(0, true) or uv.new_pipe(false)
if input.open then input:open(0) end
local pending = ""
input:read_start(function(rerr, data)
  if rerr or not data then return leave() end
  pending = pending .. data
  for line in pending:gmatch("([^\n]*)\n") do
    if line ~= "" then node:append(mine, { type = "said", data = line }) end
  end
  pending = pending:match("[^\n]*$")
end)
for _, signame in ipairs({ "sigint", "sigterm" }) do
  local s = uv.new_signal()
  s:start(signame, leave)
  signals[#signals + 1] = s
end

uv.run()
