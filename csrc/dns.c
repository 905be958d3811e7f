/* dns.c - a c-ares resolver the loop drives: it never waits.
 *
 * c-ares 1.18 has no event thread, so the caller drives it by its
 * sockets: sockets() says which descriptors to poll and for what (the
 * socket-state callback's reports, queued in order, since c-ares may
 * close a socket and open another on the same number in one call);
 * process(fd, readable, writable) when one is ready, process() once
 * timeout() has passed; results() collects the queries that finished.
 * c-ares's callbacks only queue: nothing here calls into Lua from inside
 * c-ares. SRV answers are read by dns_answer.c, with their TTLs; A and
 * AAAA answers by c-ares (ares_addrttl).
 */

/***
 * @submodule odo.core
 */
#include <arpa/inet.h>
#include <ares.h>
#include <stdio.h>
#include <stdlib.h>

#include "dns_answer.h"
#include "odo.h"

#define DNS_CLASS "odo.DnsResolver"
#define DNS_MAX_INFLIGHT 256  /* queries in flight per resolver */
#define DNS_MAX_ADDRS 64      /* addresses kept from one A/AAAA answer */
#define DNS_MAX_CHANGES 1024  /* socket changes queued before a resync */
#define DNS_TYPE_A 1
#define DNS_TYPE_AAAA 28

struct dns_resolver;

/* A query in flight, then (with its answer) on the finished list. */
typedef struct dns_query {
  struct dns_query *next;
  struct dns_resolver *r;
  lua_Integer id;
  int qtype;
  int status;   /* ARES_* once finished */
  uint64_t at;  /* wall clock (ms) when it finished */
  unsigned char *abuf;
  size_t alen;
  char name[ODO_DNS_MAX_TEXT];
} dns_query;

typedef struct sock_change {
  ares_socket_t fd;
  unsigned char readable, writable;
} sock_change;

typedef struct dns_resolver {
  ares_channel ch;
  int open;     /* ch is valid */
  int library;  /* ares_library_init succeeded: cleanup owed */
  lua_Integer next_id;
  int inflight;
  dns_query *done, **done_tail;
  sock_change *changes;
  size_t nchanges, capchanges;
  int resync;   /* a change could not be queued: report the whole state */
} dns_resolver;

/* ---- c-ares callbacks (they only queue) -------------------------------- */

static void on_answer(void *arg, int status, int timeouts, unsigned char *abuf,
                      int alen) {
  dns_query *q = arg;
  dns_resolver *r = q->r;
  (void)timeouts;
  r->inflight--;
  if (status == ARES_EDESTRUCTION) { /* the resolver is closing */
    free(q);
    return;
  }
  q->status = status;
  q->at = odo_now_ms();
  if (status == ARES_SUCCESS && abuf != NULL && alen > 0) {
    q->abuf = malloc((size_t)alen);
    if (q->abuf == NULL) {
      q->status = ARES_ENOMEM;
    } else {
      memcpy(q->abuf, abuf, (size_t)alen);
      q->alen = (size_t)alen;
    }
  }
  q->next = NULL;
  *r->done_tail = q;
  r->done_tail = &q->next;
}

static void on_sock_state(void *data, ares_socket_t fd, int readable,
                          int writable) {
  dns_resolver *r = data;
  if (r->resync) return;
  if (r->nchanges == r->capchanges) {
    size_t cap = r->capchanges ? 2 * r->capchanges : 8;
    sock_change *p = NULL;
    if (cap <= DNS_MAX_CHANGES) p = realloc(r->changes, cap * sizeof *p);
    if (p == NULL) {
      r->resync = 1;
      r->nchanges = 0;
      return;
    }
    r->changes = p;
    r->capchanges = cap;
  }
  r->changes[r->nchanges].fd = fd;
  r->changes[r->nchanges].readable = readable != 0;
  r->changes[r->nchanges].writable = writable != 0;
  r->nchanges++;
}

/* ---- lifetime ------------------------------------------------------------ */

static void free_done(dns_resolver *r) {
  while (r->done) {
    dns_query *q = r->done;
    r->done = q->next;
    free(q->abuf);
    free(q);
  }
  r->done_tail = &r->done;
}

