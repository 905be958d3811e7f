/* sync_msg_lua.c - the sync message codec for Lua (odo.core.sync_msg):
 * decode a message's payload into a table, encode a table into a payload,
 * with exactly the C codec (sync_msg.c). Tools and specs use it to read
 * and write the wire, e.g. a relay that alters messages between two
 * engines. */

/***
 * @submodule odo.core
 */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "sync_msg.h"

static const char *const kinds[] = {"catalogue", "subscribe", "unsubscribe",
                                    "snapshot", "events", "caught_up",
                                    "refused", NULL};

/* ---- the messages' fields, as tables -------------------------------------------
 * Each message, and each item of a list, is described once by its fields:
 * the name in Lua, the kind, and where it sits in the C codec's struct
 * (a string's bytes and its length; a list's section). Decoding pushes
 * the fields in that order, encoding reads them in that order. */

typedef enum { F_U8, F_U16, F_U32, F_U64, F_STR, F_HASH, F_LIST } field_kind;

typedef struct item_desc item_desc;

typedef struct field {
  const char *name;
  field_kind kind;
  size_t at;             /* offsetof the member */
  size_t len_at;         /* F_STR: offsetof its length */
  const item_desc *item; /* F_LIST: what its items are */
} field;

/* A string item of a list (a catalogue key, an unsubscribed id). */
typedef struct str_item {
  const char *p;
  size_t len;
} str_item;

typedef union any_item {
  str_item str;
  odo_msg_cat_entry cat;
  odo_msg_sub_entry sub;
  odo_event ev;
} any_item;

/* A list's items: a string each (fields NULL) or a table of fields; read
 * and written by the C codec's item functions. */
struct item_desc {
  const field *fields;
  int (*next)(odo_rd *r, any_item *it);
  int (*put)(odo_buf *b, const any_item *it);
};

typedef union any_msg {
  odo_msg_catalogue cat;
  odo_msg_subscribe sub;
  odo_msg_unsubscribe unsub;
  odo_msg_snapshot snap;
  odo_msg_events ev;
  odo_msg_caught_up caught;
  odo_msg_refused refused;
} any_msg;

/* A message: its fields and the C codec's decoder and encoder. */
typedef struct msg_desc {
  const field *fields;
  int (*decode)(const uint8_t *p, size_t n, any_msg *m, odo_err *e);
  int (*encode)(odo_buf *b, const any_msg *m);
} msg_desc;

static int key_next(odo_rd *r, any_item *it) {
  const uint8_t *der;
  int ok = odo_msg_key_next(r, &der, &it->str.len);
  it->str.p = (const char *)der;
  return ok;
}
static int key_put(odo_buf *b, const any_item *it) {
  return odo_msg_key_put(b, (const uint8_t *)it->str.p, it->str.len);
}
static int id_next(odo_rd *r, any_item *it) {
  return odo_msg_id_next(r, &it->str.p, &it->str.len);
}
static int id_put(odo_buf *b, const any_item *it) {
  return odo_msg_id_put(b, it->str.p, it->str.len);
}
static int cat_next(odo_rd *r, any_item *it) { return odo_msg_cat_entry_next(r, &it->cat); }
static int cat_put(odo_buf *b, const any_item *it) { return odo_msg_cat_entry_put(b, &it->cat); }
static int sub_next(odo_rd *r, any_item *it) { return odo_msg_sub_entry_next(r, &it->sub); }
static int sub_put(odo_buf *b, const any_item *it) { return odo_msg_sub_entry_put(b, &it->sub); }
static int event_next(odo_rd *r, any_item *it) { return odo_msg_event_next(r, &it->ev); }
static int event_put(odo_buf *b, const any_item *it) { return odo_event_encode(b, &it->ev, 0); }

#define NUM(T, kind, name, m) {name, kind, offsetof(T, m), 0, NULL}
#define STR(T, name, m, len) {name, F_STR, offsetof(T, m), offsetof(T, len), NULL}
#define HASH(T, name, m) {name, F_HASH, offsetof(T, m), 0, NULL}
#define LIST(T, name, m, item) {name, F_LIST, offsetof(T, m), 0, &item}
#define END {NULL, F_U8, 0, 0, NULL}

static const field cat_entry_fields[] = {
    STR(odo_msg_cat_entry, "id", id, id_len),
    NUM(odo_msg_cat_entry, F_U64, "first", first),
    NUM(odo_msg_cat_entry, F_U64, "last", last),
    NUM(odo_msg_cat_entry, F_U64, "snapshot", snap),
    NUM(odo_msg_cat_entry, F_U64, "fresh", fresh),
    NUM(odo_msg_cat_entry, F_U8, "flags", flags),
    NUM(odo_msg_cat_entry, F_U8, "hops", hops),
    NUM(odo_msg_cat_entry, F_U16, "key", key),
    END};
