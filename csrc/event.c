/* event.c - the canonical event encoding (the one encoder of
 * rev | ts | type_len | type | len | data), chain hashing (SHA-256 through
 * OpenSSL's EVP interface) and the Lua form of an event. */

#include "event.h"

int odo_hasher_init(odo_hasher *h) {
  h->md = EVP_MD_fetch(NULL, "SHA256", NULL);
  h->ctx = EVP_MD_CTX_new();
  if (h->md == NULL || h->ctx == NULL) {
    odo_hasher_free(h);
    return 0;
  }
  return 1;
}

void odo_hasher_free(odo_hasher *h) {
  EVP_MD_CTX_free(h->ctx);
  EVP_MD_free(h->md);
  h->ctx = NULL;
  h->md = NULL;
}

int odo_sha256(odo_hasher *h, const void *p, size_t n,
               uint8_t out[ODO_HASH_LEN]) {
  return EVP_DigestInit_ex2(h->ctx, h->md, NULL) &&
         EVP_DigestUpdate(h->ctx, p, n) &&
         EVP_DigestFinal_ex(h->ctx, out, NULL);
}

int odo_chain_genesis(odo_hasher *h, const char *stream_id, size_t len,
                      uint8_t out[ODO_HASH_LEN]) {
  static const char tag[] = "odo-journal chain v1"; /* + its NUL */
  return EVP_DigestInit_ex2(h->ctx, h->md, NULL) &&
         EVP_DigestUpdate(h->ctx, tag, sizeof tag) &&
         EVP_DigestUpdate(h->ctx, stream_id, len) &&
         EVP_DigestFinal_ex(h->ctx, out, NULL);
}

/* The fixed fields in front of the type (rev | ts | type_len, or
 * without the rev) and the data's length that follows the type. */
typedef struct event_fields {
  uint8_t head[8 + 8 + 1], dlen[4];
  const uint8_t *from; /* where head starts: with or without the rev */
  size_t n;
} event_fields;

static void event_fields_of(const odo_event *ev, int with_rev,
                            event_fields *f) {
  odo_put_be64(f->head, ev->rev);
  odo_put_be64(f->head + 8, ev->ts);
  f->head[16] = (uint8_t)ev->type_len;
  odo_put_be32(f->dlen, (uint32_t)ev->data_len);
  f->from = with_rev ? f->head : f->head + 8;
  f->n = with_rev ? sizeof f->head : sizeof f->head - 8;
}

int odo_event_encode(odo_buf *b, const odo_event *ev, int with_rev) {
  event_fields f;
  if (ev->type_len > 255 || ev->data_len > UINT32_MAX)
    return (b->failed = 1), 0;
  event_fields_of(ev, with_rev, &f);
  return odo_buf_reserve(b, f.n + ev->type_len + 4 + ev->data_len) &&
         odo_buf_add(b, f.from, f.n) && odo_buf_add(b, ev->type, ev->type_len) &&
         odo_buf_add(b, f.dlen, 4) && odo_buf_add(b, ev->data, ev->data_len);
}

int odo_event_decode(odo_rd *r, odo_event *ev, int with_rev) {
  if (with_rev) ev->rev = odo_rd_be64(r);
  ev->ts = odo_rd_be64(r);
  ev->type = odo_rd_str8(r, &ev->type_len);
  ev->data_len = odo_rd_be32(r);
  ev->data = (const char *)odo_rd_bytes(r, ev->data_len);
  return !r->bad;
}

/* Up to this many bytes, an event's hashed input is gathered on the
 * stack and hashed in one update: the same bytes in the same order (the
 * same hash), a third of the calls. */
#define CHAIN_GATHER 512

