/* util.c - the bottom layer: the small helpers every part of odo.core
 * shares (odo.h): the failure convention, integer argument checks,
 * clocks, hex, CRC-32C, FNV-1a, the growable buffer and the
 * bounds-checked reader, class registration, and two process-wide Lua
 * functions (mkdirs, tune_allocator). It calls no other file of the core. */

/***
 * @submodule odo.core
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#if defined(__GLIBC__) || defined(__linux__)
#include <malloc.h>
#endif
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>

#include "odo.h"

int odo_fail(lua_State *L, const char *name, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  lua_pushnil(L);
  lua_pushfstring(L, "%s: %s", name, msg);
  lua_pushstring(L, name);
  return 3;
}

int odo_err_set(odo_err *e, const char *name, const char *fmt, ...) {
  va_list ap;
  e->name = name;
  va_start(ap, fmt);
  vsnprintf(e->msg, sizeof e->msg, fmt, ap);
  va_end(ap);
  return 0;
}

int odo_err_push(lua_State *L, const odo_err *e) {
  return odo_fail(L, e->name, "%s", e->msg);
}

void odo_pushu64(lua_State *L, uint64_t v) {
#if LUA_VERSION_NUM >= 503
  lua_pushinteger(L, (lua_Integer)v);
#else
  lua_pushnumber(L, (lua_Number)v);
#endif
}

uint64_t odo_checku64(lua_State *L, int idx, const char *what) {
  lua_Number n;
#if LUA_VERSION_NUM >= 503
  if (lua_isinteger(L, idx)) {
    lua_Integer i = lua_tointeger(L, idx);
    if (i < 0) luaL_error(L, "%s must not be negative", what);
    return (uint64_t)i;
  }
#endif
  if (lua_type(L, idx) != LUA_TNUMBER)
    luaL_error(L, "%s must be an integer, got %s", what, luaL_typename(L, idx));
  n = lua_tonumber(L, idx);
  /* 2^64 and past (or NaN) cannot be converted: test before the cast */
  if (!(n >= 0 && n < 18446744073709551616.0) ||
      n != (lua_Number)(uint64_t)n)
    luaL_error(L, "%s must be a non-negative integer below 2^64", what);
  return (uint64_t)n;
}

uint64_t odo_optu64(lua_State *L, int idx, uint64_t def, const char *what) {
  return lua_isnoneornil(L, idx) ? def : odo_checku64(L, idx, what);
}

uint64_t odo_fieldu64(lua_State *L, int t, const char *k, uint64_t def) {
  uint64_t v;
  lua_getfield(L, t, k);
  v = odo_optu64(L, -1, def, k);
  lua_pop(L, 1);
  return v;
}

int odo_fieldbool(lua_State *L, int t, const char *k, int def) {
  int v;
  lua_getfield(L, t, k);
  if (lua_isnil(L, -1)) v = def;
  else if (lua_isboolean(L, -1)) v = lua_toboolean(L, -1);
  else return luaL_error(L, "option %s must be a boolean, got %s", k,
                         luaL_typename(L, -1));
  lua_pop(L, 1);
  return v;
}

uint64_t odo_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t odo_mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void odo_hex(const uint8_t *in, size_t n, char *out) {
  static const char digits[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = digits[in[i] >> 4];
    out[2 * i + 1] = digits[in[i] & 15];
  }
  out[2 * n] = '\0';
}

int odo_unhex(const char *hex, size_t n, uint8_t *out) {
  for (size_t i = 0; i < n; i++) {
    unsigned v = 0;
    for (int k = 0; k < 2; k++) {
      char c = hex[2 * i + (size_t)k];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
      else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
      else return 0;
    }
    out[i] = (uint8_t)v;
  }
  return 1;
}

uint64_t odo_fnv1a(const void *p, size_t n) {
  const uint8_t *b = (const uint8_t *)p;
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++) {
    h ^= b[i];
    h *= 1099511628211ull;
  }
  return h;
}

/* CRC-32C. The table is computed into a constant at compile time would
 * need 1 KiB of literals; instead the software path folds bit by bit over
 * a nibble table, and x86-64 CPUs with SSE 4.2 use the crc32 instruction. */
static const uint32_t crc_nibble[16] = {
    0x00000000, 0x105ec76f, 0x20bd8ede, 0x30e349b1, 0x417b1dbc, 0x5125dad3,
    0x61c69362, 0x7198540d, 0x82f63b78, 0x92a8fc17, 0xa24bb5a6, 0xb21572c9,
    0xc38d26c4, 0xd3d3e1ab, 0xe330a81a, 0xf36e6f75};

static uint32_t crc32c_soft(uint32_t crc, const uint8_t *p, size_t len) {
  while (len--) {
    crc ^= *p++;
    crc = (crc >> 4) ^ crc_nibble[crc & 15];
    crc = (crc >> 4) ^ crc_nibble[crc & 15];
  }
  return crc;
}

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("sse4.2"))) static uint32_t
crc32c_hw(uint32_t crc, const uint8_t *p, size_t len) {
  uint64_t c = crc;
  while (len >= 8) {
    uint64_t w;
    memcpy(&w, p, 8);
    c = __builtin_ia32_crc32di(c, w);
    p += 8;
    len -= 8;
  }
  crc = (uint32_t)c;
  while (len--) crc = __builtin_ia32_crc32qi(crc, *p++);
  return crc;
}
#endif

