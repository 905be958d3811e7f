/* core.c - luaopen_odo_core: builds the module table from every part of
 * the C core. Each part registers its own classes and functions. */
#include <openssl/opensslv.h>

#include "odo.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>

/* Sanitizer builds only: runs LeakSanitizer now, while the module and the
 * Lua state are alive, so what Lua still references is not reported. */
static int l_leak_check(lua_State *L) {
  lua_pushboolean(L, __lsan_do_recoverable_leak_check() == 0);
  return 1;
}
#endif

int luaopen_odo_core(lua_State *L);

int luaopen_odo_core(lua_State *L) {
  lua_newtable(L);
  odo_store_open(L);
  lua_pushstring(L, OPENSSL_VERSION_TEXT);
  lua_setfield(L, -2, "openssl_version");
  lua_pushinteger(L, ODO_MAX_DATA);
  lua_setfield(L, -2, "max_data");
  lua_pushinteger(L, ODO_MAX_BATCH_EVENTS);
  lua_setfield(L, -2, "max_batch_events");
#if defined(__SANITIZE_ADDRESS__)
  lua_pushcfunction(L, l_leak_check);
  lua_setfield(L, -2, "_leak_check");
#endif
  return 1;
}
