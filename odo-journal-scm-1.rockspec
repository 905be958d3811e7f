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
        "csrc/certgen.c",
        "csrc/core.c",
        "csrc/event.c",
        "csrc/identity.c",
        "csrc/session.c",
        "csrc/sign.c",
        "csrc/snapshot.c",
        "csrc/store.c",
        "csrc/store_events.c",
        "csrc/store_peers.c",
        "csrc/store_snapshots.c",
        "csrc/sync.c",
        "csrc/tls.c",
        "csrc/util.c",
        "csrc/wire.c",
      },
      libraries = { "leveldb", "ssl", "crypto", "pthread" },
      incdirs = { "$(OPENSSL_INCDIR)", "$(LEVELDB_INCDIR)" },
      libdirs = { "$(OPENSSL_LIBDIR)", "$(LEVELDB_LIBDIR)" },
    },
    ["odo.adapter.luv"] = "lua/odo/adapter/luv.lua",
    ["odo.adapter.memory"] = "lua/odo/adapter/memory.lua",
    ["odo.cli.append"] = "lua/odo/cli/append.lua",
    ["odo.cli.cert"] = "lua/odo/cli/cert.lua",
    ["odo.cli"] = "lua/odo/cli/init.lua",
    ["odo.cli.run"] = "lua/odo/cli/run.lua",
    ["odo.cli.status"] = "lua/odo/cli/status.lua",
    ["odo.cli.tail"] = "lua/odo/cli/tail.lua",
    ["odo.cli.verify"] = "lua/odo/cli/verify.lua",
    ["odo.compat"] = "lua/odo/compat.lua",
    ["odo.control"] = "lua/odo/control.lua",
    ["odo.discovery"] = "lua/odo/discovery.lua",
    ["odo.emitter"] = "lua/odo/emitter.lua",
    ["odo"] = "lua/odo/init.lua",
    ["odo.journal"] = "lua/odo/journal.lua",
    ["odo.discovery.dht"] = "lua/odo/discovery/dht.lua",
    ["odo.cli.run_dht"] = "lua/odo/cli/run_dht.lua",
    ["odo.node"] = "lua/odo/node.lua",
    ["odo.policy"] = "lua/odo/policy.lua",
    ["odo.snapshots"] = "lua/odo/snapshots.lua",
    ["odo.store"] = "lua/odo/store.lua",
    ["odo.swarm"] = "lua/odo/swarm.lua",
    ["odo.sync"] = "lua/odo/sync.lua",
    ["odo.transport"] = "lua/odo/transport.lua",
    ["odo.verify"] = "lua/odo/verify.lua",
  },
  install = {
    bin = { odo = "bin/odo" },
  },
}
