--- A node's policy set: the defaults (`odo.policy`) with a user's entries
-- on top, each entry checked (`merge`, `check`), and the way the node's
-- parts call a policy function (`try`, `call`: protected, the default
-- deciding when the user's raises). The rules an entry must follow are
-- here, as data; the defaults and what each entry means are in
-- `odo.policy`.
-- @module odo.policy_set
local compat = require "odo.compat"
local defaults = require "odo.policy"

local S = {}

-- Policies whose default is nil (so `odo.policy` has no entry for them).
local DEFAULT_NIL = { reducer = true }
DEFAULT_NIL.peer_socket_buffer = true
DEFAULT_NIL.sync_bulk_bytes_per_s = true
DEFAULT_NIL.verify_threads = true

-- Policies that must be positive numbers (a zero would stall a loop or
-- spin a timer); every other number must be at least 0.
local POSITIVE = { tick_ms = true, slice = true, turn_budget_ms = true, snapshot_slice = true,
  purge_slice = true, sync_pump_budget = true, sign_budget = true, max_frame_bytes = true,
  heartbeat_interval_ms = true, first_byte_timeout_ms = true, max_handshakes = true,
  max_handshakes_per_host = true }

POSITIVE.dns_ttl_floor_ms = true
POSITIVE.dns_timeout_ms = true
POSITIVE.dns_tries = true
POSITIVE.commit_poll_ms = true
POSITIVE.target_peers = true
POSITIVE.max_hops = true
POSITIVE.pex_interval_ms = true
POSITIVE.max_candidates = true
POSITIVE.catalogue_refresh_ms = true
POSITIVE.route_hold_ms = true
POSITIVE.sync_write_backlog = true

-- Policies that are an array of delays (ms) or a function.
local DELAYS = { backoff = true, dns_backoff = true }

-- Policies that are an integer within a range.
local INTEGER_RANGE = { worker_nice = { 0, 19 } }

-- Policies that are a fraction, from 0 to 1.
local FRACTION = { backoff_jitter = true }

local function check_backoff(v)
  if type(v) == "function" then return true end
  if type(v) ~= "table" then return false end
  for i, d in ipairs(v) do
    if type(d) ~= "number" or d < 0 or d ~= d then return false, ("backoff[%d] is %s"):format(i, tostring(d)) end
  end
  return true
end

--- Whether r is a reducer: nil (none), "kv", "last" or
-- `{ name = string, reduce = function(state, events), ... }`.
function S.valid_reducer(r)
  return r == nil or r == "kv" or r == "last"
    or (type(r) == "table" and type(r.name) == "string" and type(r.reduce) == "function")
end

local function check_reducer(v)
  return type(v) == "function" or S.valid_reducer(v)
end

-- Whether `k` names a policy (an entry of `odo.policy`, or one whose
-- default is nil).
local function known(k)
  return defaults[k] ~= nil or DEFAULT_NIL[k] == true
end

--- Checks one policy entry; raises (at the caller's caller's level) when
-- its type or range is wrong.
function S.check(k, v, level)
  level = (level or 1) + 1
  local function bad(what)
    error(("policy '%s' %s, got %s"):format(k, what, v == nil and "nil" or tostring(v)), level + 1)
  end
  if k == "reducer" then
    if not check_reducer(v) then bad("must be nil, \"kv\", \"last\", a function or { name =, reduce = }") end
  elseif k == "peer_socket_buffer" then
    if v ~= nil and (type(v) ~= "number" or not (v >= 4096 and v <= 2 ^ 30)) then
      bad("must be nil or a number of bytes from 4096 to 2^30")
    end
  elseif k == "verify_threads" then
    if v ~= nil and (not compat.is_integer(v) or v < 0 or v > 16) then bad("must be nil or an integer from 0 to 16") end
  elseif DELAYS[k] then
    local ok, why = check_backoff(v)
    if not ok then bad("must be an array of delays (ms) or a function" .. (why and (": " .. why) or "")) end
  elseif INTEGER_RANGE[k] then
    local lo, hi = INTEGER_RANGE[k][1], INTEGER_RANGE[k][2]
    if not compat.is_integer(v) or v < lo or v > hi then bad(("must be an integer from %d to %d"):format(lo, hi)) end
  elseif FRACTION[k] then
    if type(v) ~= "number" or not (v >= 0 and v <= 1) then bad("must be a number from 0 to 1") end
  elseif type(defaults[k]) == "number" then
    if type(v) ~= "number" or v ~= v then bad("must be a number") end
    if POSITIVE[k] and v <= 0 then bad("must be greater than 0") end
    if v < 0 then bad("must not be negative") end
  elseif type(defaults[k]) == "function" then
    if type(v) ~= "function" then bad("must be a function") end
  elseif type(defaults[k]) == "boolean" then
    if type(v) ~= "boolean" then bad("must be true or false") end
  end
end

--- Returns a policy table: the defaults, with the user's entries on top.
-- Raises on an unknown entry or one of the wrong type.
function S.merge(user)
  if user ~= nil and type(user) ~= "table" then
    error("opts.policy must be a table, got " .. type(user), 3)
  end
  local p = {}
  for k, v in pairs(defaults) do p[k] = v end
  for k, v in pairs(user or {}) do
    if not known(k) then
      error("unknown policy '" .. tostring(k) .. "'", 3)
    end
    S.check(k, v, 3)
    p[k] = v
  end
  return p
end

--- Calls the node's policy function `name` with the arguments, protected:
-- true and its results, or false when it raised or `valid` (optional)
-- refused its first result (`valid(v)` answers ok and, when not, what was
-- expected); that failure goes to the node's error handler ("the default
-- decides instead": the caller's part).
function S.try(node, name, valid, ...)
  local res = compat.pack(compat.xpcall(node.policy[name], debug.traceback, ...))
  local why
  if not res[1] then
    why = tostring(res[2])
  elseif valid then
    local good, expected = valid(res[2])
    if not good then why = "it returned " .. tostring(res[2]) .. (expected and (", not " .. expected) or "") end
  end
  if not why then return true, compat.unpack(res, 2, res.n) end
  node:report_error(("policy %s failed; the default decides instead: %s"):format(name, why))
  return false
end

--- Calls the node's policy function `name` with the arguments, protected.
-- When it raises, the error goes to the node's error handler and the
-- default policy decides instead (nothing, when the default is not a
-- function or is the one that failed).
function S.call(node, name, ...)
  local res = compat.pack(S.try(node, name, nil, ...))
  if res[1] then return compat.unpack(res, 2, res.n) end
  local fn, default = node.policy[name], defaults[name]
  if type(default) ~= "function" or default == fn then return nil end
  local ok, v1, v2 = pcall(default, ...)
  if ok then return v1, v2 end
  return nil
end

return S
