std = "min"
max_line_length = 120
files["spec"] = { std = "lua54+busted" }
files["bench"] = { std = "lua54" }
exclude_files = { "build", "luarocks-tree" }