int odo_chain_next(odo_hasher *h, const uint8_t prev[ODO_HASH_LEN],
                   const odo_event *ev, uint8_t out[ODO_HASH_LEN]) {
  event_fields f;
  event_fields_of(ev, 1, &f);
  if (ev->type_len + ev->data_len <= CHAIN_GATHER - ODO_HASH_LEN - sizeof f.head - sizeof f.dlen) {
    uint8_t in[CHAIN_GATHER], *p = in;
    memcpy(p, prev, ODO_HASH_LEN);
    p += ODO_HASH_LEN;
    memcpy(p, f.from, f.n);
    p += f.n;
    if (ev->type_len) memcpy(p, ev->type, ev->type_len);
    p += ev->type_len;
    memcpy(p, f.dlen, sizeof f.dlen);
    p += sizeof f.dlen;
    if (ev->data_len) memcpy(p, ev->data, ev->data_len);
    p += ev->data_len;
    return EVP_DigestInit_ex2(h->ctx, h->md, NULL) &&
           EVP_DigestUpdate(h->ctx, in, (size_t)(p - in)) &&
           EVP_DigestFinal_ex(h->ctx, out, NULL);
  }
  return EVP_DigestInit_ex2(h->ctx, h->md, NULL) &&
         EVP_DigestUpdate(h->ctx, prev, ODO_HASH_LEN) &&
         EVP_DigestUpdate(h->ctx, f.from, f.n) &&
         EVP_DigestUpdate(h->ctx, ev->type, ev->type_len) &&
         EVP_DigestUpdate(h->ctx, f.dlen, sizeof f.dlen) &&
         EVP_DigestUpdate(h->ctx, ev->data, ev->data_len) &&
         EVP_DigestFinal_ex(h->ctx, out, NULL);
}

void odo_push_event(lua_State *L, const odo_event *ev, int with_hash) {
  lua_createtable(L, 0, 5);
  odo_pushu64(L, ev->rev);
  lua_setfield(L, -2, "rev");
  odo_pushu64(L, ev->ts);
  lua_setfield(L, -2, "ts");
  lua_pushlstring(L, ev->type, ev->type_len);
  lua_setfield(L, -2, "type");
  lua_pushlstring(L, ev->data, ev->data_len);
  lua_setfield(L, -2, "data");
  if (with_hash) {
    lua_pushlstring(L, (const char *)ev->hash, ODO_HASH_LEN);
    lua_setfield(L, -2, "hash");
  }
}

int odo_check_event(lua_State *L, int idx, odo_event *ev, uint64_t def_ts,
                    odo_err *e) {
  if (lua_type(L, idx) != LUA_TTABLE)
    luaL_error(L, "an event must be a table, got %s", luaL_typename(L, idx));
  lua_getfield(L, idx, "type");
  if (lua_type(L, -1) != LUA_TSTRING)
    luaL_error(L, "event.type must be a string, got %s",
               luaL_typename(L, -1));
  ev->type = lua_tolstring(L, -1, &ev->type_len);
  lua_getfield(L, idx, "data");
  if (lua_isnil(L, -1)) {
    ev->data = "";
    ev->data_len = 0;
  } else if (lua_type(L, -1) == LUA_TSTRING) {
    ev->data = lua_tolstring(L, -1, &ev->data_len);
  } else {
    luaL_error(L, "event.data must be a string, got %s", luaL_typename(L, -1));
  }
  /* Both strings stay referenced by the event table at idx. */
  lua_pop(L, 2);
  ev->ts = odo_fieldu64(L, idx, "ts", def_ts);
  if (ev->type_len == 0)
    return odo_err_set(e, "EINVAL", "an event type must not be empty");
  if (ev->type_len > ODO_MAX_TYPE)
    return odo_err_set(e, "ETOOBIG", "event type is %zu bytes; the limit is %d",
                       ev->type_len, ODO_MAX_TYPE);
  if (ev->data_len > ODO_MAX_DATA)
    return odo_err_set(e, "ETOOBIG", "event data is %zu bytes; the limit is %u",
                       ev->data_len, ODO_MAX_DATA);
  return 1;
}
