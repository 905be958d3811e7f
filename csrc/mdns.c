/* mdns.c - odo.core.mdns: the Lua object over the mDNS engine
 * (mdns_engine.c). Lua owns the UDP socket: it feeds each datagram with
 * its sender to `input`, sends what `output` returns, and asks `sleep`
 * when to call `output` again. */

/***
 * Multicast DNS (RFC 6762/6763) over libmdnsd, sans-I/O.
 * @module odo.core
 */
#include <arpa/inet.h>
#include <stdio.h>

#include "mdns_engine.h"
#include "odo.h"

#define MDNS_CLASS "odo.mdns"
#define MAX_TXT_STRINGS 32

typedef struct {
  odo_mdns *e;
} lmdns;

static lmdns *check(lua_State *L) {
  lmdns *m = luaL_checkudata(L, 1, MDNS_CLASS);
  if (!m->e) luaL_error(L, "the mDNS engine is closed");
  return m;
}

static const char *opt_string(lua_State *L, int t, const char *k) {
  lua_getfield(L, t, k);
  const char *s = NULL;
  if (!lua_isnil(L, -1)) {
    if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "option %s must be a string", k);
    s = lua_tostring(L, -1);
  }
  lua_pop(L, 1); /* the string stays referenced by the options table */
  return s;
}

/* opts.txt: an array of strings ("key=value"), each 1..255 bytes, into
 * TXT rdata in buf. */
