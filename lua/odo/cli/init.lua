--- The `odo` command line: one parser for every subcommand, and the
-- dispatcher.
--
-- Each subcommand lives in its own module `odo.cli.<name>`, a function of
-- the parsed arguments that returns the exit status; it is loaded only when
-- used. Exit status: 0 done, 1 failed (one line on stderr, "odo: ..."),
-- 2 wrong usage.
--
-- @module odo.cli
local argparse = require "argparse"
local compat = require "odo.compat"

local cli = {}

--- Writes "odo: message" on stderr (without the core's "NAME: " prefix)
-- and returns 1, the status of a failed command.
-- @tparam string err
-- @treturn integer 1
function cli.fail(err)
  local msg = tostring(err):gsub("^%u[%u%d_]*: ", "")
  io.stderr:write("odo: ", msg, "\n")
  return 1
end

-- ---- argument conversions (a bad value is a usage error) ------------------

local function host_port(s)
  local host, port = s:match("^(.+):(%d+)$")
  port = tonumber(port)
  if not host or port > 65535 then
    return nil, ("'%s' is not HOST:PORT"):format(s)
  end
  return s
end

local function port_number(s)
  local n = s:match("^%d+$") and tonumber(s)
  if not n or n < 1 or n > 65535 then
    return nil, ("'%s' is not a port (1 to 65535)"):format(s)
  end
  return n
end

local function revision(s)
  if not s:match("^%d+$") then
    return nil, ("'%s' is not a revision (a whole number)"):format(s)
  end
  local n = compat.tointeger(tonumber(s))
  if not n or n < 1 then
    return nil, ("'%s' is not a revision (revisions start at 1)"):format(s)
  end
  return n
end

local function dht_network(s)
  local n = s:match("^%d+$") and tonumber(s) or (s:match("^0[xX]%x+$") and tonumber(s:sub(3), 16))
  if not n or n > 4294967295 then
    return nil, ("'%s' is not a DHT network id (0 to 4294967295, decimal or 0x hex)"):format(s)
  end
  return n
end

local function dht_port(s)
  local n = s:match("^%d+$") and tonumber(s)
  if not n or n > 65535 then return nil, ("'%s' is not a UDP port (0 to 65535)"):format(s) end
  return n
end

-- ---- the parser -------------------------------------------------------------

local function cert_commands(p)
  local cert = p:command("cert", "Make a certificate authority and node certificates (Ed25519).")
    :command_target("cert_command")

  local ca = cert:command("ca", "Make a certificate authority: DIR/ca.pem and DIR/ca.key.")
  ca:option("--out", "Folder to write to (created, mode 0700, when missing)."):argname("DIR"):count(1)
  ca:flag("--force", "Overwrite existing files.")

  local node = cert:command("node",
    "Make a node certificate signed by a CA: DIR/node.pem and DIR/node.key; prints the node id.")
  node:option("--ca", "Folder holding the CA's ca.pem and ca.key."):argname("DIR"):count(1)
  node:option("--out", "Folder to write to (created, mode 0700, when missing)."):argname("DIR"):count(1)
  node:option("--name", "The certificate's common name (default \"odo node\")."):argname("NAME")
  node:flag("--force", "Overwrite existing files.")
end

local function run_command(p)
  local run = p:command("run", "Run a node in the foreground (SIGINT or SIGTERM stop it cleanly).")
  run:option("--dir", "The node's folder (store and control socket)."):argname("DIR"):count(1)
  run:option("--listen", "Address to accept peers on."):argname("HOST:PORT"):count(1):convert(host_port)
  run:option("--ca", "CA certificate that peers' certificates must chain to."):argname("FILE"):count(1)
  run:option("--cert", "This node's certificate."):argname("FILE"):count(1)
  run:option("--key", "This node's private key."):argname("FILE"):count(1)
  run:option("--peer", "A peer to connect to (repeatable)."):argname("HOST:PORT"):count("*")
    :convert(host_port)
  run:option("--dns", "Find peers through DNS records of NAME (repeatable)."):argname("NAME"):count("*")
  run:option("--dns-server", "DNS server to ask."):argname("HOST:PORT"):convert(host_port)
  run:option("--dns-port", "Port of the peers found through A/AAAA records (default: this node's listen port).")
    :argname("PORT"):convert(port_number)
  run:flag("--mdns", "Find peers on the local network (mDNS).")
  run:option("--mdns-swarm", "Swarm name announced and looked for on the local network (default \"odo\").")
    :argname("NAME")
  run:option("--dht-bootstrap", "A DHT node to join through (repeatable)."):argname("HOST:PORT")
    :count("*"):convert(host_port)
  run:option("--dht-topic", "DHT topic to announce and look up."):argname("NAME")
  run:option("--dht-network", "OpenDHT network id (default 1868853041, a private id of odo's; 0 is the public"
    .. " network)."):argname("ID"):convert(dht_network)
  run:option("--dht-port", "UDP port of this node's DHT (default: any free port)."):argname("PORT"):convert(dht_port)
  run:option("--config", "Lua file returning { policy = {...}, discovery = {...}, peers = {...}, sync = BOOL }.")
    :argname("FILE.lua")
  run:option("--metrics", "Serve GET /metrics (Prometheus text format) on this address.")
    :argname("HOST:PORT"):convert(host_port)
  run:option("--log-format", "Log lines as text (default) or one JSON object per line."):argname("text|json")
    :choices({ "text", "json" }):default("text")
end

local function local_commands(p)
  local append = p:command("append",
    "Append events; with no DATA, one event per line of stdin (with --binary, stdin whole as one). Prints the"
    .. " stream's last revision.")
  append:option("--dir", "The node's folder."):argname("DIR"):count(1)
  append:option("--type", "The events' type."):argname("TYPE")
  append:option("--stream", "Append to this node's named stream <node id>/NAME (default: its own stream).")
    :argname("NAME")
  append:flag("--binary", "Take stdin whole as one event (bytes as they are, newlines included).")
  append:flag("--raw", "The same as --binary.")
  append:argument("data", "Data of one event each."):args("*")

  local tail = p:command("tail", "Print a stream's events as JSON lines.")
  tail:option("--dir", "The node's folder."):argname("DIR"):count(1)
  tail:argument("stream", "Stream id, or a unique prefix of one (as `odo status` shows them)."):argname("STREAM")
  tail:option("--from", "First revision to print (1 or more; default: the first held). Behind the compaction"
    .. " point, a snapshot line {\"kind\": \"snapshot\", ...} comes first."):argname("REV"):convert(revision)
  tail:flag("-f --follow", "Keep printing new events as they arrive.")

  local status = p:command("status", "Show the node's peers and streams.")
  status:option("--dir", "The node's folder."):argname("DIR"):count(1)
  status:flag("--json", "Print one JSON object.")
  status:option("--watch", "Redraw every SECONDS (default 2) until Ctrl-C; on a non-terminal, one table each time.")
    :argname("SECONDS"):args("?")
  status:flag("--dot", "Print a Graphviz graph: this node, its peers and whom it follows for each stream.")
  status:epilog(require("odo.cli.status").LEGEND)

  local verify = p:command("verify", "Recompute chains and signatures.")
  verify:option("--dir", "The node's folder."):argname("DIR"):count(1)
  verify:argument("stream", "Stream id, or a unique prefix of one (default: every stream)."):argname("STREAM")
    :args("?")
end

-- A usage error on its way out of argparse (which would exit 1).
local Usage = {}

--- The parser of the whole command line. Usage errors raise a Usage
-- table instead of exiting, so `main` can exit 2.
-- @treturn argparse.Parser
function cli.parser()
  local p = argparse("odo", "A distributed, peer-to-peer, append-only event journal.")
    :command_target("command")
    :epilog("Exit status: 0 done, 1 failed, 2 wrong usage. 'odo COMMAND --help' describes a command;"
      .. " docs/CLI.md has the whole contract.")
  cert_commands(p)
  run_command(p)
  local_commands(p)
  -- argparse calls the root parser's `error` with the (sub)command parser
  -- that met the problem, whose usage is the one to show
  p.error = function(which, msg)
    error(setmetatable({ parser = which, msg = msg }, Usage), 0)
  end
  return p
end

local function keep_usage(e)
  if getmetatable(e) == Usage then return e end
  return debug.traceback(tostring(e), 2)
end

--- Runs the command line `argv` (an array of strings, like `arg`).
-- @tparam table argv
-- @treturn integer exit status
function cli.main(argv)
  local parser = cli.parser()
  local ok, args = xpcall(function() return parser:parse(argv) end, keep_usage)
  if not ok then
    if getmetatable(args) ~= Usage then error(args, 0) end
    io.stderr:write(args.parser:get_usage(), "\n\nodo: ", args.msg, "\n")
    return 2
  end

  local modname = "odo.cli." .. args.command
  local found, command = pcall(require, modname)
  if not found then
    if tostring(command):find("module '" .. modname .. "' not found", 1, true) then
      return cli.fail(("'%s' is not built yet"):format(args.command))
    end
    error(command, 0)
  end
  return command(args)
end

return cli
