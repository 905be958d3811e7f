/* wire.c - frame and session message encoding and decoding, and the Lua
 * functions that expose them for test vectors and tools. */

/***
 * @submodule odo.core
 */
#include <stdio.h>

#include "wire.h"

int odo_frame_next(const uint8_t *p, size_t n, size_t max_frame,
                   uint8_t *type, const uint8_t **payload, size_t *plen,
                   size_t *consumed, odo_err *e) {
  uint32_t len;
  if (n < 4) return 0;
  len = odo_get_be32(p);
  if (len == 0) return odo_err_set(e, "EPROTO", "a frame of length 0"), -1;
  if (len > max_frame)
    return odo_err_set(e, "EPROTO", "a frame of %u bytes, over the limit of %zu",
                       (unsigned)len, max_frame), -1;
  if (n - 4 < len) return 0;
  *type = p[4];
  *payload = p + ODO_FRAME_HEADER;
  *plen = len - 1;
  *consumed = 4 + (size_t)len;
  return 1;
}

size_t odo_frame_begin(odo_buf *b, uint8_t type) {
  size_t start = b->len;
  odo_buf_add_be32(b, 0);
  odo_buf_add_u8(b, type);
  return start;
}

void odo_frame_end(odo_buf *b, size_t start) {
  if (b->failed) return; /* the buffer could not grow: nothing to patch */
  odo_put_be32(b->p + start, (uint32_t)(b->len - start - 4));
}

int odo_frame_put(odo_buf *b, uint8_t type, const void *payload,
                  size_t plen) {
  if (plen > UINT32_MAX - 1) return 0;
  return odo_buf_add_be32(b, (uint32_t)(plen + 1)) &&
         odo_buf_add_u8(b, type) && odo_buf_add(b, payload, plen);
}

int odo_hello_put(odo_buf *b, const odo_hello *h) {
  size_t start = odo_frame_begin(b, ODO_MSG_HELLO);
  int ok = odo_buf_add_be16(b, h->version) && odo_buf_add(b, h->id, 32) &&
           odo_buf_add_be16(b, h->port) && odo_buf_add_be64(b, h->features) &&
           odo_buf_add_be64(b, h->instance);
  if (ok) odo_frame_end(b, start);
  return ok;
}

int odo_hello_decode(const uint8_t *p, size_t n, odo_hello *h) {
  odo_rd r;
  const uint8_t *id;
  if (n != ODO_HELLO_LEN) return 0;
  odo_rd_init(&r, p, n);
  h->version = odo_rd_be16(&r);
  id = odo_rd_bytes(&r, 32);
  h->port = odo_rd_be16(&r);
  h->features = odo_rd_be64(&r);
  h->instance = odo_rd_be64(&r);
  if (r.bad || id == NULL) return 0;
  memcpy(h->id, id, 32);
  return 1;
}

int odo_u64_decode(const uint8_t *p, size_t n, uint64_t *v) {
  if (n != 8) return 0;
  *v = odo_get_be64(p);
  return 1;
}

int odo_bye_put(odo_buf *b, uint16_t code, const char *reason, size_t len) {
  size_t start;
  if (len > ODO_MAX_REASON) len = ODO_MAX_REASON;
  start = odo_frame_begin(b, ODO_MSG_BYE);
  if (!odo_buf_add_be16(b, code) || !odo_buf_add(b, reason, len)) return 0;
  odo_frame_end(b, start);
  return 1;
}

int odo_bye_decode(const uint8_t *p, size_t n, uint16_t *code,
                   const char **reason, size_t *rlen) {
  if (n < 2 || n - 2 > ODO_MAX_REASON) return 0;
  *code = odo_get_be16(p);
  *reason = (const char *)p + 2;
  *rlen = n - 2;
  return 1;
}

const char *odo_bye_name(uint16_t code) {
  static const char *const names[] = {
      "normal",  "protocol", "version",  "identity",
      "duplicate", "self",   "timeout",  "shutdown",
      "verification failed", "full", "shared key"};
  return code < sizeof names / sizeof names[0] ? names[code] : "unknown";
}

/* ---- Lua ------------------------------------------------------------------ */

static int hex_to_id(const char *hex, size_t len, uint8_t out[32]) {
  return len == 64 && odo_unhex(hex, 32, out);
}

static void push_buf(lua_State *L, odo_buf *b) {
  lua_pushlstring(L, b->p ? (const char *)b->p : "", b->len);
  odo_buf_free(b);
}

/***
 * Encodes a session message as a whole frame (test vectors, tools).
 * @function wire_encode
 * @tparam string kind "hello", "ping", "pong", "bye" or "frame"
 * @tparam table fields hello: `version`, `id` (64 hex), `port`, `features`,
 *   `instance`; ping/pong: `nonce`; bye: `code`, `reason`; frame: `type`,
 *   `payload`
 * @treturn string the frame's bytes
 */