static const field sub_entry_fields[] = {
    STR(odo_msg_sub_entry, "id", id, id_len),
    NUM(odo_msg_sub_entry, F_U64, "from", from), END};
static const field event_fields[] = {
    NUM(odo_event, F_U64, "ts", ts), STR(odo_event, "type", type, type_len),
    STR(odo_event, "data", data, data_len), END};

static const item_desc keys = {NULL, key_next, key_put};
static const item_desc ids = {NULL, id_next, id_put};
static const item_desc cat_entries = {cat_entry_fields, cat_next, cat_put};
static const item_desc sub_entries = {sub_entry_fields, sub_next, sub_put};
static const item_desc events = {event_fields, event_next, event_put};

static const field catalogue_fields[] = {
    NUM(odo_msg_catalogue, F_U8, "flags", flags),
    LIST(odo_msg_catalogue, "keys", keys, keys),
    LIST(odo_msg_catalogue, "entries", entries, cat_entries), END};
static const field subscribe_fields[] = {
    NUM(odo_msg_subscribe, F_U8, "flags", flags),
    LIST(odo_msg_subscribe, "entries", entries, sub_entries), END};
static const field unsubscribe_fields[] = {
    LIST(odo_msg_unsubscribe, "ids", ids, ids), END};
static const field snapshot_fields[] = {
    STR(odo_msg_snapshot, "stream", id, id_len),
    NUM(odo_msg_snapshot, F_U64, "rev", rev),
    HASH(odo_msg_snapshot, "hash", hash),
    STR(odo_msg_snapshot, "format", format, format_len),
    STR(odo_msg_snapshot, "sig", sig, sig_len),
    NUM(odo_msg_snapshot, F_U32, "total", total),
    NUM(odo_msg_snapshot, F_U32, "offset", offset),
    STR(odo_msg_snapshot, "data", chunk, chunk_len), END};
static const field events_fields[] = {
    STR(odo_msg_events, "stream", id, id_len),
    NUM(odo_msg_events, F_U64, "first", first),
    LIST(odo_msg_events, "events", events, events),
    NUM(odo_msg_events, F_U64, "head_rev", head_rev),
    HASH(odo_msg_events, "head_hash", head_hash),
    STR(odo_msg_events, "sig", sig, sig_len), END};
static const field caught_up_fields[] = {
    STR(odo_msg_caught_up, "stream", id, id_len),
    NUM(odo_msg_caught_up, F_U64, "rev", rev), END};
static const field refused_fields[] = {
    STR(odo_msg_refused, "stream", id, id_len),
    NUM(odo_msg_refused, F_U16, "code", code),
    STR(odo_msg_refused, "reason", reason, reason_len), END};

#define CODEC(name, member)                                                    \
  static int name##_decode(const uint8_t *p, size_t n, any_msg *m,            \
                           odo_err *e) {                                       \
    return odo_msg_##name##_decode(p, n, &m->member, e);                       \
  }                                                                            \
  static int name##_encode(odo_buf *b, const any_msg *m) {                     \
    return odo_msg_##name##_encode(b, &m->member);                             \
  }
CODEC(catalogue, cat)
CODEC(subscribe, sub)
CODEC(unsubscribe, unsub)
CODEC(snapshot, snap)
CODEC(events, ev)
CODEC(caught_up, caught)
CODEC(refused, refused)

/* By type, from ODO_MSG_CATALOGUE on (the order of `kinds`). */
static const msg_desc msgs[] = {
    {catalogue_fields, catalogue_decode, catalogue_encode},
    {subscribe_fields, subscribe_decode, subscribe_encode},
    {unsubscribe_fields, unsubscribe_decode, unsubscribe_encode},
    {snapshot_fields, snapshot_decode, snapshot_encode},
    {events_fields, events_decode, events_encode},
    {caught_up_fields, caught_up_decode, caught_up_encode},
    {refused_fields, refused_decode, refused_encode}};

/* A field's members, by its place in the struct s. */
static const void *get_ptr(const void *s, size_t at) {
  const void *v;
  memcpy(&v, (const char *)s + at, sizeof v);
  return v;
}
static void set_ptr(void *s, size_t at, const void *v) {
  memcpy((char *)s + at, &v, sizeof v);
}

static uint64_t get_num(const void *s, const field *f) {
  const char *p = (const char *)s + f->at;
  switch (f->kind) {
  case F_U8: return *(const uint8_t *)p;
  case F_U16: return *(const uint16_t *)p;
  case F_U32: return *(const uint32_t *)p;
  default: return *(const uint64_t *)p;
  }
}

static uint64_t num_max(field_kind k) {
  return k == F_U8 ? 255 : k == F_U16 ? 65535 : k == F_U32 ? UINT32_MAX : UINT64_MAX;
}

