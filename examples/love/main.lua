-- examples/love/main.lua - a LÖVE game with an odo node inside: each player
-- is a node, its moves are its own stream (`<node id>/moves`), and every
-- instance shows every player as the streams replicate between them.
--
-- The node is stepped from love.update with a frame budget: luv's loop
-- runs without waiting, turn after turn, while the node says it has work
-- ready and the budget lasts (node:step / node:timeout, docs/ADAPTERS.md).
-- love.errorhandler is replaced so that a failure exits with status 1
-- instead of waiting on an error screen.
--
--   love examples/love --dir DIR --ca CA --cert CERT --key KEY
--        [--listen HOST:PORT] [--peer HOST:PORT]... [--name NAME]
--        [--headless] [--moves N --players K] [--timeout SECONDS]
--
-- Arrow keys move the player. Headless (no window), it plays by itself:
-- with --moves N it makes N moves, then waits until it has seen K players
-- (itself included) each with N moves, prints "all players: ..." and exits
-- 0 (1 after --timeout seconds, default 60).
-- luacheck: globals love

-- ---- paths: the checkout this folder belongs to -----------------------------------
local source = love.filesystem.getSource()
local root = source:match("^(.*)/examples/love/?$") or (source .. "/../..")
package.path = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. package.path
-- the core built against LuaJIT's headers (`make luajit`); LÖVE runs LuaJIT
package.cpath = root .. "/build/luajit/?.so;" .. package.cpath

local odo = require "odo"

local FRAME_BUDGET_MS = 4 -- the most a frame gives the node
local STEP_MS = 0.25      -- a player moves this often when playing by itself (s)

local game = {
  node = nil,
  me = nil,        -- my moves stream id
  players = {},    -- moves stream id -> { x, y, moves, name }
  opts = nil,
  made = 0,        -- moves made (headless)
  clock = 0,
  started = 0,
  step_ms = { n = 0, max = 0 },
}

local function fail(msg)
  io.stderr:write("odo love demo: ", tostring(msg), "\n")
  if game.node and not game.node.closed then pcall(game.node.close, game.node) end
  io.stderr:flush()
  os.exit(1)
end

--- A failure anywhere (love's callbacks, the node's handlers) exits 1
-- with its traceback, instead of LÖVE's error screen.
function love.errorhandler(msg)
  fail(debug.traceback(tostring(msg), 3))
end

