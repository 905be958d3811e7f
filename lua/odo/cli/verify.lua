--- `odo verify --dir DIR [STREAM]`: recomputes every stream's hash chain
-- and checks its signed heads and snapshot signature; says what is wrong,
-- where. Exit 0 when all is well, 1 otherwise.
--
-- @module odo.cli.verify
local cli = require "odo.cli"
local Control = require "odo.control"
local Store = require "odo.store"
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

return function(args)
  for _ = 1, 30 do
    local answer, err, name = Control.request(args.dir .. "/odo.sock", { cmd = "verify", stream = args.stream })
    if answer then
      if not answer.ok then return cli.fail(answer.error) end
      return report(answer.result)
    end
    if name ~= "ENOENT" and name ~= "ECONNREFUSED" then return cli.fail(err) end
    local store, serr, sname = Store.open(args.dir .. "/store", { create = false })
    if store then
      local result = require("odo.verify").run(store, args.stream)
      store:close()
      return report(result)
    end
    if sname ~= "EBUSY" then return cli.fail(serr) end
    require("luv").sleep(100)
  end
  return cli.fail("the store is busy and no node answers")
end
