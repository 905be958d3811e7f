/* compat.h - the one place that papers over Lua API differences.
 *
 * The core is written against Lua 5.4 and builds on 5.1, LuaJIT 2.1, 5.2
 * and 5.3 through the macros below, so an OpenResty or LÖVE build can follow
 * without a rewrite. Nothing else in csrc/ tests LUA_VERSION_NUM.
 */
#ifndef ODO_COMPAT_H
#define ODO_COMPAT_H

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

#if LUA_VERSION_NUM < 502
/* Lua 5.1 and LuaJIT */
#define lua_rawlen(L, i) lua_objlen((L), (i))
#define lua_setuservalue(L, i) lua_setfenv((L), (i))
#define lua_getuservalue(L, i) lua_getfenv((L), (i))
/* LuaJIT 2.1 reports 5.1 but its lauxlib.h already has 5.2's
 * luaL_setfuncs, luaL_testudata, luaL_setmetatable and luaL_newlib
 * (functions, and macros for the last): it is told apart by the macro
 * luaL_newlibtable, which it defines with them and PUC 5.1 does not. */
#ifndef luaL_newlibtable
#define luaL_newlib(L, l) (lua_newtable(L), luaL_register((L), NULL, (l)))
/* Every caller passes nup = 0 (no shared upvalues). */
#define luaL_setfuncs(L, l, nup) luaL_register((L), NULL, (l))
static inline void *luaL_testudata(lua_State *L, int ud, const char *tname) {
  void *p = lua_touserdata(L, ud);
  if (p == NULL || !lua_getmetatable(L, ud)) return NULL;
  luaL_getmetatable(L, tname);
  int same = lua_rawequal(L, -1, -2);
  lua_pop(L, 2);
  return same ? p : NULL;
}
#define luaL_setmetatable(L, tname) \
  (luaL_getmetatable((L), (tname)), lua_setmetatable((L), -2))
#endif
/* A buffer of a known size: a userdata on the stack, then a string. */
static inline char *luaL_buffinitsize(lua_State *L, luaL_Buffer *b, size_t sz) {
  b->L = L;
  return (char *)lua_newuserdata(L, sz ? sz : 1);
}
static inline void luaL_pushresultsize(luaL_Buffer *b, size_t sz) {
  lua_pushlstring(b->L, (const char *)lua_touserdata(b->L, -1), sz);
  lua_remove(b->L, -2);
}
#endif

#if LUA_VERSION_NUM < 503
/* 5.1 and 5.2 have no integer subtype: revisions travel as doubles, exact
 * up to 2^53, which the store enforces as its revision limit. */
#define lua_isinteger(L, i) 0
static inline void lua_seti(lua_State *L, int t, lua_Integer n) {
  t = (t < 0 && t > LUA_REGISTRYINDEX) ? lua_gettop(L) + t + 1 : t;
  lua_pushinteger(L, n);
  lua_insert(L, -2);
  lua_settable(L, t);
}
static inline int lua_geti(lua_State *L, int t, lua_Integer n) {
  t = (t < 0 && t > LUA_REGISTRYINDEX) ? lua_gettop(L) + t + 1 : t;
  lua_pushinteger(L, n);
  lua_gettable(L, t);
  return lua_type(L, -1);
}
#define ODO_GETFIELD(L, i, k) (lua_getfield((L), (i), (k)), lua_type((L), -1))
#else
#define ODO_GETFIELD(L, i, k) lua_getfield((L), (i), (k))
#endif

#if LUA_VERSION_NUM < 504
#define lua_newuserdatauv(L, sz, nuv) lua_newuserdata((L), (sz))
/* The value on top becomes the userdata's (single) user value. 5.1's
 * environment and 5.2's user value must be a table: anything else is
 * wrapped in one (the value only keeps its owner alive). */
static inline void odo_setuservalue(lua_State *L, int idx) {
  if (!lua_istable(L, -1)) {
    lua_createtable(L, 1, 0);
    lua_insert(L, -2);
    lua_rawseti(L, -2, 1);
  }
  lua_setuservalue(L, idx);
}
#else
#define odo_setuservalue(L, idx) lua_setiuservalue((L), (idx), 1)
#endif

#endif
