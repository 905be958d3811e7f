--- A minimal event emitter mixed into node objects: `on`, `off`, `emit`.
-- Listeners run in protected calls; an error goes to `self:_error`.
-- @module odo.emitter
local E = {}

--- Adds a listener for event `name`; returns fn (to pass to `off`).
function E:on(name, fn)
  assert(type(name) == "string", "event name must be a string")
  assert(type(fn) == "function", "listener must be a function")
  local l = self._listeners[name]
  if not l then
    l = {}
    self._listeners[name] = l
  end
  l[#l + 1] = fn
  return fn
end

--- Removes a listener.
function E:off(name, fn)
  local l = self._listeners[name]
  if not l then return end
  for i = #l, 1, -1 do
    if l[i] == fn then table.remove(l, i) end
  end
end

--- Calls every listener of `name` with the arguments.
function E:emit(name, ...)
  local l = self._listeners[name]
  if not l then return end
  for i = 1, #l do
    self:_protect(l[i], ...)
  end
end

function E.mixin(obj)
  obj._listeners = {}
  obj.on, obj.off, obj.emit = E.on, E.off, E.emit
  return obj
end

return E
