rockspec_format = "3.0"
package = "odo-journal"
version = "scm-1"
source = {
  url = "git+https://github.com/odo-journal/odo-journal.git",
}
description = {
  summary = "A distributed, peer-to-peer, append-only event journal",
  detailed = [[
A C core (LevelDB log store, OpenSSL mutual-TLS transport, snapshot builder,
sync protocol) under a Lua front-end that runs on luv's event loop.]],
  license = "MIT",
}
dependencies = {
  "lua >= 5.1",
  "luv",
  "lua-cjson",
  "argparse",
}
external_dependencies = {
  OPENSSL = { header = "openssl/ssl.h", library = "ssl" },
  LEVELDB = { header = "leveldb/c.h", library = "leveldb" },
}
build = {
  type = "builtin",
  modules = {
    ["odo.core"] = {
      sources = {
        "csrc/core.c",
        "csrc/event.c",
        "csrc/store.c",
        "csrc/store_events.c",
        "csrc/store_peers.c",
        "csrc/store_snapshots.c",
        "csrc/util.c",
      },
      libraries = { "leveldb", "ssl", "crypto" },
      incdirs = { "$(OPENSSL_INCDIR)", "$(LEVELDB_INCDIR)" },
      libdirs = { "$(OPENSSL_LIBDIR)", "$(LEVELDB_LIBDIR)" },
    },
    ["odo"] = "lua/odo/init.lua",
    ["odo.store"] = "lua/odo/store.lua",
  },
}
