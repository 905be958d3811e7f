-- How a person finds odo installed and documented: bin/odo from a
-- LuaRocks tree with nothing set (or one line saying what to set), the
-- command contract in docs/CLI.md, and an API reference without private
-- methods that lists every command module and types the event fields.
-- (rockspec/check installs the real rocks; this checks bin/odo's part
-- without luarocks, in a tree laid out as luarocks lays it out.)
local H = require "helper"

describe("an installed odo", function()
  teardown(H.cleanup)

  it("finds its modules in the LuaRocks tree it was installed into, with nothing set", function()
    local tree = H.tmpdir()
    local bin = tree .. "/lib/luarocks/rocks-5.4/odo-journal/scm-1/bin"
    assert(H.run(("mkdir -p '%s' '%s/share/lua/5.4' '%s/lib/lua/5.4/odo' && cp '%s/bin/odo' '%s/odo'"
      .. " && cp -r '%s/lua/odo' '%s/share/lua/5.4/' && cp '%s/build/odo/core.so' '%s/lib/lua/5.4/odo/'")
      :format(bin, tree, tree, H.root, bin, H.root, tree, H.root, tree)))
    local clean = "env -u LUA_PATH -u LUA_CPATH -u LUA_PATH_5_4 -u LUA_CPATH_5_4 -u ODO_CPATH"
    local out, ok = H.run(("cd / && %s lua5.4 '%s/odo' cert ca --out '%s/ca'"):format(clean, bin, tree))
    assert.is_true(ok, out)
    assert.is_truthy(io.open(tree .. "/ca/ca.pem"))
    -- anywhere else, one line says what to set
    local lone = H.tmpdir()
    assert(H.run(("cp '%s/bin/odo' '%s/odo'"):format(H.root, lone)))
    out, ok = H.run(("cd / && %s lua5.4 '%s/odo' --help"):format(clean, lone))
    assert.is_false(ok)
    assert.matches("^odo: cannot find the Lua module odo%.cli: set LUA_PATH and LUA_CPATH [^\n]*\n$", out)
  end)
end)

describe("the documents", function()
  teardown(H.cleanup)

  it("docs/CLI.md holds the command contract and odo --help points there", function()
    local doc = H.read_file(H.root .. "/docs/CLI.md")
    for _, line in ipairs({ "odo append --dir DIR [--type TYPE] [--stream NAME] [--binary] [DATA...]",
      "odo tail   --dir DIR STREAM [--from REV] [-f]", "odo verify --dir DIR [STREAM]",
      "## The control protocol" }) do
      assert.is_truthy(doc:find(line, 1, true), line)
    end
    local out = H.odo_cmd("--help")
    assert.matches("docs/CLI.md", out)
    assert.is_nil(H.read_file(H.root .. "/bin/odo"):find("DESIGN.md", 1, true))
  end)

  it("the API reference lists the command modules, no private methods, and the event fields' types", function()
    local out = H.tmpdir()
    local log, ok = H.run(("cd '%s' && ldoc --fatalwarnings -d '%s' ."):format(H.root, out))
    assert.is_true(ok, log)
    for _, m in ipairs({ "odo.cli.append", "odo.cli.tail", "odo.cli.verify", "odo.control" }) do
      assert.is_truthy(io.open(out .. "/modules/" .. m .. ".html"), m)
    end
    local node = H.read_file(out .. "/modules/odo.node.html")
    assert.is_nil(node:find("Node:_", 1, true))
    assert.truthy(node:find("Node:report_error", 1, true))
    assert.truthy(node:find("Node:protect", 1, true))
    local text = node:gsub("<[^>]+>", ""):gsub("%s+", " ")
    assert.matches("data string the payload, a string of bytes", text)
    assert.matches("ts integer when: integer milliseconds since the Unix epoch", text)
  end)
end)
