-- The optional second rock: odo.dht, DHT discovery over OpenDHT.
--
-- OpenDHT is GPL-3.0-or-later, so this module is too, and a program that
-- loads it is distributed under the GPL's terms (README, "Discovery through
-- a DHT"). odo-journal itself (odo.core and the Lua modules, MIT) never
-- loads it unless a DHT source is made (`odo run --dht-topic`,
-- `odo.discovery.dht`).
--
--   apt-get install libopendht-dev      # Debian 12: OpenDHT 2.4
--   luarocks make --deps-mode=none rockspec/odo-journal-dht-scm-1.rockspec
--
-- From a checkout, `make dht` builds the same module as build/odo/dht.so.
rockspec_format = "3.0"
package = "odo-journal-dht"
version = "scm-1"
source = {
  url = "git+https://github.com/odo-journal/odo-journal.git",
}
description = {
  summary = "DHT peer discovery for odo-journal, over OpenDHT (GPL-3.0+)",
  detailed = [[
odo.dht: a thin C++ module over OpenDHT's DhtRunner (bind address, value
types with their own expiry, node statistics), waking Lua's loop through an
eventfd. Used by odo.discovery.dht from the odo-journal rock.]],
  license = "GPL-3.0-or-later",
}
dependencies = {
  "lua >= 5.1",
  "odo-journal",
}
external_dependencies = {
  OPENDHT = { header = "opendht/dhtrunner.h", library = "opendht" },
}
build = {
  type = "builtin",
  modules = {
    ["odo.dht"] = {
      sources = { "csrc-dht/dht.cpp" },
      libraries = { "opendht", "stdc++", "pthread" },
      incdirs = { "$(OPENDHT_INCDIR)", "/usr/include/jsoncpp", "/usr/include/p11-kit-1" },
      libdirs = { "$(OPENDHT_LIBDIR)" },
    },
  },
}
