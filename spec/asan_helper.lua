-- spec/asan_helper.lua - loaded by `make test-asan` before each spec file:
-- at the end of the file's run, collects garbage and asks LeakSanitizer
-- for leaks while the core is still loaded; a leak fails the file.
local busted = require "busted"
local core = require "odo.core"

if core._leak_check then
  busted.subscribe({ "suite", "end" }, function()
    collectgarbage()
    collectgarbage()
    if not core._leak_check() then
      io.stdout:write("not ok - LeakSanitizer found leaks (report above)\n")
      io.stdout:flush()
      os.exit(3)
    end
    return nil, true
  end)
end
