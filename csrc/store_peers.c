/* store_peers.c - what a node keeps about other nodes: peer history (the
 * peers it has been introduced to, so a restarted node finds them again
 * without seeds) and source keys (the public keys of the streams' sources,
 * to verify their signatures and hand on to others).
 *
 * Peer:  'p' | peer id.   Payload: the peer record (records.c)
 * Key:   'k' | source id. Payload: SubjectPublicKeyInfo DER */

/***
 * @submodule odo.core
 */
#include <stdlib.h>

#include "store.h"

#define MAX_HOST 255
#define MAX_REASON 1024

static int peer_key(odo_buf *k, const char *id, size_t len) {
  k->len = 0;
  return odo_buf_add_u8(k, ODO_K_PEER) && odo_buf_add(k, id, len);
}

static const char *field_str(lua_State *L, int t, const char *k, size_t *len,
                             size_t max, int required) {
  const char *v;
  lua_getfield(L, t, k);
  if (lua_isnil(L, -1) && !required) {
    lua_pop(L, 1);
    *len = 0;
    return "";
  }
  if (lua_type(L, -1) != LUA_TSTRING)
    luaL_error(L, "peer.%s must be a string", k);
  v = lua_tolstring(L, -1, len);
  if (*len > max) luaL_error(L, "peer.%s is longer than %d bytes", k, (int)max);
  lua_pop(L, 1); /* still referenced by the table */
  return v;
}

/***
 * Records a peer: {id, host, port, last_seen (ms, default now), reason}.
 * @function peer_put
 */
int odo_store_l_peer_put(lua_State *L) {
  odo_store *s = odo_store_check(L, 1);
  size_t id_len, host_len, reason_len;
  const char *id, *host, *reason;
  uint64_t port, seen;
  odo_buf k;
  odo_err e = {0};
  luaL_checktype(L, 2, LUA_TTABLE);
  id = field_str(L, 2, "id", &id_len, ODO_MAX_NODE_ID, 1);
  host = field_str(L, 2, "host", &host_len, MAX_HOST, 1);
  reason = field_str(L, 2, "reason", &reason_len, MAX_REASON, 0);
  port = odo_fieldu64(L, 2, "port", 0);
  seen = odo_fieldu64(L, 2, "last_seen", odo_now_ms());
  if (id_len == 0 || port == 0 || port > 65535)
    return luaL_error(L, "a peer needs an id and a port from 1 to 65535");
  odo_buf_init(&k);
  if (!peer_key(&k, id, id_len)) {
    odo_buf_free(&k);
    return luaL_error(L, "out of memory");
  }
  odo_txn_begin(s);
  {
    odo_peer_rec r;
    r.port = (uint16_t)port;
    r.last_seen = seen;
    r.host = host;
    r.host_len = host_len;
    r.reason = reason;
    r.reason_len = reason_len;
    odo_rec_begin(&s->val);
    odo_rec_peer_encode(&s->val, &r);
  }
  odo_store_put(s, k.p, k.len, &s->val);
  odo_buf_free(&k);
  if (!odo_txn_commit(s, 0, &e)) return odo_err_push(L, &e);
  lua_pushboolean(L, 1);
  return 1;
}

/***
 * Every recorded peer, sorted by id.
 * @function peers
 * @treturn table array of {id, host, port, last_seen, reason}
 */
int odo_store_l_peers(lua_State *L) {
  odo_store *s = odo_store_check(L, 1);
  leveldb_iterator_t *it = leveldb_create_iterator(s->db, s->ropts);
  char tag = ODO_K_PEER;
  int n = 0;
  lua_newtable(L);
  leveldb_iter_seek(it, &tag, 1);
  for (; leveldb_iter_valid(it); leveldb_iter_next(it)) {
    size_t kl, vl, pl;
    const uint8_t *k = (const uint8_t *)leveldb_iter_key(it, &kl);
    const char *v = leveldb_iter_value(it, &vl);
    const uint8_t *p;
    odo_peer_rec r;
    if (kl < 2 || k[0] != ODO_K_PEER) break;
    p = odo_rec_open(k, kl, v, vl, &pl);
    if (p == NULL || !odo_rec_peer_decode(p, pl, &r)) {
      leveldb_iter_destroy(it);
      return odo_fail(L, "ECORRUPT", "the history record of peer %.*s is "
                      "damaged", (int)(kl - 1), (const char *)k + 1);
    }
    lua_createtable(L, 0, 5);
    lua_pushlstring(L, (const char *)k + 1, kl - 1);
    lua_setfield(L, -2, "id");
    lua_pushlstring(L, r.host, r.host_len);
    lua_setfield(L, -2, "host");
    lua_pushinteger(L, r.port);
    lua_setfield(L, -2, "port");
    odo_pushu64(L, r.last_seen);
    lua_setfield(L, -2, "last_seen");
    lua_pushlstring(L, r.reason, r.reason_len);
    lua_setfield(L, -2, "reason");
    lua_rawseti(L, -2, ++n);
  }
  {
    odo_err e = {0};
    int ok = odo_iter_ok(it, &e, "reading the peer history");
    leveldb_iter_destroy(it);
    if (!ok) return odo_err_push(L, &e);
  }
  return 1;
}