/* Releases everything; idempotent (close, __gc and __close). */
static void release(dns_resolver *r) {
  if (r->open) {
    r->open = 0;
    ares_destroy(r->ch); /* in-flight queries end with ARES_EDESTRUCTION */
  }
  free_done(r);
  free(r->changes);
  r->changes = NULL;
  r->nchanges = r->capchanges = 0;
  if (r->library) {
    r->library = 0;
    ares_library_cleanup();
  }
}

static dns_resolver *check_open(lua_State *L) {
  dns_resolver *r = luaL_checkudata(L, 1, DNS_CLASS);
  if (!r->open) luaL_error(L, "attempt to use a closed DNS resolver");
  return r;
}

/* ---- errors ---------------------------------------------------------------- */

typedef struct status_text {
  int status;
  const char *code, *text;
} status_text;

static const status_text STATUS[] = {
    {ARES_ENODATA, "ENODATA", "no records of that type"},
    {ARES_ENOTFOUND, "ENOTFOUND", "no such name (NXDOMAIN)"},
    {ARES_EREFUSED, "EREFUSED", "the server refused to answer (REFUSED)"},
    {ARES_ESERVFAIL, "ESERVFAIL", "the server failed to answer (SERVFAIL)"},
    {ARES_ENOTIMP, "ENOTIMP", "the server does not implement the query (NOTIMP)"},
    {ARES_ETIMEOUT, "ETIMEDOUT", "no answer from the DNS server"},
    {ARES_ECONNREFUSED, "ECONNREFUSED", "the DNS server's port is closed"},
    {ARES_EFORMERR, "EBADRESP", "the server found the query malformed (FORMERR)"},
    {ARES_EBADRESP, "EBADRESP", "the answer is malformed"},
    {ARES_EBADNAME, "EINVAL", "not a name that can be queried"},
    {ARES_ENOMEM, "ENOMEM", "out of memory"},
    {0, NULL, NULL}};

static const char *type_name(int qtype) {
  return qtype == ODO_DNS_TYPE_SRV ? "SRV" : qtype == DNS_TYPE_A ? "A" : "AAAA";
}

/* Sets t.err = "CODE: NAME TYPE: text" and t.code on the table on top. */
static void set_error(lua_State *L, const dns_query *q, int status,
                      const char *detail) {
  const char *code = "EDNS", *text = ares_strerror(status);
  for (const status_text *s = STATUS; s->code; s++) {
    if (s->status == status) {
      code = s->code;
      text = s->text;
      break;
    }
  }
  lua_pushfstring(L, "%s: %s %s: %s%s%s", code, q->name, type_name(q->qtype),
                  text, detail ? ": " : "", detail ? detail : "");
  lua_setfield(L, -2, "err");
  lua_pushstring(L, code);
  lua_setfield(L, -2, "code");
}

/* ---- results ---------------------------------------------------------------- */

static void push_srv(lua_State *L, const odo_srv *s) {
  lua_createtable(L, 0, 5);
  lua_pushstring(L, s->target);
  lua_setfield(L, -2, "target");
  lua_pushinteger(L, s->port);
  lua_setfield(L, -2, "port");
  lua_pushinteger(L, s->priority);
  lua_setfield(L, -2, "priority");
  lua_pushinteger(L, s->weight);
  lua_setfield(L, -2, "weight");
  lua_pushinteger(L, (lua_Integer)s->ttl);
  lua_setfield(L, -2, "ttl");
}

/* Pushes `records` (and `skipped`) read from an SRV answer onto the table
 * on top, or returns 0 with *why set. */
static int push_srv_records(lua_State *L, const uint8_t *msg, size_t len,
                            const char **why) {
  odo_srv *recs = malloc(ODO_DNS_MAX_SRV * sizeof *recs);
  int skipped = 0, n;
  if (recs == NULL) {
    *why = "out of memory";
    return 0;
  }
  n = odo_dns_srv_answer(msg, len, recs, ODO_DNS_MAX_SRV, &skipped, why);
  if (n >= 0) {
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
      push_srv(L, &recs[i]);
      lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "records");
    lua_pushinteger(L, skipped);
    lua_setfield(L, -2, "skipped");
  }
  free(recs);
  return n >= 0;
}

