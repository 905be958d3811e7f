--- `odo append --dir DIR [--type TYPE] [--stream NAME] [DATA...]`: one
-- event per DATA, or per line of stdin when there is none; prints the
-- stream's last revision once the events are durable. Through the running
-- node's control socket, or into the store when no node runs.
--
-- @module odo.cli.append
local cli = require "odo.cli"
local Control = require "odo.control"
local Store = require "odo.store"
local compat = require "odo.compat"

local function read_stdin()
  local data = {}
  for line in io.stdin:lines() do data[#data + 1] = line end
  return data
end

local function append_offline(args, data)
  local store, err, ename = Store.open(args.dir .. "/store", { create = false })
  if not store then return nil, err, ename end
  local stream = args.stream and store:stream_id(args.stream) or nil
  local last, name
  last, err, name = Control.append_data(function(events) return store:append(stream, events) end, data, args.type)
  store:close()
  return last, err, name
end

return function(args)
  local data = #args.data > 0 and args.data or read_stdin()
  if #data == 0 then return cli.fail("nothing to append: give DATA or lines on stdin") end
  local req = { cmd = "append", stream = args.stream, type = args.type, data = data }
  for _ = 1, 30 do
    local answer, err, name = Control.request(args.dir .. "/odo.sock", req)
    if answer then
      if not answer.ok then return cli.fail(answer.error) end
      print(compat.tointeger(answer.result.last))
      return 0
    end
    if name ~= "ENOENT" and name ~= "ECONNREFUSED" then return cli.fail(err) end
    local last, aerr, aname = append_offline(args, data)
    if last then
      print(last)
      return 0
    end
    if aname ~= "EBUSY" then return cli.fail(aerr) end
    require("luv").sleep(100) -- a node is starting: ask it
  end
  return cli.fail("the store is busy and no node answers on " .. args.dir .. "/odo.sock")
end