static int l_wire_encode(lua_State *L) {
  const char *kind = luaL_checkstring(L, 1);
  odo_buf b;
  luaL_checktype(L, 2, LUA_TTABLE);
  odo_buf_init(&b);
  if (strcmp(kind, "hello") == 0) {
    odo_hello h;
    size_t len;
    const char *id;
    lua_getfield(L, 2, "id");
    id = luaL_checklstring(L, -1, &len);
    if (!hex_to_id(id, len, h.id)) return luaL_error(L, "hello.id must be 64 hex characters");
    h.version = (uint16_t)odo_fieldu64(L, 2, "version", ODO_PROTOCOL_VERSION);
    h.port = (uint16_t)odo_fieldu64(L, 2, "port", 0);
    h.features = odo_fieldu64(L, 2, "features", 0);
    h.instance = odo_fieldu64(L, 2, "instance", 0);
    odo_hello_put(&b, &h);
  } else if (strcmp(kind, "ping") == 0 || strcmp(kind, "pong") == 0) {
    uint8_t n[8];
    odo_put_be64(n, odo_fieldu64(L, 2, "nonce", 0));
    odo_frame_put(&b, kind[1] == 'i' ? ODO_MSG_PING : ODO_MSG_PONG, n, 8);
  } else if (strcmp(kind, "bye") == 0) {
    size_t len;
    const char *reason;
    lua_getfield(L, 2, "reason");
    reason = luaL_optlstring(L, -1, "", &len);
    odo_bye_put(&b, (uint16_t)odo_fieldu64(L, 2, "code", 0), reason, len);
  } else if (strcmp(kind, "frame") == 0) {
    size_t len;
    const char *payload;
    lua_getfield(L, 2, "payload");
    payload = luaL_optlstring(L, -1, "", &len);
    odo_frame_put(&b, (uint8_t)odo_fieldu64(L, 2, "type", 0), payload, len);
  } else {
    odo_buf_free(&b);
    return luaL_argerror(L, 1, "unknown message kind");
  }
  push_buf(L, &b);
  return 1;
}

/***
 * Decodes the frame at the front of `bytes`.
 * @function wire_decode
 * @tparam string bytes
 * @tparam[opt] integer max_frame default 16 MiB
 * @treturn table `{type=, size=, ...fields}`, or nil when more bytes are
 *   needed
 * @treturn[2] nil
 * @treturn[2] string "EPROTO: ..."
 */
static int l_wire_decode(lua_State *L) {
  size_t n, plen, used;
  const uint8_t *p = (const uint8_t *)luaL_checklstring(L, 1, &n), *payload;
  size_t max = (size_t)odo_optu64(L, 2, ODO_DEFAULT_MAX_FRAME, "max_frame");
  uint8_t type;
  odo_err e = {0};
  int rc = odo_frame_next(p, n, max, &type, &payload, &plen, &used, &e);
  if (rc < 0) return odo_err_push(L, &e);
  if (rc == 0) return 0;
  lua_createtable(L, 0, 6);
  lua_pushinteger(L, type);
  lua_setfield(L, -2, "type");
  lua_pushinteger(L, (lua_Integer)used);
  lua_setfield(L, -2, "size");
  if (type == ODO_MSG_HELLO) {
    odo_hello h;
    char hex[65];
    if (!odo_hello_decode(payload, plen, &h))
      return odo_fail(L, "EPROTO", "a HELLO of %zu bytes", plen);
    odo_hex(h.id, 32, hex);
    lua_pushstring(L, "hello");
    lua_setfield(L, -2, "kind");
    lua_pushinteger(L, h.version);
    lua_setfield(L, -2, "version");
    lua_pushstring(L, hex);
    lua_setfield(L, -2, "id");
    lua_pushinteger(L, h.port);
    lua_setfield(L, -2, "port");
    odo_pushu64(L, h.features);
    lua_setfield(L, -2, "features");
    odo_pushu64(L, h.instance);
    lua_setfield(L, -2, "instance");
  } else if (type == ODO_MSG_PING || type == ODO_MSG_PONG) {
    uint64_t v;
    if (!odo_u64_decode(payload, plen, &v))
      return odo_fail(L, "EPROTO", "a PING/PONG of %zu bytes", plen);
    lua_pushstring(L, type == ODO_MSG_PING ? "ping" : "pong");
    lua_setfield(L, -2, "kind");
    odo_pushu64(L, v);
    lua_setfield(L, -2, "nonce");
  } else if (type == ODO_MSG_BYE) {
    uint16_t code;
    const char *reason;
    size_t rlen;
    if (!odo_bye_decode(payload, plen, &code, &reason, &rlen))
      return odo_fail(L, "EPROTO", "a BYE of %zu bytes", plen);
    lua_pushstring(L, "bye");
    lua_setfield(L, -2, "kind");
    lua_pushinteger(L, code);
    lua_setfield(L, -2, "code");
    lua_pushlstring(L, reason, rlen);
    lua_setfield(L, -2, "reason");
  } else {
    lua_pushlstring(L, (const char *)payload, plen);
    lua_setfield(L, -2, "payload");
  }
  return 1;
}

void odo_wire_open(lua_State *L) {
  static const luaL_Reg fns[] = {{"wire_encode", l_wire_encode},
                                 {"wire_decode", l_wire_decode},
                                 {NULL, NULL}};
  luaL_setfuncs(L, fns, 0);
  lua_pushinteger(L, ODO_PROTOCOL_VERSION);
  lua_setfield(L, -2, "protocol_version");
}
