/* sync_msg_lua.c - the sync message codec for Lua (odo.core.sync_msg):
 * decode a message's payload into a table, encode a table into a payload,
 * with exactly the C codec (sync_msg.c). Tools and specs use it to read
 * and write the wire, e.g. a relay that alters messages between two
 * engines. */

/***
 * @submodule odo.core
 */
#include "sync_msg.h"

static const char *const kinds[] = {"catalogue", "subscribe", "unsubscribe",
                                    "snapshot", "events", "caught_up",
                                    "refused", NULL};

static void set_str(lua_State *L, const char *k, const void *p, size_t n) {
  lua_pushlstring(L, n ? (const char *)p : "", n);
  lua_setfield(L, -2, k);
}

static void set_u64(lua_State *L, const char *k, uint64_t v) {
  odo_pushu64(L, v);
  lua_setfield(L, -2, k);
}

/* ---- decoding --------------------------------------------------------------- */

static int decode(lua_State *L, int type, const uint8_t *p, size_t n,
                  odo_err *e) {
  odo_rd r;
  lua_newtable(L);
  lua_pushstring(L, kinds[type - ODO_MSG_CATALOGUE]);
  lua_setfield(L, -2, "kind");
  switch (type) {
  case ODO_MSG_CATALOGUE: {
    odo_msg_catalogue m;
    odo_msg_cat_entry c;
    if (!odo_msg_catalogue_decode(p, n, &m, e)) return 0;
    set_u64(L, "flags", m.flags);
    lua_createtable(L, (int)m.keys.count, 0);
    odo_rd_init(&r, m.keys.p, m.keys.len);
    for (uint32_t i = 0; i < m.keys.count; i++) {
      const uint8_t *der;
      size_t len;
      odo_msg_key_next(&r, &der, &len);
      lua_pushlstring(L, len ? (const char *)der : "", len);
      lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "keys");
    lua_createtable(L, (int)m.entries.count, 0);
    odo_rd_init(&r, m.entries.p, m.entries.len);
    for (uint32_t i = 0; i < m.entries.count; i++) {
      odo_msg_cat_entry_next(&r, &c);
      lua_createtable(L, 0, 6);
      set_str(L, "id", c.id, c.id_len);
      set_u64(L, "first", c.first);
      set_u64(L, "last", c.last);
      set_u64(L, "snapshot", c.snap);
      set_u64(L, "fresh", c.fresh);
      set_u64(L, "flags", c.flags);
      set_u64(L, "hops", c.hops);
      set_u64(L, "key", c.key);
      lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "entries");
    return 1;
  }
  case ODO_MSG_SUBSCRIBE: {
    odo_msg_subscribe m;
    odo_msg_sub_entry s;
    if (!odo_msg_subscribe_decode(p, n, &m, e)) return 0;
    set_u64(L, "flags", m.flags);
    lua_createtable(L, (int)m.entries.count, 0);
    odo_rd_init(&r, m.entries.p, m.entries.len);
    for (uint32_t i = 0; i < m.entries.count; i++) {
      odo_msg_sub_entry_next(&r, &s);
      lua_createtable(L, 0, 2);
      set_str(L, "id", s.id, s.id_len);
      set_u64(L, "from", s.from);
      lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "entries");
    return 1;
  }
  case ODO_MSG_UNSUBSCRIBE: {
    odo_msg_unsubscribe m;
    if (!odo_msg_unsubscribe_decode(p, n, &m, e)) return 0;
    lua_createtable(L, (int)m.ids.count, 0);
    odo_rd_init(&r, m.ids.p, m.ids.len);
    for (uint32_t i = 0; i < m.ids.count; i++) {
      const char *id;
      size_t len;
      odo_msg_id_next(&r, &id, &len);
      lua_pushlstring(L, id, len);
      lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "ids");
    return 1;
  }
  case ODO_MSG_SNAPSHOT: {
    odo_msg_snapshot m;
    if (!odo_msg_snapshot_decode(p, n, &m, e)) return 0;
    set_str(L, "stream", m.id, m.id_len);
    set_u64(L, "rev", m.rev);
    set_str(L, "hash", m.hash, ODO_HASH_LEN);
    set_str(L, "format", m.format, m.format_len);
    set_str(L, "sig", m.sig, m.sig_len);
    set_u64(L, "total", m.total);
    set_u64(L, "offset", m.offset);
    set_str(L, "data", m.chunk, m.chunk_len);
    return 1;
  }
  case ODO_MSG_EVENTS: {
    odo_msg_events m;
    odo_event ev;
    if (!odo_msg_events_decode(p, n, &m, e)) return 0;
    set_str(L, "stream", m.id, m.id_len);
    set_u64(L, "first", m.first);
    lua_createtable(L, (int)m.events.count, 0);
    odo_rd_init(&r, m.events.p, m.events.len);
    for (uint32_t i = 0; i < m.events.count; i++) {
      odo_msg_event_next(&r, &ev);
      lua_createtable(L, 0, 3);
      set_u64(L, "ts", ev.ts);
      set_str(L, "type", ev.type, ev.type_len);
      set_str(L, "data", ev.data, ev.data_len);
      lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "events");
    set_u64(L, "head_rev", m.head_rev);
    set_str(L, "head_hash", m.head_hash, ODO_HASH_LEN);
    set_str(L, "sig", m.sig, m.sig_len);
    return 1;
  }
  case ODO_MSG_CAUGHT_UP: {
    odo_msg_caught_up m;
    if (!odo_msg_caught_up_decode(p, n, &m, e)) return 0;
    set_str(L, "stream", m.id, m.id_len);
    set_u64(L, "rev", m.rev);
    return 1;
  }
  default: {
    odo_msg_refused m;
    if (!odo_msg_refused_decode(p, n, &m, e)) return 0;
    set_str(L, "stream", m.id, m.id_len);
    set_u64(L, "code", m.code);
    set_str(L, "reason", m.reason, m.reason_len);
    return 1;
  }
  }
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
  if (v > max) luaL_error(L, "sync message field %s is over %llu", k, (unsigned long long)max);
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

/* A list section built from the array field k, one item per element. */
static void build_list(lua_State *L, int t, const char *k, int type,
                       odo_buf *sec, odo_msg_list *l) {
  uint32_t count;
  int a = field_array(L, t, k, &count);
  for (uint32_t i = 1; i <= count; i++) {
    lua_rawgeti(L, a, (lua_Integer)i);
    if (type == ODO_MSG_UNSUBSCRIBE || (type == ODO_MSG_CATALOGUE && k[0] == 'k')) {
      size_t n;
      const char *s = lua_tolstring(L, -1, &n);
      if (s == NULL) luaL_error(L, "sync message field %s holds a non-string", k);
      if (type == ODO_MSG_UNSUBSCRIBE) odo_msg_id_put(sec, s, n);
      else odo_msg_key_put(sec, (const uint8_t *)s, n);
    } else {
      int it = lua_gettop(L);
      luaL_checktype(L, it, LUA_TTABLE);
      if (type == ODO_MSG_CATALOGUE) {
        odo_msg_cat_entry c;
        c.id = field_str(L, it, "id", &c.id_len);
        c.first = field_u64(L, it, "first", UINT64_MAX);
        c.last = field_u64(L, it, "last", UINT64_MAX);
        c.snap = field_u64(L, it, "snapshot", UINT64_MAX);
        c.fresh = field_u64(L, it, "fresh", UINT64_MAX);
        c.flags = (uint8_t)field_u64(L, it, "flags", 255);
        c.hops = (uint8_t)field_u64(L, it, "hops", 255);
        c.key = (uint16_t)field_u64(L, it, "key", 65535);
        odo_msg_cat_entry_put(sec, &c);
      } else if (type == ODO_MSG_SUBSCRIBE) {
        odo_msg_sub_entry s;
        s.id = field_str(L, it, "id", &s.id_len);
        s.from = field_u64(L, it, "from", UINT64_MAX);
        odo_msg_sub_entry_put(sec, &s);
      } else {
        odo_event ev;
        ev.rev = 0;
        ev.ts = field_u64(L, it, "ts", UINT64_MAX);
        ev.type = field_str(L, it, "type", &ev.type_len);
        ev.data = field_str(L, it, "data", &ev.data_len);
        odo_event_encode(sec, &ev, 0);
      }
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  check_built(L, sec, k);
  l->p = sec->p;
  l->len = sec->len;
  l->count = count;
}

static int encode(lua_State *L, int type, odo_buf *b, odo_buf *s1, odo_buf *s2) {
  size_t n;
  switch (type) {
  case ODO_MSG_CATALOGUE: {
    odo_msg_catalogue m;
    m.flags = (uint8_t)field_u64(L, 1, "flags", 255);
    build_list(L, 1, "keys", type, s1, &m.keys);
    build_list(L, 1, "entries", type, s2, &m.entries);
    return odo_msg_catalogue_encode(b, &m);
  }
  case ODO_MSG_SUBSCRIBE: {
    odo_msg_subscribe m;
    m.flags = (uint8_t)field_u64(L, 1, "flags", 255);
    build_list(L, 1, "entries", type, s1, &m.entries);
    return odo_msg_subscribe_encode(b, &m);
  }
  case ODO_MSG_UNSUBSCRIBE: {
    odo_msg_unsubscribe m;
    build_list(L, 1, "ids", type, s1, &m.ids);
    return odo_msg_unsubscribe_encode(b, &m);
  }
  case ODO_MSG_SNAPSHOT: {
    odo_msg_snapshot m;
    m.id = field_str(L, 1, "stream", &m.id_len);
    m.rev = field_u64(L, 1, "rev", UINT64_MAX);
    m.hash = (const uint8_t *)field_str(L, 1, "hash", &n);
    if (n != ODO_HASH_LEN) luaL_error(L, "sync message field hash must be 32 bytes");
    m.format = field_str(L, 1, "format", &m.format_len);
    m.sig = field_str(L, 1, "sig", &m.sig_len);
    m.total = (uint32_t)field_u64(L, 1, "total", UINT32_MAX);
    m.offset = (uint32_t)field_u64(L, 1, "offset", UINT32_MAX);
    m.chunk = (const uint8_t *)field_str(L, 1, "data", &m.chunk_len);
    return odo_msg_snapshot_encode(b, &m);
  }
  case ODO_MSG_EVENTS: {
    odo_msg_events m;
    m.id = field_str(L, 1, "stream", &m.id_len);
    m.first = field_u64(L, 1, "first", UINT64_MAX);
    build_list(L, 1, "events", type, s1, &m.events);
    m.head_rev = field_u64(L, 1, "head_rev", UINT64_MAX);
    m.head_hash = (const uint8_t *)field_str(L, 1, "head_hash", &n);
    if (n != ODO_HASH_LEN) luaL_error(L, "sync message field head_hash must be 32 bytes");
    m.sig = (const uint8_t *)field_str(L, 1, "sig", &m.sig_len);
    return odo_msg_events_encode(b, &m);
  }
  case ODO_MSG_CAUGHT_UP: {
    odo_msg_caught_up m;
    m.id = field_str(L, 1, "stream", &m.id_len);
    m.rev = field_u64(L, 1, "rev", UINT64_MAX);
    return odo_msg_caught_up_encode(b, &m);
  }
  default: {
    odo_msg_refused m;
    m.id = field_str(L, 1, "stream", &m.id_len);
    m.code = (uint16_t)field_u64(L, 1, "code", 65535);
    m.reason = field_str(L, 1, "reason", &m.reason_len);
    return odo_msg_refused_encode(b, &m);
  }
  }
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
  encode(L, type, &b[0], &b[1], &b[2]);
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