static size_t txt_rdata(lua_State *L, int t, uint8_t *buf, size_t cap) {
  size_t len = 0;
  lua_getfield(L, t, "txt");
  if (lua_isnil(L, -1)) { lua_pop(L, 1); return 0; }
  luaL_argcheck(L, lua_istable(L, -1), 1, "option txt must be an array of strings");
  size_t n = lua_rawlen(L, -1);
  if (n > MAX_TXT_STRINGS) luaL_error(L, "option txt has more than %d strings", MAX_TXT_STRINGS);
  for (size_t i = 1; i <= n; i++) {
    lua_rawgeti(L, -1, (lua_Integer)i);
    size_t sl;
    const char *s = lua_tolstring(L, -1, &sl);
    if (!s || lua_type(L, -1) != LUA_TSTRING || sl == 0 || sl > 255)
      luaL_error(L, "option txt[%d] must be a string of 1 to 255 bytes", (int)i);
    if (len + 1 + sl > cap) luaL_error(L, "option txt is longer than %d bytes", (int)cap);
    buf[len] = (uint8_t)sl;
    memcpy(buf + len + 1, s, sl);
    len += 1 + sl;
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return len;
}

/***
 * A new mDNS engine. Publishes one instance when `instance` is given.
 * @function mdns
 * @tparam table opts `service` (default "_odo._tcp.local."), `instance`
 *   (the instance's label, e.g. "odo-1a2b"), `host` (dotted host name,
 *   default "<instance>.local."), `ip` (IPv4 address for the A record,
 *   needed to publish), `ip6` (optional AAAA), `port` (SRV port), `txt`
 *   (array of "key=value" strings), `ttl` (seconds, default 120),
 *   `max_instances` (default 64, at most 256), `browse` (default true)
 * @return an engine, or nil, message, "EINVAL"
 */
static int l_new(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  odo_mdns_config c;
  memset(&c, 0, sizeof c);
  char service[ODO_MDNS_MAX_NAME + 2], instance[2 * ODO_MDNS_MAX_NAME + 2], host[ODO_MDNS_MAX_NAME + 16];
  uint8_t txt[1300];
  const char *svc = opt_string(L, 1, "service");
  snprintf(service, sizeof service, "%s", svc ? svc : ODO_MDNS_DEFAULT_SERVICE);
  c.service = service;
  const char *inst = opt_string(L, 1, "instance");
  if (inst) {
    if (strlen(inst) == 0 || strlen(inst) > 63 || strchr(inst, '.'))
      return odo_fail(L, "EINVAL", "the instance label must be 1 to 63 bytes without a dot");
    snprintf(instance, sizeof instance, "%s.%s", inst, service);
    const char *h = opt_string(L, 1, "host");
    if (h) snprintf(host, sizeof host, "%s", h);
    else snprintf(host, sizeof host, "%s.local.", inst);
    c.instance = instance;
    c.host = host;
    const char *ip = opt_string(L, 1, "ip");
    if (!ip || inet_pton(AF_INET, ip, &c.ip) != 1)
      return odo_fail(L, "EINVAL", "option ip must be an IPv4 address to publish (got %s)", ip ? ip : "none");
    const char *ip6 = opt_string(L, 1, "ip6");
    if (ip6) {
      if (inet_pton(AF_INET6, ip6, &c.ip6) != 1) return odo_fail(L, "EINVAL", "option ip6 is not an IPv6 address");
      c.has_ip6 = 1;
    }
    uint64_t port = odo_fieldu64(L, 1, "port", 0);
    if (port < 1 || port > 65535) return odo_fail(L, "EINVAL", "option port must be 1 to 65535");
    c.port = (uint16_t)port;
    c.txt = txt;
    c.txt_len = txt_rdata(L, 1, txt, sizeof txt);
  }
  uint64_t ttl = odo_fieldu64(L, 1, "ttl", 120);
  if (ttl < 1 || ttl > 86400) return odo_fail(L, "EINVAL", "option ttl must be 1 to 86400 seconds");
  c.ttl = (uint32_t)ttl;
  uint64_t max = odo_fieldu64(L, 1, "max_instances", 64);
  if (max < 1 || max > ODO_MDNS_MAX_INSTANCES)
    return odo_fail(L, "EINVAL", "option max_instances must be 1 to %d", ODO_MDNS_MAX_INSTANCES);
  c.max_instances = (unsigned)max;
  c.browse = odo_fieldbool(L, 1, "browse", 1);
  lmdns *m = lua_newuserdata(L, sizeof *m);
  m->e = NULL;
  luaL_setmetatable(L, MDNS_CLASS);
  char err[200];
  m->e = odo_mdns_new(&c, err, sizeof err);
  if (!m->e) return odo_fail(L, "EINVAL", "mDNS: %s", err);
  return 1;
}

/***
 * Feeds one received datagram.
 * @function mdns:input
 * @tparam string packet
 * @tparam string ip the sender's IPv4 address
 * @tparam integer port the sender's port (not 5353: a legacy unicast
 *   querier, answered by unicast)
 * @return true, or nil, "EINVAL: ...", "EINVAL" for a packet refused
 */
static int l_input(lua_State *L) {
  lmdns *m = check(L);
  size_t n;
  const char *p = luaL_checklstring(L, 2, &n);
  const char *ip = luaL_checkstring(L, 3);
  lua_Integer port = luaL_checkinteger(L, 4);
  struct in_addr from;
  if (inet_pton(AF_INET, ip, &from) != 1) return odo_fail(L, "EINVAL", "mDNS: %s is not an IPv4 address", ip);
  if (port < 1 || port > 65535) return odo_fail(L, "EINVAL", "mDNS: port %d out of range", (int)port);
  const char *why = "refused";
  if (odo_mdns_input(m->e, (const uint8_t *)p, n, from, (uint16_t)port, &why))
    return odo_fail(L, "EINVAL", "mDNS packet from %s:%d refused: %s", ip, (int)port, why);
  lua_pushboolean(L, 1);
  return 1;
}

/***
 * The next datagram due now.
 * @function mdns:output
 * @return packet, ip, port; or nil when none is due
 */
static int l_output(lua_State *L) {
  lmdns *m = check(L);
  const uint8_t *p;
  size_t n;
  struct in_addr to;
  uint16_t port;
  if (!odo_mdns_output(m->e, &p, &n, &to, &port)) return 0;
  char ip[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &to, ip, sizeof ip);
  lua_pushlstring(L, (const char *)p, n);
  lua_pushstring(L, ip);
  lua_pushinteger(L, port);
  return 3;
}

/***
 * Milliseconds until `output` should be called again.
 * @function mdns:sleep
 * @treturn integer
 */
static int l_sleep(lua_State *L) {
  lmdns *m = check(L);
  lua_pushinteger(L, (lua_Integer)odo_mdns_sleep_ms(m->e));
  return 1;
}

/***
 * Stops: `output` then returns the goodbyes (TTL 0) of every published
 * record; input is refused from now on.
 * @function mdns:stop
 */
static int l_stop(lua_State *L) {
  lmdns *m = check(L);
  odo_mdns_stop(m->e);
  return 0;
}

/* Pushes TXT rdata as a table: key (lower case) -> value, or true for a
 * bare key; the first of a key wins (RFC 6763 §6.4). */
static void push_txt(lua_State *L, const uint8_t *rd, size_t len) {
  lua_newtable(L);
  size_t off = 0;
  odo_txt_item it;
  char key[256];
  while (odo_txt_next(rd, len, &off, &it) == 1) {
    for (size_t i = 0; i < it.key_len; i++) {
      char ch = (char)it.key[i];
      key[i] = ch >= 'A' && ch <= 'Z' ? (char)(ch + 32) : ch;
    }
    lua_pushlstring(L, key, it.key_len);
    lua_rawget(L, -2);
    int seen = !lua_isnil(L, -1);
    lua_pop(L, 1);
    if (seen) continue;
    lua_pushlstring(L, key, it.key_len);
    if (it.has_value) lua_pushlstring(L, (const char *)it.value, it.value_len);
    else lua_pushboolean(L, 1);
    lua_rawset(L, -3);
  }
}

/***
 * The instances of the service found on the link, not our own.
 * @function mdns:instances
 * @treturn table array of `{name, instance, host, ip, port, txt, expires_in}`:
 *   `name` the full instance name, `instance` its first label, `host` the
 *   SRV target, `ip` its address, `txt` a table of TXT keys (lower case)
 */
static int l_instances(lua_State *L) {
  lmdns *m = check(L);
  size_t max = odo_mdns_capacity(m->e);
  odo_mdns_found *f = lua_newuserdata(L, max * sizeof *f);
  size_t n = odo_mdns_instances(m->e, f, max);
  lua_createtable(L, (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    lua_createtable(L, 0, 7);
    lua_pushstring(L, f[i].name);
    lua_setfield(L, -2, "name");
    const char *dot = strchr(f[i].name, '.');
    lua_pushlstring(L, f[i].name, dot ? (size_t)(dot - f[i].name) : strlen(f[i].name));
    lua_setfield(L, -2, "instance");
    lua_pushstring(L, f[i].target);
    lua_setfield(L, -2, "host");
    lua_pushstring(L, f[i].ip);
    lua_setfield(L, -2, "ip");
    lua_pushinteger(L, f[i].port);
    lua_setfield(L, -2, "port");
    push_txt(L, f[i].txt, f[i].txt ? f[i].txt_len : 0);
    lua_setfield(L, -2, "txt");
    lua_pushinteger(L, f[i].expires_in);
    lua_setfield(L, -2, "expires_in");
    lua_rawseti(L, -2, (lua_Integer)(i + 1));
  }
  return 1;
}

/***
 * Frees the engine (no goodbyes: `stop` and drain `output` first).
 * Idempotent; also on garbage collection and `<close>`.
 * @function mdns:close
 */
static int l_close(lua_State *L) {
  lmdns *m = luaL_checkudata(L, 1, MDNS_CLASS);
  odo_mdns_free(m->e);
  m->e = NULL;
  return 0;
}

static int l_tostring(lua_State *L) {
  lmdns *m = luaL_checkudata(L, 1, MDNS_CLASS);
  lua_pushfstring(L, "odo.mdns (%s)", m->e ? "open" : "closed");
  return 1;
}

static const luaL_Reg methods[] = {
  {"input", l_input}, {"output", l_output}, {"sleep", l_sleep}, {"stop", l_stop},
  {"instances", l_instances}, {"close", l_close}, {NULL, NULL},
};

void odo_mdns_open(lua_State *L) {
  odo_newclass(L, MDNS_CLASS, methods, l_close, l_tostring);
  lua_pushcfunction(L, l_new);
  lua_setfield(L, -2, "mdns");
}