-- ---- the command line ------------------------------------------------------------
local function parse(args)
  local o = { peers = {}, moves = 0, players = 1, timeout = 60 }
  local i = 1
  while i <= #args do
    local a = args[i]
    local v = args[i + 1]
    if a == "--headless" then
      o.headless = true
      i = i + 1
    elseif a == "--peer" then
      o.peers[#o.peers + 1] = v
      i = i + 2
    elseif a == "--moves" or a == "--players" or a == "--timeout" then
      o[a:sub(3)] = assert(tonumber(v), a .. " takes a number")
      i = i + 2
    elseif a:match("^%-%-[%w]+$") and v then
      o[a:sub(3)] = v
      i = i + 2
    else
      error("unknown argument " .. tostring(a))
    end
  end
  assert(o.dir and o.ca and o.cert and o.key, "--dir, --ca, --cert and --key are required")
  o.headless = o.headless or os.getenv("ODO_LOVE_HEADLESS") == "1"
  return o
end

-- ---- moves as events ------------------------------------------------------------------
local function player(stream)
  local p = game.players[stream]
  if not p then
    p = { x = 320, y = 240, moves = 0, name = stream:sub(1, 8) }
    game.players[stream] = p
  end
  return p
end

local function on_batch(batch)
  if not batch.stream:match("/moves$") then return end
  local p = player(batch.stream)
  for _, ev in ipairs(batch) do
    if ev.type == "move" then
      local x, y, name = ev.data:match("^(-?%d+),(-?%d+),?(.*)$")
      p.x, p.y, p.moves = tonumber(x), tonumber(y), ev.rev
      if name and name ~= "" then p.name = name end
    end
  end
end

local function move(dx, dy)
  local p = player(game.me)
  local x = math.max(0, math.min(630, p.x + dx))
  local y = math.max(0, math.min(470, p.y + dy))
  -- group commit: the frame never waits for the disk
  game.node:append({ type = "move", data = ("%d,%d,%s"):format(x, y, game.opts.name or "") },
    { stream = game.me }, function(_, err) if err then fail(err) end end)
end

-- ---- LÖVE ----------------------------------------------------------------------------
function love.load(args)
  game.opts = parse(args)
  local o = game.opts
  local node, err = odo.node {
    dir = o.dir,
    tls = { ca = o.ca, cert = o.cert, key = o.key },
    listen = o.listen,
    peers = o.peers,
    on_error = fail,
  }
  if not node then fail(err) end
  game.node = node
  -- each player its own walk (LuaJIT starts every process on one seed)
  math.randomseed(tonumber(node.id:sub(1, 8), 16))
  game.me = node:stream_id("moves")
  player(game.me).name = o.name or node.id:sub(1, 8)
  node:subscribe("*", 1, on_batch)
  game.started = love.timer.getTime()
  if node.listen then print(("listening on %s:%d"):format(node.listen.host, node.listen.port)) end
  print("player " .. game.me)
  io.stdout:flush()
end

-- Steps the node while it has work ready, within the frame's budget.
local function step_node()
  local t0 = love.timer.getTime()
  local deadline = t0 + FRAME_BUDGET_MS / 1000
  repeat
    game.node:step(0)
  until game.node:timeout() ~= 0 or love.timer.getTime() >= deadline
  local ms = (love.timer.getTime() - t0) * 1000
  game.step_ms.n = game.step_ms.n + 1
  game.step_ms.max = math.max(game.step_ms.max, ms)
end

local function everyone_done()
  local done = 0
  for _, p in pairs(game.players) do
    if p.moves >= game.opts.moves then done = done + 1 end
  end
  return done >= game.opts.players
end

local function finish()
  local names = {}
  for id, p in pairs(game.players) do
    names[#names + 1] = ("%s=%d@%d,%d"):format(p.name or id:sub(1, 8), p.moves, p.x, p.y)
  end
  table.sort(names)
  print(("all players: %s (frames %d, longest step %.2f ms)"):format(table.concat(names, " "),
    game.step_ms.n, game.step_ms.max))
  io.stdout:flush()
  love.event.quit(0)
end

function love.update(dt)
  step_node()
  local o = game.opts
  if o.headless or o.moves > 0 then
    game.clock = game.clock + dt
    if game.made < o.moves and game.clock >= STEP_MS then
      game.clock = 0
      game.made = game.made + 1
      move(math.random(-20, 20), math.random(-20, 20))
    end
    if o.moves > 0 and game.made >= o.moves and everyone_done() then return finish() end
    if love.timer.getTime() - game.started > o.timeout then
      fail(("timed out after %d s: %d of %d players seen with %d moves"):format(o.timeout,
        (function() local n = 0 for _ in pairs(game.players) do n = n + 1 end return n end)(), o.players, o.moves))
    end
  end
end

function love.keypressed(key)
  local d = { left = { -10, 0 }, right = { 10, 0 }, up = { 0, -10 }, down = { 0, 10 } }
  if d[key] then move(d[key][1], d[key][2]) end
  if key == "escape" then love.event.quit(0) end
end

function love.draw()
  for id, p in pairs(game.players) do
    if id == game.me then love.graphics.setColor(0.3, 0.9, 0.4) else love.graphics.setColor(0.4, 0.6, 1) end
    love.graphics.rectangle("fill", p.x, p.y, 10, 10)
    love.graphics.print(("%s (%d)"):format(p.name, p.moves), p.x + 12, p.y - 2)
  end
  love.graphics.setColor(1, 1, 1)
  love.graphics.print("arrows: move   esc: quit", 8, 460)
end

--- Closing: the node says goodbye to its peers and closes its store; the
-- loop then runs until luv has closed every handle.
function love.quit()
  if game.node and not game.node.closed then
    game.node:close()
    require("odo.adapter.luv").shutdown()
    for _ = 1, 20 do game.node:step(5) end
  end
  return false
end
