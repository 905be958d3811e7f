/* store_class.c - the store's Lua class (odo.core.store_open and the
 * methods of odo.store): one table of the methods the store's files
 * define (store.c: opening and the catalogue; store_events.c: events and
 * iterators; store_snapshots.c: snapshots, compaction, heads;
 * store_peers.c: peer history and source keys; store_pack.c: packing
 * single-event records into segments). It sits on top of them,
 * so none of them calls another's Lua methods. */
#include "store.h"

void odo_store_open(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"close", odo_store_l_close},
      {"is_open", odo_store_l_is_open},
      {"info", odo_store_l_info},
      {"streams", odo_store_l_streams},
      {"stream", odo_store_l_stream},
      {"stream_state", odo_store_l_stream_state},
      {"changes", odo_store_l_changes},
      {"sync", odo_store_l_sync},
      {"append", odo_store_l_append},
      {"append_many", odo_store_l_append_many},
      {"append_replica", odo_store_l_append_replica},
      {"read", odo_store_l_read},
      {"iter", odo_store_l_iter},
      {"verify", odo_store_l_verify},
      {"snapshot_put", odo_store_l_snapshot_put},
      {"snapshot_get", odo_store_l_snapshot_get},
      {"snapshot_install", odo_store_l_snapshot_install},
      {"compact", odo_store_l_compact},
      {"purge", odo_store_l_purge},
      {"pack", odo_store_l_pack},
      {"compact_packed", odo_store_l_compact_packed},
      {"head_put", odo_store_l_head_put},
      {"head_find", odo_store_l_head_find},
      {"peer_put", odo_store_l_peer_put},
      {"peers", odo_store_l_peers},
      {"peer_delete", odo_store_l_peer_delete},
      {"key_put", odo_store_l_key_put},
      {"key_get", odo_store_l_key_get},
      {NULL, NULL}};
  odo_newclass(L, ODO_STORE_CLASS, methods, odo_store_l_close, odo_store_l_tostring);
  odo_iter_register(L);
  lua_pushcfunction(L, odo_store_l_store_open);
  lua_setfield(L, -2, "store_open");
  lua_pushcfunction(L, odo_store_l_store_destroy);
  lua_setfield(L, -2, "store_destroy");
}