uint32_t odo_crc32c(uint32_t crc, const void *buf, size_t len) {
  crc = ~crc;
#if defined(__x86_64__) && defined(__GNUC__)
  if (__builtin_cpu_supports("sse4.2"))
    return ~crc32c_hw(crc, (const uint8_t *)buf, len);
#endif
  return ~crc32c_soft(crc, (const uint8_t *)buf, len);
}

void odo_buf_init(odo_buf *b) {
  b->p = NULL;
  b->len = b->cap = 0;
  b->failed = 0;
}

void odo_buf_free(odo_buf *b) {
  free(b->p);
  odo_buf_init(b);
}

int odo_buf_grow(odo_buf *b, size_t n) {
  size_t need, cap;
  uint8_t *p;
  if (n > SIZE_MAX - b->len) return (b->failed = 1), 0;
  need = b->len + n;
  if (need <= b->cap) return 1;
  cap = b->cap ? b->cap : 256;
  while (cap < need) cap = cap > SIZE_MAX / 2 ? need : cap * 2;
  p = realloc(b->p, cap);
  if (p == NULL) return (b->failed = 1), 0;
  b->p = p;
  b->cap = cap;
  return 1;
}

int odo_buf_add_str8(odo_buf *b, const void *p, size_t n) {
  if (n > 255) return (b->failed = 1), 0;
  return odo_buf_add_u8(b, (uint8_t)n) && odo_buf_add(b, p, n);
}

int odo_buf_add_str16(odo_buf *b, const void *p, size_t n) {
  if (n > 65535) return (b->failed = 1), 0;
  return odo_buf_add_be16(b, (uint16_t)n) && odo_buf_add(b, p, n);
}

void odo_buf_consume(odo_buf *b, size_t n) {
  if (n >= b->len) {
    b->len = 0;
    return;
  }
  memmove(b->p, b->p + n, b->len - n);
  b->len -= n;
}

void odo_newclass(lua_State *L, const char *name, const luaL_Reg *methods,
                  lua_CFunction gc, lua_CFunction tostring) {
  luaL_newmetatable(L, name);
  lua_newtable(L);
  luaL_setfuncs(L, methods, 0);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, gc);
  lua_setfield(L, -2, "__gc");
#if LUA_VERSION_NUM >= 504
  lua_pushcfunction(L, gc);
  lua_setfield(L, -2, "__close");
#endif
  lua_pushcfunction(L, tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pushstring(L, name);
  lua_setfield(L, -2, "__name");
  lua_pop(L, 1);
}

/***
 * Creates a directory and its missing parents (like mkdir -p).
 * @function mkdirs
 * @tparam string path
 * @tparam[opt] integer mode default 0755 (0700 for private folders)
 * @return true, or nil, message, name
 */
static int l_mkdirs(lua_State *L) {
  size_t len;
  const char *path = luaL_checklstring(L, 1, &len);
  mode_t mode = (mode_t)luaL_optinteger(L, 2, 0755);
  char buf[4096];
  struct stat st;
  if (len == 0 || len >= sizeof buf) return luaL_argerror(L, 1, "bad path");
  memcpy(buf, path, len + 1);
  for (char *p = buf + 1;; p++) {
    if (*p == '/' || *p == '\0') {
      char c = *p;
      *p = '\0';
      if (mkdir(buf, mode) != 0 && errno != EEXIST)
        return odo_fail(L, errno == EACCES ? "EACCES" : "EIO",
                        "cannot create %s: %s", buf, strerror(errno));
      *p = c;
      if (c == '\0') break;
    }
  }
  if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
    return odo_fail(L, "ENOTDIR", "%s is not a directory", path);
  lua_pushboolean(L, 1);
  return 1;
}

/***
 * Keeps glibc's allocator from giving freed memory back to the system
 * after every large free: a node streaming 64 KiB frames otherwise spends
 * most of its time shrinking and regrowing the heap (measured by
 * bench/transport.lua: a third of the throughput). Process-wide: it
 * changes malloc for every C library in the process, not just the core,
 * so only a node asked to (`tune_allocator`, set by `odo run`) calls it.
 * @function tune_allocator
 */
static int l_tune_allocator(lua_State *L) {
#if defined(__GLIBC__)
  mallopt(M_TRIM_THRESHOLD, 64 << 20);
  mallopt(M_TOP_PAD, 4 << 20);
  mallopt(M_MMAP_THRESHOLD, 4 << 20);
  lua_pushboolean(L, 1);
#else
  lua_pushboolean(L, 0);
#endif
  return 1;
}

void odo_util_open(lua_State *L) {
  lua_pushcfunction(L, l_mkdirs);
  lua_setfield(L, -2, "mkdirs");
  lua_pushcfunction(L, l_tune_allocator);
  lua_setfield(L, -2, "tune_allocator");
}