/***
 * Forgets a peer.
 * @function peer_delete
 * @tparam string id
 */
int odo_store_l_peer_delete(lua_State *L) {
  odo_store *s = odo_store_check(L, 1);
  size_t len;
  const char *id = luaL_checklstring(L, 2, &len);
  odo_buf k;
  odo_err e = {0};
  odo_buf_init(&k);
  if (!peer_key(&k, id, len)) {
    odo_buf_free(&k);
    return luaL_error(L, "out of memory");
  }
  odo_txn_begin(s);
  odo_store_del(s, k.p, k.len);
  odo_buf_free(&k);
  if (!odo_txn_commit(s, 0, &e)) return odo_err_push(L, &e);
  lua_pushboolean(L, 1);
  return 1;
}

/* ---- source keys ---------------------------------------------------------- */

static int key_key(odo_buf *k, const char *id, size_t len) {
  k->len = 0;
  return odo_buf_add_u8(k, ODO_K_KEY) && odo_buf_add(k, id, len);
}

void odo_stage_key(odo_store *s, const char *id, size_t len,
                   const uint8_t *der, size_t n) {
  odo_buf k;
  odo_buf_init(&k);
  odo_rec_begin(&s->val);
  odo_buf_add(&s->val, der, n);
  if (key_key(&k, id, len)) odo_store_put(s, k.p, k.len, &s->val);
  else s->txn_failed = 1;
  odo_buf_free(&k);
}

int odo_store_key_put(odo_store *s, const char *id, size_t len,
                      const uint8_t *der, size_t n, odo_err *e) {
  odo_txn_begin(s);
  odo_stage_key(s, id, len, der, n);
  return odo_txn_commit(s, 0, e);
}

int odo_store_key_get(odo_store *s, const char *id, size_t len, char **raw,
                      const uint8_t **der, size_t *n, odo_err *e) {
  odo_buf k;
  int rc;
  odo_buf_init(&k);
  if (!key_key(&k, id, len)) {
    odo_buf_free(&k);
    return odo_err_set(e, "ENOMEM", "out of memory"), -1;
  }
  rc = odo_store_get(s, k.p, k.len, raw, der, n, e);
  odo_buf_free(&k);
  return rc;
}

/***
 * Records a source's public key (SubjectPublicKeyInfo DER).
 * @function key_put
 */
int odo_store_l_key_put(lua_State *L) {
  odo_store *s = odo_store_check(L, 1);
  size_t len, n;
  const char *id = luaL_checklstring(L, 2, &len);
  const char *der = luaL_checklstring(L, 3, &n);
  odo_err e = {0};
  if (!odo_store_key_put(s, id, len, (const uint8_t *)der, n, &e)) return odo_err_push(L, &e);
  lua_pushboolean(L, 1);
  return 1;
}

/***
 * A source's public key, or nil.
 * @function key_get
 */
int odo_store_l_key_get(lua_State *L) {
  odo_store *s = odo_store_check(L, 1);
  size_t len, n;
  const char *id = luaL_checklstring(L, 2, &len);
  const uint8_t *der;
  char *raw = NULL;
  odo_err e = {0};
  int rc = odo_store_key_get(s, id, len, &raw, &der, &n, &e);
  if (rc < 0) return odo_err_push(L, &e);
  if (rc == 0) return 0;
  lua_pushlstring(L, (const char *)der, n);
  leveldb_free(raw);
  return 1;
}
