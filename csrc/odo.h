/* odo.h - types, limits and helpers shared by every file of odo.core.
 *
 * Each responsibility lives in its own file and registers its functions
 * through an xxx_open(L) called from luaopen_odo_core (core.c). This header
 * and util.c are the bottom layer (docs/ARCHITECTURE.md): what more than
 * one file needs, depending on nothing of the core: the failure
 * convention (odo_err in C, odo_fail for Lua), byte order helpers, a
 * growable buffer with str8/str16 fields, a bounds-checked reader,
 * CRC-32C, FNV-1a, hex, and the limits.
 */
#ifndef ODO_H
#define ODO_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "compat.h"

/* Limits. Every length read from disk or from the wire is checked against
 * one of these before anything is allocated. */
#define ODO_MAX_NODE_ID 128         /* bytes of a node id */
#define ODO_MAX_STREAM_ID 255       /* bytes of a full stream id */
#define ODO_MAX_TYPE 255            /* bytes of an event type */
#define ODO_MAX_DATA (4u << 20)     /* bytes of one event's data */
#define ODO_MAX_BATCH_EVENTS 100000 /* events in one append call */
#define ODO_MAX_BATCH_BYTES (64u << 20) /* data bytes in one append call */
#define ODO_MAX_REV ((uint64_t)1 << 53) /* exact in a double, for Lua 5.1 */
#define ODO_HASH_LEN 32             /* SHA-256 */
#define ODO_MAX_SIG 1024            /* bytes of a signature (RSA-8192 fits) */

/* Runtime failure, luv's convention: pushes nil, "NAME: message", "NAME"
 * and returns 3, so C functions can `return odo_fail(L, "EX", ...)`. */
int odo_fail(lua_State *L, const char *name, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* A failure in C code that must not touch the Lua stack (it holds
 * resources to free first, or runs on a worker thread): a luv-style NAME
 * and a message a person can act on. Every C layer reports this way;
 * the Lua binding hands it on with odo_err_push. */
typedef struct odo_err {
  const char *name;
  char msg[512];
} odo_err;

/* Fills e; returns 0, so a failing function can `return odo_err_set(...)`. */
int odo_err_set(odo_err *e, const char *name, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
/* Pushes e as nil, "NAME: message", "NAME"; returns 3. */
int odo_err_push(lua_State *L, const odo_err *e);

/* Pushes an unsigned 64-bit count or revision as a Lua integer. */
void odo_pushu64(lua_State *L, uint64_t v);
/* Reads an optional non-negative integer argument or field (raises on a
 * wrong type or a negative value). */
uint64_t odo_checku64(lua_State *L, int idx, const char *what);
uint64_t odo_optu64(lua_State *L, int idx, uint64_t def, const char *what);
/* t[k] as a non-negative integer, or def when nil; raises otherwise. */
uint64_t odo_fieldu64(lua_State *L, int t, const char *k, uint64_t def);
/* t[k] as a boolean (nil -> def). */
int odo_fieldbool(lua_State *L, int t, const char *k, int def);

/* Milliseconds since the Unix epoch (wall clock) and a monotonic clock. */
uint64_t odo_now_ms(void);
uint64_t odo_mono_ns(void);

/* Lower-case hex of n bytes into out (2n+1 bytes, NUL-terminated). */
void odo_hex(const uint8_t *in, size_t n, char *out);
/* Reads 2n lower-case hex digits into n bytes; 0 on any other character. */
int odo_unhex(const char *hex, size_t n, uint8_t *out);

/* 64-bit FNV-1a of n bytes (hash tables; not for anything adversarial
 * to choose keys against where it matters). */
uint64_t odo_fnv1a(const void *p, size_t n);

/* CRC-32C (Castagnoli), hardware accelerated where the CPU has it. */
uint32_t odo_crc32c(uint32_t crc, const void *buf, size_t len);

/* Big- and little-endian fixed-width integers. */
static inline void odo_put_be64(uint8_t *p, uint64_t v) {
  for (int i = 7; i >= 0; i--) { p[i] = (uint8_t)v; v >>= 8; }
}
static inline uint64_t odo_get_be64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = (v << 8) | p[i];
  return v;
}
static inline void odo_put_be32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}
static inline uint32_t odo_get_be32(const uint8_t *p) {
  return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
         ((uint32_t)p[2] << 8) | p[3];
}
static inline void odo_put_be16(uint8_t *p, uint16_t v) {
  p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v;
}
static inline uint16_t odo_get_be16(const uint8_t *p) {
  return (uint16_t)(((unsigned)p[0] << 8) | p[1]);
}

/* A growable byte buffer. An add that cannot allocate returns 0 and sets
 * `failed`, which sticks until odo_buf_init (or odo_rec_begin), so a
 * record built by a run of adds is checked once, where it is used. */
typedef struct odo_buf {
  uint8_t *p;
  size_t len, cap;
  int failed;
} odo_buf;

