-- examples/love/conf.lua - LÖVE's configuration for the odo demo: a window
-- of its own, or none at all with --headless (or ODO_LOVE_HEADLESS=1), so
-- specs and servers can run it with no display.
-- luacheck: globals love arg

local function headless()
  if os.getenv("ODO_LOVE_HEADLESS") == "1" then return true end
  for _, a in ipairs(arg or {}) do
    if a == "--headless" then return true end
  end
  return false
end

function love.conf(t)
  t.identity = "odo-love-demo"
  t.window.title = "odo-journal: every player's moves, replicated"
  t.window.width, t.window.height = 640, 480
  t.modules.audio, t.modules.sound, t.modules.joystick, t.modules.physics = false, false, false, false
  if headless() then
    t.window = false
    t.modules.window, t.modules.graphics, t.modules.font, t.modules.image = false, false, false, false
  end
end