static void set_num(void *s, const field *f, uint64_t v) {
  char *p = (char *)s + f->at;
  switch (f->kind) {
  case F_U8: *(uint8_t *)p = (uint8_t)v; break;
  case F_U16: *(uint16_t *)p = (uint16_t)v; break;
  case F_U32: *(uint32_t *)p = (uint32_t)v; break;
  default: *(uint64_t *)p = v; break;
  }
}

/* ---- decoding --------------------------------------------------------------- */

static void push_bytes(lua_State *L, const void *p, size_t n) {
  lua_pushlstring(L, n ? (const char *)p : "", n);
}

static void push_fields(lua_State *L, const void *s, const field *f);

/* An array of a list's items, read from its section. */
static void push_list(lua_State *L, const odo_msg_list *l, const item_desc *d) {
  odo_rd r;
  any_item it;
  lua_createtable(L, (int)l->count, 0);
  odo_rd_init(&r, l->p, l->len);
  for (uint32_t i = 0; i < l->count; i++) {
    d->next(&r, &it);
    if (d->fields == NULL) {
      push_bytes(L, it.str.p, it.str.len);
    } else {
      lua_newtable(L);
      push_fields(L, &it, d->fields);
    }
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
}

/* Sets the fields of the struct s in the table on top. */
static void push_fields(lua_State *L, const void *s, const field *f) {
  for (; f->name != NULL; f++) {
    switch (f->kind) {
    case F_STR:
      push_bytes(L, get_ptr(s, f->at), *(const size_t *)((const char *)s + f->len_at));
      break;
    case F_HASH: push_bytes(L, get_ptr(s, f->at), ODO_HASH_LEN); break;
    case F_LIST:
      push_list(L, (const odo_msg_list *)((const char *)s + f->at), f->item);
      break;
    default: odo_pushu64(L, get_num(s, f)); break;
    }
    lua_setfield(L, -2, f->name);
  }
}

static int decode(lua_State *L, int type, const uint8_t *p, size_t n,
                  odo_err *e) {
  const msg_desc *d = &msgs[type - ODO_MSG_CATALOGUE];
  any_msg m;
  lua_newtable(L);
  lua_pushstring(L, kinds[type - ODO_MSG_CATALOGUE]);
  lua_setfield(L, -2, "kind");
  if (!d->decode(p, n, &m, e)) return 0;
  push_fields(L, &m, d->fields);
  return 1;
}

/***
 * Decodes a sync message's payload (as a session's "message" event gives
 * it) into a table with `kind` ("catalogue", "subscribe", "unsubscribe",
 * "snapshot", "events", "caught_up", "refused") and the message's fields
 * as docs/PROTOCOL.md names them: catalogue {flags, keys = {der...},
 * entries = {{id, first, last, snapshot, fresh, flags, hops, key}...}}; subscribe
 * {flags, entries = {{id, from}...}}; unsubscribe {ids}; snapshot
 * {stream, rev, hash, format, sig, total, offset, data}; events {stream,
 * first, events = {{ts, type, data}...}, head_rev, head_hash, sig};
 * caught_up {stream, rev}; refused {stream, code, reason}.
 * `sync_msg.encode` of the table gives the same bytes back.
 * @function sync_msg.decode
 * @tparam integer type 0x10 to 0x16
 * @tparam string payload
 * @treturn table the message
 * @treturn[2] nil
 * @treturn[2] string "EPROTO: a malformed ..." (what a receiving engine
 *   would report)
 * @treturn[2] string "EPROTO"
 */
static int l_decode(lua_State *L) {
  lua_Integer type = luaL_checkinteger(L, 1);
  size_t n;
  const uint8_t *p = (const uint8_t *)luaL_checklstring(L, 2, &n);
  odo_err e = {0};
  luaL_argcheck(L, odo_msg_name((int)type) != NULL, 1, "not a sync message type");
  if (!decode(L, (int)type, p, n, &e)) return odo_err_push(L, &e);
  return 1;
}

/* ---- encoding --------------------------------------------------------------- */

static const char *field_str(lua_State *L, int t, const char *k, size_t *n) {
  const char *s;
  lua_getfield(L, t, k);
  s = lua_tolstring(L, -1, n);
  if (s == NULL) luaL_error(L, "sync message field %s must be a string", k);
  lua_pop(L, 1); /* still referenced by the table */
  return s;
}

static uint64_t field_u64(lua_State *L, int t, const char *k, uint64_t max) {
  uint64_t v;
  lua_getfield(L, t, k);
  v = odo_checku64(L, -1, k);
  lua_pop(L, 1);
  if (v > max) { /* lua_pushfstring has no %llu */
    char limit[24];
    snprintf(limit, sizeof limit, "%llu", (unsigned long long)max);
    luaL_error(L, "sync message field %s is over %s", k, limit);
  }
  return v;
}

/* The array field k of the table at t, checked; its index on the stack. */
static int field_array(lua_State *L, int t, const char *k, uint32_t *count) {
  lua_getfield(L, t, k);
  if (!lua_istable(L, -1)) luaL_error(L, "sync message field %s must be an array", k);
  *count = (uint32_t)lua_rawlen(L, -1);
  return lua_gettop(L);
}

/* Fails b when a field did not fit its length; raises then. */
static void check_built(lua_State *L, const odo_buf *b, const char *what) {
  if (b->failed) luaL_error(L, "cannot encode the %s: a field is too long or memory ran out", what);
}

static void read_fields(lua_State *L, int t, void *s, const field *f,
                        odo_buf *sections);

/* A list section built in sec from the array field f, one item per
 * element. */
static void build_list(lua_State *L, int t, const field *f, odo_buf *sec,
                       odo_msg_list *l) {
  uint32_t count;
  int a = field_array(L, t, f->name, &count);
  for (uint32_t i = 1; i <= count; i++) {
    any_item it;
    memset(&it, 0, sizeof it);
    lua_rawgeti(L, a, (lua_Integer)i);
    if (f->item->fields == NULL) {
      it.str.p = lua_tolstring(L, -1, &it.str.len);
      if (it.str.p == NULL) luaL_error(L, "sync message field %s holds a non-string", f->name);
    } else {
      luaL_checktype(L, lua_gettop(L), LUA_TTABLE);
      read_fields(L, lua_gettop(L), &it, f->item->fields, NULL);
    }
    f->item->put(sec, &it);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  check_built(L, sec, f->name);
  l->p = sec->p;
  l->len = sec->len;
  l->count = count;
}

/* Fills the struct s from the fields of the table at t; a list is built
 * in the next of `sections` (a message has two lists at most). */
static void read_fields(lua_State *L, int t, void *s, const field *f,
                        odo_buf *sections) {
  for (; f->name != NULL; f++) {
    size_t n;
    switch (f->kind) {
    case F_STR:
      set_ptr(s, f->at, field_str(L, t, f->name, (size_t *)((char *)s + f->len_at)));
      break;
    case F_HASH:
      set_ptr(s, f->at, field_str(L, t, f->name, &n));
      if (n != ODO_HASH_LEN) luaL_error(L, "sync message field %s must be 32 bytes", f->name);
      break;
    case F_LIST:
      build_list(L, t, f, sections++, (odo_msg_list *)((char *)s + f->at));
      break;
    default: set_num(s, f, field_u64(L, t, f->name, num_max(f->kind))); break;
    }
  }
}

static int encode(lua_State *L, int type, odo_buf *b, odo_buf *sections) {
  const msg_desc *d = &msgs[type - ODO_MSG_CATALOGUE];
  any_msg m;
  read_fields(L, 1, &m, d->fields, sections);
  return d->encode(b, &m);
}

/* Three buffers owned by a userdata, so a raise while encoding leaks
 * nothing. */
static int bufs_gc(lua_State *L) {
  odo_buf *b = lua_touserdata(L, 1);
  for (int i = 0; i < 3; i++) odo_buf_free(&b[i]);
  return 0;
}

/***
 * Encodes a message table (as `sync_msg.decode` gives) into its type and
 * payload, ready for `session:send`. Raises on a missing or wrong field
 * or one too long for its length.
 * @function sync_msg.encode
 * @tparam table msg with `kind`
 * @treturn integer type
 * @treturn string payload
 */
static int l_encode(lua_State *L) {
  int type;
  odo_buf *b;
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_getfield(L, 1, "kind");
  type = ODO_MSG_CATALOGUE + luaL_checkoption(L, -1, NULL, kinds);
  lua_pop(L, 1);
  b = lua_newuserdatauv(L, 3 * sizeof *b, 0);
  for (int i = 0; i < 3; i++) odo_buf_init(&b[i]);
  lua_newtable(L);
  lua_pushcfunction(L, bufs_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  encode(L, type, &b[0], &b[1]);
  check_built(L, &b[0], odo_msg_name(type));
  lua_pushinteger(L, type);
  lua_pushlstring(L, b[0].len ? (const char *)b[0].p : "", b[0].len);
  return 2;
}

void odo_sync_msg_open(lua_State *L) {
  static const luaL_Reg fns[] = {{"decode", l_decode}, {"encode", l_encode}, {NULL, NULL}};
  lua_newtable(L);
  luaL_setfuncs(L, fns, 0);
  for (int t = ODO_MSG_CATALOGUE; t <= ODO_MSG_REFUSED; t++) {
    lua_pushinteger(L, t);
    lua_setfield(L, -2, odo_msg_name(t));
  }
  lua_setfield(L, -2, "sync_msg");
}
