--- The `odo verify` command (LDoc cannot take its usage on this line):
-- `odo verify --dir DIR [STREAM]` recomputes every stream's hash chain
-- (or STREAM's: an id or a unique prefix of one) and checks its signed
-- heads and snapshot signature; says what is wrong, where. Exit 0 when all
-- is well, 1 otherwise.
--
-- @module odo.cli.verify
local cli = require "odo.cli"
local Dir = require "odo.cli.dir"
local Control = require "odo.control"
local compat = require "odo.compat"

local function report(result)
  for _, r in ipairs(result.streams) do
    local what = ("%d events, %d signed heads"):format(compat.tointeger(r.events) or 0, compat.tointeger(r.heads) or 0)
    if r.ok then
      print(("ok    %s (%s)"):format(r.id, what))
    else
      print(("BAD   %s (%s)"):format(r.id, what))
    end
    for _, p in ipairs(r.problems or {}) do print("      " .. p) end
    for _, n in ipairs(r.notes or {}) do print("      note: " .. n) end
  end
  if #result.streams == 0 then print("no streams") end
  return result.ok and 0 or 1
end

-- Through the node: verifying a large store takes a while, and the node
-- answers when done (no time limit: the connection tells if it dies).
local function through_node(args, c)
  c:send { cmd = "verify", stream = args.stream }
  local answer, err = c:receive()
  if not answer then return nil, err end
  if not answer.ok then return nil, answer.error end
  return answer.result
end

local function in_store(args, store)
  local id = args.stream
  if id then
    local err
    id, err = Control.resolve_stream(store, id)
    if not id then return nil, err end
  end
  return require("odo.verify").run(store, id)
end

return function(args)
  local result, err = Dir.run(args.dir,
    function(c) return through_node(args, c) end,
    function(store) return in_store(args, store) end)
  if not result then return cli.fail(Dir.stream_hint(args.dir, err)) end
  return report(result)
end