void odo_buf_init(odo_buf *b);
void odo_buf_free(odo_buf *b);
/* Grows b to hold n more bytes (odo_buf_reserve's slow path). */
int odo_buf_grow(odo_buf *b, size_t n);
/* Ensures room for n more bytes; returns 0 on allocation failure. The
 * adds are inline: records and frames are built with several a byte
 * range, per event. */
static inline int odo_buf_reserve(odo_buf *b, size_t n) {
  return n <= b->cap - b->len ? 1 : odo_buf_grow(b, n);
}
static inline int odo_buf_add(odo_buf *b, const void *p, size_t n) {
  if (!odo_buf_reserve(b, n)) return 0;
  if (n) memcpy(b->p + b->len, p, n);
  b->len += n;
  return 1;
}
static inline int odo_buf_add_u8(odo_buf *b, uint8_t v) { return odo_buf_add(b, &v, 1); }
static inline int odo_buf_add_be16(odo_buf *b, uint16_t v) {
  uint8_t t[2];
  odo_put_be16(t, v);
  return odo_buf_add(b, t, 2);
}
static inline int odo_buf_add_be32(odo_buf *b, uint32_t v) {
  uint8_t t[4];
  odo_put_be32(t, v);
  return odo_buf_add(b, t, 4);
}
static inline int odo_buf_add_be64(odo_buf *b, uint64_t v) {
  uint8_t t[8];
  odo_put_be64(t, v);
  return odo_buf_add(b, t, 8);
}
/* Drops n bytes from the front. */
void odo_buf_consume(odo_buf *b, size_t n);
/* str8 = u8 len | bytes and str16 = u16be len | bytes, the wire's and the
 * records' strings; a string too long for its length field fails the
 * buffer like an allocation failure (nothing is added). */
int odo_buf_add_str8(odo_buf *b, const void *p, size_t n);
int odo_buf_add_str16(odo_buf *b, const void *p, size_t n);

/* A bounds-checked reader over a byte range: every get fails (returns 0)
 * instead of reading past the end, and the error sticks. */
typedef struct odo_rd {
  const uint8_t *p;
  size_t len, pos;
  int bad;
} odo_rd;

static inline void odo_rd_init(odo_rd *r, const void *p, size_t len) {
  r->p = (const uint8_t *)p; r->len = len; r->pos = 0; r->bad = 0;
}
static inline size_t odo_rd_left(const odo_rd *r) { return r->len - r->pos; }
/* Inline: every event received is decoded with a handful of these. */
static inline const uint8_t *odo_rd_bytes(odo_rd *r, size_t n) {
  const uint8_t *p;
  if (r->bad || n > r->len - r->pos) {
    r->bad = 1;
    return NULL;
  }
  p = r->p + r->pos;
  r->pos += n;
  return p;
}
static inline uint8_t odo_rd_u8(odo_rd *r) {
  const uint8_t *p = odo_rd_bytes(r, 1);
  return p ? p[0] : 0;
}
static inline uint16_t odo_rd_be16(odo_rd *r) {
  const uint8_t *p = odo_rd_bytes(r, 2);
  return p ? odo_get_be16(p) : 0;
}
static inline uint32_t odo_rd_be32(odo_rd *r) {
  const uint8_t *p = odo_rd_bytes(r, 4);
  return p ? odo_get_be32(p) : 0;
}
static inline uint64_t odo_rd_be64(odo_rd *r) {
  const uint8_t *p = odo_rd_bytes(r, 8);
  return p ? odo_get_be64(p) : 0;
}
/* Reads a str8 or str16 (see odo_buf_add_str8): the bytes, and their
 * length in *len; NULL when r failed. */
static inline const char *odo_rd_str8(odo_rd *r, size_t *len) {
  *len = odo_rd_u8(r);
  return (const char *)odo_rd_bytes(r, *len);
}
static inline const char *odo_rd_str16(odo_rd *r, size_t *len) {
  *len = odo_rd_be16(r);
  return (const char *)odo_rd_bytes(r, *len);
}

/* Registration of each part of odo.core into the module table on top. */
void odo_util_open(lua_State *L);
void odo_store_open(lua_State *L);
void odo_snapshot_open(lua_State *L);
void odo_commit_queue_open(lua_State *L);
void odo_certgen_open(lua_State *L);
void odo_tls_open(lua_State *L);
void odo_mdns_open(lua_State *L);
void odo_wire_open(lua_State *L);
void odo_session_open(lua_State *L);
void odo_sign_open(lua_State *L);
void odo_sync_open(lua_State *L);
void odo_sync_msg_open(lua_State *L);
void odo_tls_pipe_open(lua_State *L);
void odo_dns_open(lua_State *L);
void odo_thread_prio_open(lua_State *L);

/* Creates a metatable `name` with methods (in __index), __gc, __close and
 * __tostring from the given lists; leaves nothing on the stack. */
void odo_newclass(lua_State *L, const char *name, const luaL_Reg *methods,
                  lua_CFunction gc, lua_CFunction tostring);

#endif
