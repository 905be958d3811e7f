--- `odo cert ca` and `odo cert node`: a certificate authority and node
-- certificates with Ed25519 keys, made by `odo.core` (keys mode 0600,
-- certificates 0644; `--force` overwrites, otherwise nothing is written
-- when a file exists).
--
-- @module odo.cli.cert
local core = require "odo.core"
local cli = require "odo.cli"

local PRIVATE_DIR = 448 -- 0700

--- dir .. "/" .. name, without doubling a trailing slash.
local function join(dir, name)
  if dir:sub(-1) == "/" then return dir .. name end
  return dir .. "/" .. name
end

local function make_ca(args)
  local ok, err = core.mkdirs(args.out, PRIVATE_DIR)
  if not ok then return cli.fail(err) end
  local cert, key = join(args.out, "ca.pem"), join(args.out, "ca.key")
  ok, err = core.cert_make_ca { cert = cert, key = key, force = args.force }
  if not ok then return cli.fail(err) end
  print(("wrote %s and %s"):format(cert, key))
  return 0
end

local function make_node(args)
  local ca_cert, ca_key = join(args.ca, "ca.pem"), join(args.ca, "ca.key")
  -- the CA first, so that a mistyped --ca creates no --out folder
  local f, why = io.open(ca_cert, "r")
  if not f then
    local hint = ""
    if why:find("No such file", 1, true) then
      hint = (" (make a CA with 'odo cert ca --out %s')"):format(args.ca)
    end
    return cli.fail(("cannot read the CA certificate: %s%s"):format(why, hint))
  end
  f:close()

  local ok, err = core.mkdirs(args.out, PRIVATE_DIR)
  if not ok then return cli.fail(err) end
  local id
  id, err = core.cert_make_node {
    ca_cert = ca_cert,
    ca_key = ca_key,
    cert = join(args.out, "node.pem"),
    key = join(args.out, "node.key"),
    name = args.name,
    force = args.force,
  }
  if not id then return cli.fail(err) end
  print(id)
  return 0
end

--- Runs `odo cert ca` or `odo cert node`.
-- @tparam table args parsed by `odo.cli`
-- @treturn integer exit status
return function(args)
  if args.cert_command == "ca" then return make_ca(args) end
  return make_node(args)
end
