/* core.c - luaopen_odo_core: builds the module table from every part of
 * the C core. Each part registers its own classes and functions. */

/***
 * The C core: the event store, the snapshot builder, TLS contexts and
 * sessions, frames, the sync engine, signatures and certificates. Lua
 * code uses it through `odo`; its functions are documented here for
 * those who drive it directly.
 * @module odo.core
 */
#define _GNU_SOURCE
#include <dlfcn.h>
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

/* LevelDB runs compactions on a background thread that lives as long as
 * the process. When Lua closes, it unloads C modules; unloading this one
 * would unload LevelDB under that thread (which then crashes the process
 * on exit, now and then). So this module pins itself in memory. */
static void pin_module(void) {
  Dl_info info;
  if (dladdr((void *)pin_module, &info) && info.dli_fname)
    (void)dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
}

int luaopen_odo_core(lua_State *L) {
  pin_module();
  lua_newtable(L);
  odo_util_open(L);
  odo_store_open(L);
  odo_snapshot_open(L);
  odo_commit_queue_open(L);
  odo_certgen_open(L);
  odo_tls_open(L);
  odo_mdns_open(L);
  odo_wire_open(L);
  odo_session_open(L);
  odo_sign_open(L);
  odo_sync_open(L);
  odo_sync_msg_open(L);
  odo_tls_pipe_open(L);
  odo_dns_open(L);
  odo_thread_prio_open(L);
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