static void push_address(lua_State *L, int i, int family, const void *addr,
                         int ttl) {
  char text[INET6_ADDRSTRLEN];
  if (inet_ntop(family, addr, text, sizeof text) == NULL) return;
  lua_createtable(L, 0, 2);
  lua_pushstring(L, text);
  lua_setfield(L, -2, "address");
  lua_pushinteger(L, ttl < 0 ? 0 : ttl);
  lua_setfield(L, -2, "ttl");
  lua_rawseti(L, -2, i);
}

/* Pushes `records` from an A or AAAA answer onto the table on top, or
 * returns the c-ares status that says why not. */
static int push_addresses(lua_State *L, const dns_query *q) {
  int n = DNS_MAX_ADDRS, rc;
  if (q->qtype == DNS_TYPE_A) {
    struct ares_addrttl a[DNS_MAX_ADDRS];
    rc = ares_parse_a_reply(q->abuf, (int)q->alen, NULL, a, &n);
    if (rc != ARES_SUCCESS) return rc;
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++)
      push_address(L, i + 1, AF_INET, &a[i].ipaddr, a[i].ttl);
  } else {
    struct ares_addr6ttl a[DNS_MAX_ADDRS];
    rc = ares_parse_aaaa_reply(q->abuf, (int)q->alen, NULL, a, &n);
    if (rc != ARES_SUCCESS) return rc;
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++)
      push_address(L, i + 1, AF_INET6, &a[i].ip6addr, a[i].ttl);
  }
  lua_setfield(L, -2, "records");
  return ARES_SUCCESS;
}

static void push_result(lua_State *L, const dns_query *q) {
  lua_createtable(L, 0, 6);
  lua_pushinteger(L, q->id);
  lua_setfield(L, -2, "id");
  lua_pushstring(L, q->name);
  lua_setfield(L, -2, "name");
  lua_pushstring(L, type_name(q->qtype));
  lua_setfield(L, -2, "type");
  odo_pushu64(L, q->at);
  lua_setfield(L, -2, "at");
  if (q->status != ARES_SUCCESS) {
    set_error(L, q, q->status, NULL);
  } else if (q->qtype == ODO_DNS_TYPE_SRV) {
    const char *why = NULL;
    if (!push_srv_records(L, q->abuf, q->alen, &why))
      set_error(L, q, ARES_EBADRESP, why);
  } else {
    int rc = push_addresses(L, q);
    if (rc != ARES_SUCCESS) set_error(L, q, rc, NULL);
  }
}

/* ---- Lua API ------------------------------------------------------------------ */

/***
 * A DNS resolver (c-ares) driven by the caller's loop; it never blocks.
 * Ask with `query`; poll the descriptors `sockets` reports and call
 * `process(fd, readable, writable)` when one is ready, and `process()`
 * when `timeout()` milliseconds have passed; collect answers with
 * `results`. `odo.resolver` does all that over an adapter.
 * @function dns_resolver
 * @tparam[opt] table opts `servers` ("IP:PORT,[IPv6]:PORT,...", default:
 *   the system's resolver configuration), `timeout_ms` (first try, default
 *   2000; c-ares doubles it on each later round), `tries` (default 2)
 * @treturn DnsResolver
 * @treturn[2] nil
 * @treturn[2] string "EINVAL: ..." (a server list c-ares cannot use) or
 *   "EDNS: ..."
 * @treturn[2] string NAME
 */
