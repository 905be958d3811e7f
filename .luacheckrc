std = "min"
max_line_length = 120
files["spec"] = { std = "lua54+busted" }
files["bench"] = { std = "lua54" }
exclude_files = { "build", "luarocks-tree" }
-- the command line runs on Lua 5.4 (bin/odo's interpreter)
files["lua/odo/cli"] = { std = "lua54" }
files["bin/odo"] = { std = "lua54" }
files["lua/odo/control.lua"] = { std = "lua54" }
