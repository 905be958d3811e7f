--- A node's folder as the `odo` commands meet it: the running node
-- through `DIR/odo.sock`, or the store itself when no node runs, with
-- messages that say what to do about a folder that is missing, a file,
-- never used by a node, or not ours to open.
--
-- @module odo.cli.dir
local Client = require "odo.control.client"
local Store = require "odo.store"
local compat = require "odo.compat"

local Dir = {}

--- Why DIR cannot be a node's folder, or nil when it may be one.
-- @tparam string dir
-- @treturn ?string "NAME: message"
-- @treturn ?string NAME
function Dir.problem(dir)
  local st = require("luv").fs_stat(dir)
  if not st then
    return ("ENOENT: no node has run in %s (no such folder): start one there with `odo run --dir %s ...` first")
      :format(dir, dir), "ENOENT"
  end
  if st.type ~= "directory" then
    return ("ENOTDIR: %s is a %s, not a node's folder"):format(dir, st.type == "file" and "file" or st.type),
      "ENOTDIR"
  end
end

--- Opens DIR's store for a command run with no node (nothing is created).
-- @tparam string dir
-- @treturn odo.store
-- @treturn[2] nil
-- @treturn[2] string "NAME: message": ENOENT (no node ever ran there),
--   EACCES (not ours to open), EBUSY (a node holds it), ...
-- @treturn[2] string NAME
function Dir.open_store(dir)
  local store, err, name = Store.open(dir .. "/store", { create = false })
  if store then return store end
  if name == "ENOENT" then
    return nil, ("ENOENT: no node has run in %s yet: start one there with `odo run --dir %s ...` first")
      :format(dir, dir), "ENOENT"
  end
  if tostring(err):find("Permission denied", 1, true) then
    return nil, ("EACCES: permission denied on %s/store (a node's store is read and written by the user"
      .. " that runs the node)"):format(dir), "EACCES"
  end
  return nil, err, name
end

--- The message for a stream that is not there or is ambiguous, with how
-- to list the streams; other messages as they are.
function Dir.stream_hint(dir, err)
  local name = tostring(err):match("^(%u+):")
  if name == "ENOSTREAM" or name == "EAMBIGUOUS" then
    return ("%s (`odo status --dir %s` lists the streams)"):format(err, dir)
  end
  return err
end

--- Waits `ms` milliseconds on luv's loop (so signal handlers run).
function Dir.sleep(ms)
  local uv = require "luv"
  local done = false
  local t = uv.new_timer()
  t:start(ms, 0, function() done = true end)
  while not done do uv.run("once") end
  t:close()
end

--- Runs a command against DIR: `via_node(client)` when a node answers on
-- DIR/odo.sock (the client is closed after), else `via_store(store)` with
-- the store open (closed after). A store that is busy while no node
-- answers belongs to a node starting or stopping: asked again for 3 s.
-- Returns what the chosen function returns, or nil, "NAME: message", NAME.
function Dir.run(dir, via_node, via_store)
  local err, name = Dir.problem(dir)
  if err then return nil, err, name end
  for _ = 1, 30 do
    local c
    c, err, name = Client.connect(dir .. "/odo.sock")
    if c then
      local res = compat.pack(pcall(via_node, c))
      c:close()
      if not res[1] then error(res[2], 0) end
      return compat.unpack(res, 2, res.n)
    end
    if name ~= "ENOENT" and name ~= "ECONNREFUSED" then return nil, err, name end
    local store
    store, err, name = Dir.open_store(dir)
    if store then
      local res = compat.pack(pcall(via_store, store))
      if store:is_open() then store:close() end
      if not res[1] then error(res[2], 0) end
      return compat.unpack(res, 2, res.n)
    end
    if name ~= "EBUSY" then return nil, err, name end
    Dir.sleep(100)
  end
  return nil, ("EBUSY: the store in %s is busy and no node answers on %s/odo.sock"):format(dir, dir), "EBUSY"
end

return Dir