static int l_dns_resolver(lua_State *L) {
  struct ares_options o;
  const char *servers = NULL;
  uint64_t timeout_ms = 2000, tries = 2;
  dns_resolver *r;
  int rc;
  if (!lua_isnoneornil(L, 1)) {
    luaL_checktype(L, 1, LUA_TTABLE);
    if (ODO_GETFIELD(L, 1, "servers") != LUA_TNIL) {
      if (lua_type(L, -1) != LUA_TSTRING)
        return luaL_error(L, "opts.servers must be a string \"IP:PORT,...\"");
      servers = lua_tostring(L, -1);
    }
    lua_pop(L, 1);
    timeout_ms = odo_fieldu64(L, 1, "timeout_ms", timeout_ms);
    tries = odo_fieldu64(L, 1, "tries", tries);
    if (timeout_ms < 1 || timeout_ms > 600000)
      return luaL_error(L, "opts.timeout_ms must be 1 to 600000");
    if (tries < 1 || tries > 16) return luaL_error(L, "opts.tries must be 1 to 16");
  }
  r = lua_newuserdatauv(L, sizeof *r, 0);
  memset(r, 0, sizeof *r);
  r->done_tail = &r->done;
  rc = ares_library_init(ARES_LIB_INIT_ALL);
  if (rc != ARES_SUCCESS)
    return odo_fail(L, "EDNS", "cannot start c-ares: %s", ares_strerror(rc));
  r->library = 1;
  memset(&o, 0, sizeof o);
  o.sock_state_cb = on_sock_state;
  o.sock_state_cb_data = r; /* a userdata never moves */
  o.timeout = (int)timeout_ms;
  o.tries = (int)tries;
  /* A REFUSED or SERVFAIL answer comes back as such (c-ares 1.18 would
   * try the other servers, then report ECONNREFUSED, which misleads);
   * rotating makes the next query, a retry included, ask the next server. */
  o.flags = ARES_FLAG_NOCHECKRESP;
  rc = ares_init_options(&r->ch, &o,
                         ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES |
                             ARES_OPT_FLAGS | ARES_OPT_ROTATE);
  if (rc != ARES_SUCCESS) {
    release(r);
    return odo_fail(L, "EDNS", "cannot start a DNS resolver: %s", ares_strerror(rc));
  }
  r->open = 1;
  if (servers != NULL) {
    rc = ares_set_servers_ports_csv(r->ch, servers);
    if (rc != ARES_SUCCESS) {
      release(r);
      return odo_fail(L, "EINVAL",
                      "cannot use DNS server '%s': %s (give IP:PORT or "
                      "[IPv6]:PORT, comma-separated; not a host name)",
                      servers, ares_strerror(rc));
    }
  }
  luaL_setmetatable(L, DNS_CLASS);
  return 1;
}

/***
 * Starts a query; its answer comes out of `results` under the id returned.
 * @function dns_resolver:query
 * @tparam string name a DNS name (1 to 253 characters)
 * @tparam string type "SRV", "A" or "AAAA"
 * @treturn integer the query's id
 * @treturn[2] nil
 * @treturn[2] string "EBUSY: ..." (too many queries in flight), "ENOMEM: ..."
 * @treturn[2] string NAME
 */
static int l_query(lua_State *L) {
  dns_resolver *r = check_open(L);
  size_t n;
  const char *name = luaL_checklstring(L, 2, &n);
  const char *type = luaL_checkstring(L, 3);
  int qtype;
  dns_query *q;
  lua_Integer id;
  if (strcmp(type, "SRV") == 0) qtype = ODO_DNS_TYPE_SRV;
  else if (strcmp(type, "A") == 0) qtype = DNS_TYPE_A;
  else if (strcmp(type, "AAAA") == 0) qtype = DNS_TYPE_AAAA;
  else return luaL_argerror(L, 3, "\"SRV\", \"A\" or \"AAAA\"");
  if (n == 0 || n >= ODO_DNS_MAX_TEXT || strlen(name) != n)
    return luaL_argerror(L, 2, "a DNS name of 1 to 253 characters");
  if (r->inflight >= DNS_MAX_INFLIGHT)
    return odo_fail(L, "EBUSY", "%d DNS queries are in flight already", r->inflight);
  q = calloc(1, sizeof *q);
  if (q == NULL) return odo_fail(L, "ENOMEM", "out of memory for a DNS query");
  q->r = r;
  q->id = id = ++r->next_id;
  q->qtype = qtype;
  memcpy(q->name, name, n + 1);
  r->inflight++;
  ares_query(r->ch, name, ODO_DNS_CLASS_IN, qtype, on_answer, q);
  lua_pushinteger(L, id);
  return 1;
}

/***
 * Lets c-ares read and write a ready socket, or, with no fd, handle its
 * timeouts (retries, queries that gave up).
 * @function dns_resolver:process
 * @tparam[opt] integer fd a descriptor `sockets` reported
 * @tparam[opt] boolean readable
 * @tparam[opt] boolean writable
 */
