-- bench/luaprof.lua - a sampling profiler of Lua code for the benchmarks:
-- every 1000 VM instructions it counts the running line, and each
-- function on the stack once (inclusive). `local stop = require
-- "bench.luaprof"()` starts it; `stop(out)` stops it and writes the top
-- lines and functions to out (default stderr).
return function()
  local lines, funcs = {}, {}
  debug.sethook(function()
    local info = debug.getinfo(2, "Sl")
    if info then
      local k = info.short_src .. ":" .. (info.currentline or 0)
      lines[k] = (lines[k] or 0) + 1
    end
    local seen = {}
    for level = 2, 12 do
      local f = debug.getinfo(level, "Sn")
      if not f then break end
      local k = f.short_src .. ":" .. (f.linedefined or 0) .. " " .. tostring(f.name)
      if not seen[k] then
        funcs[k] = (funcs[k] or 0) + 1
        seen[k] = true
      end
    end
  end, "", 1000)
  return function(out)
    debug.sethook()
    out = out or io.stderr
    local function top(t, n)
      local a = {}
      for k, v in pairs(t) do a[#a + 1] = { k, v } end
      table.sort(a, function(x, y) return x[2] > y[2] end)
      for i = 1, math.min(n, #a) do out:write(("%8d %s\n"):format(a[i][2], a[i][1])) end
    end
    out:write("-- samples per line\n")
    top(lines, 25)
    out:write("-- samples per function (inclusive)\n")
    top(funcs, 30)
  end
end
