--- A minimal event emitter mixed into node objects: `on`, `off`, `emit`,
-- `listeners`.
-- Listeners run in protected calls; an error goes to `self:report_error` (`odo.node`).
--
-- A listener gets an event's values as arguments (the old form), or, when
-- registered with `{ table = true }`, as one table whose fields are named
-- by `E.FIELDS` (`{ event = name, peer = ..., old = ..., ... }`); an event
-- with no names listed there gets its values as the table's array part.
-- @module odo.emitter
local E = {}

--- The field names of each node event's values, in order (the table form).
E.FIELDS = {
  peer = { "peer", "old", "new", "reason" },
  snapshot = { "stream", "rev" },
  compact = { "stream", "first" },
  packed = { "stream", "last", "count" },
  close = {},
  error = { "message" },
  catalogue = { "peer", "entries", "full" },
  replicated = { "stream", "last", "peer", "count", "kind" },
  subscribed = { "peer", "stream", "from" },
  caught_up = { "stream", "rev", "peer" },
  upstream = { "stream", "new", "old" },
  violation = { "peer", "stream", "code", "reason" },
  notice = { "kind", "message" },
}

--- One event's values as a table (the table form of a listener).
function E.as_table(name, ...)
  local t = { event = name }
  local names = E.FIELDS[name]
  for i = 1, select("#", ...) do
    t[names and names[i] or i] = (select(i, ...))
  end
  return t
end

--- Adds a listener for event `name`; returns fn (to pass to `off`).
-- `opts.table` (boolean): fn gets one table (see `E.FIELDS`) instead of
-- the event's values as arguments.
function E:on(name, fn, opts)
  assert(type(name) == "string", "event name must be a string")
  assert(type(fn) == "function", "listener must be a function")
  assert(opts == nil or type(opts) == "table", "listener options must be a table")
  local l = self._listeners[name]
  if not l then
    l = {}
    self._listeners[name] = l
  end
  local call = fn
  if opts and opts.table then
    call = function(...) return fn(E.as_table(name, ...)) end
    self._wrapped = self._wrapped or {}
    self._wrapped[call] = fn
  end
  l[#l + 1] = call
  return fn
end

--- Removes a listener (in whichever form it was added).
function E:off(name, fn)
  local l = self._listeners[name]
  if not l then return end
  local wrapped = self._wrapped or {}
  for i = #l, 1, -1 do
    if l[i] == fn or wrapped[l[i]] == fn then
      wrapped[l[i]] = nil
      table.remove(l, i)
    end
  end
end

--- Calls every listener of `name` with the arguments.
function E:emit(name, ...)
  local l = self._listeners[name]
  if not l then return end
  for i = 1, #l do
    self:protect(l[i], ...)
  end
end

--- The functions that run for event `name`, in order, as a new array
-- (empty when none; a listener added with `{ table = true }` appears as
-- the function that wraps it).
function E:listeners(name)
  local l, copy = self._listeners[name] or {}, {}
  for i = 1, #l do copy[i] = l[i] end
  return copy
end

function E.mixin(obj)
  obj._listeners = {}
  obj.on, obj.off, obj.emit, obj.listeners = E.on, E.off, E.emit, E.listeners
  return obj
end

return E