static int l_process(lua_State *L) {
  dns_resolver *r = check_open(L);
  if (lua_isnoneornil(L, 2)) {
    ares_process_fd(r->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
  } else {
    ares_socket_t fd = (ares_socket_t)luaL_checkinteger(L, 2);
    ares_process_fd(r->ch, lua_toboolean(L, 3) ? fd : ARES_SOCKET_BAD,
                    lua_toboolean(L, 4) ? fd : ARES_SOCKET_BAD);
  }
  return 0;
}

/***
 * Milliseconds until `process()` is due, or nil with no query in flight.
 * @function dns_resolver:timeout
 * @treturn ?integer
 */
static int l_timeout(lua_State *L) {
  dns_resolver *r = check_open(L);
  struct timeval tv, *t = ares_timeout(r->ch, NULL, &tv);
  if (t == NULL) return 0;
  lua_pushinteger(L, (lua_Integer)t->tv_sec * 1000 + (t->tv_usec + 999) / 1000);
  return 1;
}

/* Sets t[i] = {fd =, events = "r" | "w" | "rw" | ""} on the table on top. */
static void push_socket(lua_State *L, lua_Integer i, ares_socket_t fd,
                        int readable, int writable) {
  lua_createtable(L, 0, 2);
  lua_pushinteger(L, (lua_Integer)fd);
  lua_setfield(L, -2, "fd");
  lua_pushstring(L, readable ? (writable ? "rw" : "r") : (writable ? "w" : ""));
  lua_setfield(L, -2, "events");
  lua_rawseti(L, -2, i);
}

/***
 * The changes to which sockets to poll since the last call, in order:
 * an array of `{fd =, events = "r" | "w" | "rw" | ""}` (`""`: stop
 * polling it; c-ares closes it next, and a later entry may be a new
 * socket on the same number). When the second result is true, the
 * array is the whole state instead: stop every poll, then start these.
 * @function dns_resolver:sockets
 * @treturn table
 * @treturn boolean reset
 */
static int l_sockets(lua_State *L) {
  dns_resolver *r = check_open(L);
  int reset = r->resync;
  if (reset) {
    ares_socket_t socks[ARES_GETSOCK_MAXNUM];
    /* bit i: readable, bit i + 16: writable (unsigned: c-ares's own
     * ARES_GETSOCK_WRITABLE shifts a signed 1 into the sign bit) */
    unsigned bits = (unsigned)ares_getsock(r->ch, socks, ARES_GETSOCK_MAXNUM);
    int n = 0;
    lua_createtable(L, ARES_GETSOCK_MAXNUM, 0);
    for (int i = 0; i < ARES_GETSOCK_MAXNUM; i++) {
      int rd = (bits >> i) & 1u;
      int wr = (bits >> (i + ARES_GETSOCK_MAXNUM)) & 1u;
      if (rd || wr) push_socket(L, ++n, socks[i], rd, wr);
    }
    r->resync = 0;
  } else {
    lua_createtable(L, (int)r->nchanges, 0);
    for (size_t i = 0; i < r->nchanges; i++)
      push_socket(L, (lua_Integer)i + 1, r->changes[i].fd, r->changes[i].readable,
                  r->changes[i].writable);
  }
  r->nchanges = 0;
  lua_pushboolean(L, reset);
  return 2;
}

/***
 * The queries that finished since the last call, in the order they did:
 * `{id, name, type, at (wall clock, ms), records}` where `records` is an
 * array of `{target, port, priority, weight, ttl}` (SRV, in wire order,
 * with `skipped` counting records whose target is not a plain host name)
 * or `{address, ttl}` (A, AAAA); or `{id, name, type, at, err =
 * "NAME: ...", code = NAME}` with NAME one of ENODATA (the name has no
 * records of that type), ENOTFOUND (NXDOMAIN), EREFUSED, ESERVFAIL,
 * ENOTIMP, ETIMEDOUT, ECONNREFUSED, EBADRESP, EINVAL, ENOMEM, EDNS.
 * @function dns_resolver:results
 * @treturn table
 */
static int l_results(lua_State *L) {
  dns_resolver *r = check_open(L);
  int n = 0;
  lua_newtable(L);
  while (r->done) {
    dns_query *q = r->done;
    r->done = q->next;
    if (r->done == NULL) r->done_tail = &r->done;
    push_result(L, q);
    lua_rawseti(L, -2, ++n);
    free(q->abuf);
    free(q);
  }
  return 1;
}

/* For specs: makes the next sockets() report the whole state, as after a
 * change that could not be queued. */
static int l_resync(lua_State *L) {
  dns_resolver *r = check_open(L);
  r->resync = 1;
  r->nchanges = 0;
  return 0;
}

/***
 * The servers asked, as "IP:PORT,[IPv6]:PORT".
 * @function dns_resolver:servers
 * @treturn string
 */
static int l_servers(lua_State *L) {
  dns_resolver *r = check_open(L);
  struct ares_addr_port_node *list = NULL;
  luaL_Buffer b;
  int rc = ares_get_servers_ports(r->ch, &list);
  if (rc != ARES_SUCCESS)
    return odo_fail(L, "EDNS", "cannot list DNS servers: %s", ares_strerror(rc));
  luaL_buffinit(L, &b);
  for (struct ares_addr_port_node *s = list; s; s = s->next) {
    char ip[INET6_ADDRSTRLEN], one[INET6_ADDRSTRLEN + 16];
    int v6 = s->family == AF_INET6;
    if (inet_ntop(s->family, v6 ? (const void *)&s->addr.addr6 : (const void *)&s->addr.addr4,
                  ip, sizeof ip) == NULL)
      continue;
    snprintf(one, sizeof one, "%s%s%s%s:%d", s == list ? "" : ",", v6 ? "[" : "", ip,
             v6 ? "]" : "", s->udp_port ? s->udp_port : 53);
    luaL_addstring(&b, one);
  }
  ares_free_data(list);
  luaL_pushresult(&b);
  return 1;
}

/***
 * Closes the resolver: queries in flight are dropped, sockets closed.
 * Idempotent; also `__gc` and `__close`.
 * @function dns_resolver:close
 */
static int l_close(lua_State *L) {
  release(luaL_checkudata(L, 1, DNS_CLASS));
  return 0;
}

static int l_tostring(lua_State *L) {
  dns_resolver *r = luaL_checkudata(L, 1, DNS_CLASS);
  if (r->open) lua_pushfstring(L, DNS_CLASS " (%d in flight)", r->inflight);
  else lua_pushliteral(L, DNS_CLASS " (closed)");
  return 1;
}

/***
 * Reads the SRV records of a raw DNS answer (what the resolver does with
 * each SRV answer; for specs and tools).
 * @function dns_srv_answer
 * @tparam string msg a DNS message
 * @treturn table array of `{target, port, priority, weight, ttl}`, in
 *   wire order
 * @treturn integer records skipped (targets that are not host names)
 * @treturn[2] nil
 * @treturn[2] string "EBADRESP: ..."
 * @treturn[2] string "EBADRESP"
 */
static int l_dns_srv_answer(lua_State *L) {
  size_t len;
  const uint8_t *msg = (const uint8_t *)luaL_checklstring(L, 1, &len);
  const char *why = NULL;
  lua_newtable(L);
  if (!push_srv_records(L, msg, len, &why))
    return odo_fail(L, "EBADRESP", "malformed DNS answer: %s", why);
  lua_getfield(L, -1, "records");
  lua_getfield(L, -2, "skipped");
  return 2;
}

void odo_dns_open(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"query", l_query},     {"process", l_process}, {"timeout", l_timeout},
      {"sockets", l_sockets}, {"results", l_results}, {"servers", l_servers},
      {"close", l_close},     {"_resync", l_resync},  {NULL, NULL}};
  odo_newclass(L, DNS_CLASS, methods, l_close, l_tostring);
  lua_pushcfunction(L, l_dns_resolver);
  lua_setfield(L, -2, "dns_resolver");
  lua_pushcfunction(L, l_dns_srv_answer);
  lua_setfield(L, -2, "dns_srv_answer");
  lua_pushstring(L, ARES_VERSION_STR);
  lua_setfield(L, -2, "cares_version");
}
