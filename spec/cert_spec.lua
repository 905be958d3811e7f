-- `odo cert`: a CA and node certificates made through bin/odo (a real
-- process) and through odo.core, checked by the openssl command line; the
-- command line's exit statuses and usage errors.
local H = require "helper"
local core = require "odo.core"

local function quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function slurp(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

--- Runs bin/odo with the given arguments; returns its exit status, stdout
-- and stderr.
local function odo(...)
  local args = { quote(H.root .. "/bin/odo") }
  for _, a in ipairs({ ... }) do args[#args + 1] = quote(a) end
  local out, err = os.tmpname(), os.tmpname()
  local p = io.popen(("%s >%s 2>%s; echo $?"):format(table.concat(args, " "), out, err))
  local status = tonumber(p:read("*a"))
  p:close()
  local o, e = slurp(out), slurp(err)
  os.remove(out)
  os.remove(err)
  return status, o, e
end

--- Runs a shell command that must succeed; returns its output.
local function sh(cmd)
  local out, ok = H.run(cmd)
  assert(ok, cmd .. " failed:\n" .. out)
  return out
end

local function mode(path)
  return (sh("stat -c %a " .. quote(path)):gsub("%s+$", ""))
end

--- The node id by the openssl command line: SHA-256 of the certificate's
-- SubjectPublicKeyInfo (DER).
local function openssl_id(cert)
  local out = sh(("openssl x509 -in %s -pubkey -noout | openssl pkey -pubin -outform DER"
    .. " | openssl dgst -sha256"):format(quote(cert)))
  return assert(out:match("=%s*(%x+)%s*$"), out)
end

local function text(cert)
  return sh("openssl x509 -noout -text -in " .. quote(cert))
end

local function make_ca(dir)
  local status, out, err = odo("cert", "ca", "--out", dir)
  assert.equal(0, status, err)
  return out
end

local function make_node(ca, dir, ...)
  local status, out, err = odo("cert", "node", "--ca", ca, "--out", dir, ...)
  assert.equal(0, status, err)
  assert.equal("", err)
  return out
end

describe("odo cert", function()
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(H.cleanup)

  describe("making a CA and node certificates", function()
    it("makes a CA and two node certificates that openssl verifies", function()
      local ca, n1, n2 = dir .. "/ca", dir .. "/n1", dir .. "/n2"
      local said = make_ca(ca)
      assert.matches("ca%.pem", said)
      assert.matches("ca%.key", said)
      assert.equal("700", mode(ca))
      make_node(ca, n1)
      make_node(ca, n2, "--name", "second node")
      for _, n in ipairs({ n1, n2 }) do
        local out = sh(("openssl verify -CAfile %s %s"):format(quote(ca .. "/ca.pem"), quote(n .. "/node.pem")))
        assert.matches(": OK", out)
      end
      assert.matches("CN%s*=%s*odo%-journal CA", sh("openssl x509 -noout -subject -in " .. quote(ca .. "/ca.pem")))
      assert.matches("CN%s*=%s*odo node", sh("openssl x509 -noout -subject -in " .. quote(n1 .. "/node.pem")))
      assert.matches("CN%s*=%s*second node", sh("openssl x509 -noout -subject -in " .. quote(n2 .. "/node.pem")))
      assert.matches("CN%s*=%s*odo%-journal CA", sh("openssl x509 -noout -issuer -in " .. quote(n2 .. "/node.pem")))
    end)

    it("writes Ed25519 keys mode 0600 and certificates mode 0644", function()
      local ca, n1 = dir .. "/ca", dir .. "/n1"
      make_ca(ca)
      make_node(ca, n1)
      for _, key in ipairs({ ca .. "/ca.key", n1 .. "/node.key" }) do
        assert.matches("ED25519", sh("openssl pkey -noout -text -in " .. quote(key)))
        assert.equal("600", mode(key))
      end
      for _, cert in ipairs({ ca .. "/ca.pem", n1 .. "/node.pem" }) do
        assert.equal("644", mode(cert))
        assert.matches("Public Key Algorithm: ED25519", text(cert))
      end
      -- no temporary file is left behind
      assert.equal("ca.key\nca.pem\n", sh("ls " .. quote(ca)))
      assert.equal("node.key\nnode.pem\n", sh("ls " .. quote(n1)))
    end)

    it("prints the node id: SHA-256 of the SubjectPublicKeyInfo, as core.cert_id says", function()
      local ca, n1, n2 = dir .. "/ca", dir .. "/n1", dir .. "/n2"
      make_ca(ca)
      local out1 = make_node(ca, n1)
      local out2 = make_node(ca, n2)
      local id1 = assert(out1:match("^(%x+)\n$"), "not one line with an id: " .. out1)
      local id2 = assert(out2:match("^(%x+)\n$"), "not one line with an id: " .. out2)
      assert.equal(64, #id1)
      assert.equal(openssl_id(n1 .. "/node.pem"), id1)
      assert.equal(openssl_id(n2 .. "/node.pem"), id2)
      assert.equal(id1, core.cert_id(n1 .. "/node.pem"))
      assert.equal(id2, core.cert_id(n2 .. "/node.pem"))
      assert.not_equal(id1, id2)
    end)

    it("sets the CA and node extensions", function()
      local ca, n1 = dir .. "/ca", dir .. "/n1"
      make_ca(ca)
      make_node(ca, n1)
      local t = text(ca .. "/ca.pem")
      assert.matches("Version: 3", t)
      assert.matches("Basic Constraints: critical%s+CA:TRUE", t)
      assert.matches("Key Usage: critical%s+Certificate Sign, CRL Sign", t)
      assert.matches("Subject Key Identifier", t)
      t = text(n1 .. "/node.pem")
      assert.matches("Basic Constraints: critical%s+CA:FALSE", t)
      assert.matches("Key Usage: critical%s+Digital Signature", t)
      assert.matches("Extended Key Usage:%s+TLS Web Server Authentication, TLS Web Client Authentication", t)
      assert.matches("Subject Key Identifier", t)
      assert.matches("Authority Key Identifier", t)
      assert.matches("Signature Algorithm: ED25519", t)
    end)
  end)

  describe("existing files", function()
    it("refuses to overwrite without --force and leaves the files as they were", function()
      local ca, n1 = dir .. "/ca", dir .. "/n1"
      make_ca(ca)
      make_node(ca, n1)
      local files = { ca .. "/ca.pem", ca .. "/ca.key", n1 .. "/node.pem", n1 .. "/node.key" }
      local before = {}
      for i, f in ipairs(files) do before[i] = assert(slurp(f)) end

      local status, out, err = odo("cert", "ca", "--out", ca)
      assert.equal(1, status)
      assert.equal("", out)
      assert.matches("^odo: .*already exists.*%-%-force", err)
      assert.equal(1, select(2, err:gsub("\n", "")))
      status, out, err = odo("cert", "node", "--ca", ca, "--out", n1)
      assert.equal(1, status)
      assert.equal("", out)
      assert.matches("^odo: .*node%.%a+ already exists.*%-%-force", err)

      for i, f in ipairs(files) do assert.equal(before[i], slurp(f), f .. " changed") end
      assert.equal("node.key\nnode.pem\n", sh("ls " .. quote(n1)))
    end)

    it("writes nothing when only one of the two files exists", function()
      local n1 = dir .. "/n1"
      assert(core.mkdirs(n1))
      local f = assert(io.open(n1 .. "/node.key", "w"))
      f:write("mine")
      f:close()
      local ok, err, name = core.cert_make_ca { cert = n1 .. "/node.pem", key = n1 .. "/node.key" }
      assert.is_nil(ok)
      assert.equal("EEXIST", name)
      assert.matches("node%.key already exists", err)
      assert.is_nil(slurp(n1 .. "/node.pem"))
      assert.equal("mine", slurp(n1 .. "/node.key"))
    end)

    it("overwrites with --force", function()
      local ca, n1 = dir .. "/ca", dir .. "/n1"
      make_ca(ca)
      local id1 = make_node(ca, n1):match("%x+")
      local old_key = slurp(n1 .. "/node.key")
      local id2 = make_node(ca, n1, "--force"):match("%x+")
      assert.not_equal(id1, id2)
      assert.not_equal(old_key, slurp(n1 .. "/node.key"))
      assert.equal(id2, core.cert_id(n1 .. "/node.pem"))
      assert.equal("600", mode(n1 .. "/node.key"))
      assert.equal("644", mode(n1 .. "/node.pem"))

      -- a new CA: the old node certificate no longer verifies, a new one does
      local old_ca = slurp(ca .. "/ca.pem")
      local status, _, err = odo("cert", "ca", "--out", ca, "--force")
      assert.equal(0, status, err)
      assert.not_equal(old_ca, slurp(ca .. "/ca.pem"))
      assert.equal("600", mode(ca .. "/ca.key"))
      local _, verified = H.run(("openssl verify -CAfile %s %s")
        :format(quote(ca .. "/ca.pem"), quote(n1 .. "/node.pem")))
      assert.is_false(verified)
      make_node(ca, n1, "--force")
      sh(("openssl verify -CAfile %s %s"):format(quote(ca .. "/ca.pem"), quote(n1 .. "/node.pem")))
    end)
  end)

  describe("failures", function()
    it("refuses a CA key that does not match the CA certificate", function()
      local a, b, mixed, n = dir .. "/a", dir .. "/b", dir .. "/mixed", dir .. "/n"
      make_ca(a)
      make_ca(b)
      sh(("mkdir %s && cp %s %s && cp %s %s"):format(quote(mixed), quote(a .. "/ca.pem"), quote(mixed .. "/ca.pem"),
        quote(b .. "/ca.key"), quote(mixed .. "/ca.key")))
      local status, out, err = odo("cert", "node", "--ca", mixed, "--out", n)
      assert.equal(1, status)
      assert.equal("", out)
      assert.matches("^odo: the CA key .*mixed/ca%.key does not match the CA certificate .*mixed/ca%.pem", err)
      assert.is_nil(slurp(n .. "/node.pem"))
      assert.is_nil(slurp(n .. "/node.key"))
    end)

    it("says so when the --ca folder does not exist", function()
      local status, out, err = odo("cert", "node", "--ca", dir .. "/nowhere", "--out", dir .. "/n")
      assert.equal(1, status)
      assert.equal("", out)
      assert.matches("^odo: cannot read the CA certificate: .*nowhere/ca%.pem: No such file or directory", err)
      assert.matches("odo cert ca %-%-out", err)
      assert.equal(1, select(2, err:gsub("\n", "")))
      -- nothing was created for the node
      assert.is_nil(io.open(dir .. "/n", "r"))
    end)

    it("says so when the CA key is missing", function()
      local ca = dir .. "/ca"
      make_ca(ca)
      os.remove(ca .. "/ca.key")
      local status, _, err = odo("cert", "node", "--ca", ca, "--out", dir .. "/n")
      assert.equal(1, status)
      assert.matches("^odo: cannot read key .*ca%.key: No such file or directory", err)
    end)

    it("refuses a node certificate as a CA", function()
      local ca, n1 = dir .. "/ca", dir .. "/n1"
      make_ca(ca)
      make_node(ca, n1)
      local fake = dir .. "/fake"
      sh(("mkdir %s && cp %s %s && cp %s %s"):format(quote(fake), quote(n1 .. "/node.pem"), quote(fake .. "/ca.pem"),
        quote(n1 .. "/node.key"), quote(fake .. "/ca.key")))
      local status, _, err = odo("cert", "node", "--ca", fake, "--out", dir .. "/n2")
      assert.equal(1, status)
      assert.matches("^odo: .*is not a CA certificate", err)
    end)

    it("refuses a name too long for a certificate", function()
      local ca = dir .. "/ca"
      make_ca(ca)
      local status, _, err = odo("cert", "node", "--ca", ca, "--out", dir .. "/n", "--name", string.rep("x", 65))
      assert.equal(1, status)
      assert.matches("^odo: a certificate name is 1 to 64 bytes", err)
    end)
  end)

  describe("usage", function()
    local function usage_error(...)
      local status, out, err = odo(...)
      assert.equal(2, status, err)
      assert.equal("", out)
      assert.matches("Usage: odo", err)
      return err
    end

    it("exits 2 on wrong usage", function()
      assert.matches("a command is required", usage_error("cert"))
      assert.matches("missing option '%-%-out'", usage_error("cert", "node", "--ca", dir))
      assert.matches("unknown option '%-%-bogus'", usage_error("cert", "ca", "--out", dir, "--bogus"))
      assert.matches("unknown command 'bogus'", usage_error("bogus"))
      usage_error()
      assert.matches("missing option '%-%-listen'", usage_error("run", "--dir", dir))
      usage_error("tail", "--dir", dir)
      assert.matches("not a revision", usage_error("tail", "--dir", dir, "s", "--from", "x"))
    end)

    it("prints help and exits 0", function()
      local status, out = odo("--help")
      assert.equal(0, status)
      for _, c in ipairs({ "cert", "run", "append", "tail", "status", "verify" }) do
        assert.matches("\n%s+" .. c .. "%s", out)
      end
      status, out = odo("cert", "--help")
      assert.equal(0, status)
      assert.matches("Usage: odo cert", out)
      assert.matches("\n%s+ca%s", out)
      assert.matches("\n%s+node%s", out)
    end)
  end)

  describe("core functions", function()
    it("make a CA and a node and tell the node id", function()
      assert.is_true(core.cert_make_ca { cert = dir .. "/ca.pem", key = dir .. "/ca.key", name = "test CA", days = 1 })
      local id = core.cert_make_node { ca_cert = dir .. "/ca.pem", ca_key = dir .. "/ca.key",
        cert = dir .. "/n.pem", key = dir .. "/n.key", name = "n", days = 2 }
      assert.matches("^" .. string.rep("%x", 64) .. "$", id)
      assert.equal(id, core.cert_id(dir .. "/n.pem"))
      assert.equal(openssl_id(dir .. "/n.pem"), id)
      assert.matches("CN%s*=%s*test CA", sh("openssl x509 -noout -subject -in " .. quote(dir .. "/ca.pem")))
      -- force overwrites through the core too
      local again = core.cert_make_node { ca_cert = dir .. "/ca.pem", ca_key = dir .. "/ca.key",
        cert = dir .. "/n.pem", key = dir .. "/n.key", force = true }
      assert.not_equal(id, again)
    end)

    it("return nil, message, name on runtime failures", function()
      local ok, err, name = core.cert_id(dir .. "/missing.pem")
      assert.is_nil(ok)
      assert.equal("ENOENT", name)
      assert.matches("^ENOENT: cannot read certificate", err)

      local f = assert(io.open(dir .. "/junk.pem", "w"))
      f:write("not a certificate\n")
      f:close()
      ok, err, name = core.cert_id(dir .. "/junk.pem")
      assert.is_nil(ok)
      assert.equal("EINVAL", name)
      assert.matches("holds no PEM certificate", err)

      ok, err, name = core.cert_make_ca { cert = dir .. "/no/such/ca.pem", key = dir .. "/no/such/ca.key" }
      assert.is_nil(ok)
      assert.equal("ENOENT", name)
      assert.matches("cannot write", err)

      ok, err, name = core.cert_make_node { ca_cert = dir .. "/junk.pem", ca_key = dir .. "/junk.pem",
        cert = dir .. "/n.pem", key = dir .. "/n.key" }
      assert.is_nil(ok)
      assert.equal("EINVAL", name)
      assert.matches("junk%.pem holds no PEM certificate", err)
      assert.is_nil(slurp(dir .. "/n.pem"))
    end)

    it("raise on misuse", function()
      assert.has_error(function() core.cert_make_ca() end)
      assert.has_error(function() core.cert_make_ca { cert = dir .. "/c.pem" } end,
        "cert_make_ca: option 'key' is required")
      assert.has_error(function() core.cert_make_ca { cert = dir .. "/c", key = dir .. "/c" } end,
        "cert_make_ca: 'cert' and 'key' are the same file")
      assert.has_error(function() core.cert_make_ca { cert = dir .. "/c", key = dir .. "/k", days = 0 } end,
        "cert_make_ca: option 'days' must be 1 to 36500")
      assert.has_error(function() core.cert_make_ca { cert = 1, key = dir .. "/k" } end,
        "cert_make_ca: option 'cert' must be a string, got number")
      assert.has_error(function()
        core.cert_make_node { ca_cert = dir .. "/ca.pem", ca_key = dir .. "/ca.key", cert = dir .. "/ca.pem",
          key = dir .. "/n.key" }
      end, "cert_make_node: the node's files would overwrite the CA's")
      assert.has_error(function() core.cert_id() end)
    end)
  end)
end)
