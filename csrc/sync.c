/* sync.c - the Lua class odo.sync: the sync engine over a store and peer
 * sessions (sync.h names its files). This file checks Lua's arguments,
 * keeps the engine's references, and hands each call to the serving
 * (sync_serve.c) or receiving (sync_recv.c) half. */

/***
 * @submodule odo.core
 */
#include <stdio.h>
#include <stdlib.h>

#include "sync.h"

/* ---- the Lua class -------------------------------------------------------------- */

static odo_sync *check_sync(lua_State *L) {
  odo_sync *y = luaL_checkudata(L, 1, ODO_SYNC_CLASS);
  if (y->store == NULL || y->store->db == NULL)
    luaL_error(L, "attempt to use a closed sync engine");
  return y;
}

static odo_session *check_sess(lua_State *L, int idx) {
  return luaL_checkudata(L, idx, ODO_SESSION_CLASS);
}

static sync_peer *check_peer(lua_State *L, odo_sync *y, int idx) {
  sync_peer *p = odo_sync_find_peer(y, check_sess(L, idx));
  if (p == NULL) luaL_error(L, "the session is not attached to the sync engine");
  return p;
}

static void sync_release(lua_State *L, odo_sync *y) {
  odo_sync_written_release(y);
  while (y->peers) {
    sync_peer *n = y->peers->next;
    odo_sync_peer_free(L, y->peers);
    y->peers = n;
  }
  while (y->keys) {
    src_key *n = y->keys->next;
    EVP_PKEY_free(y->keys->key);
    free(y->keys);
    y->keys = n;
  }
  odo_buf_free(&y->out);
  odo_buf_free(&y->section);
  free(y->evs);
  y->evs = NULL;
  y->cap_evs = 0;
  y->store = NULL;
}

/***
 * A sync engine over a store, with the node's TLS context (its key signs
 * heads and snapshots).
 * @function sync
 * @tparam odo.store store
 * @tparam odo.tls_context tls
 * @tparam[opt] table opts `verify` (default true: check signatures),
 *   `replica_sync` (default false: fsync replica writes), `max_batch`,
 *   `bulk_batch` (bytes: a batch of a catch-up goes on past its first
 *   signed head to the last one within this, default 512 KiB; 0: every
 *   batch ends at its first head), `bulk_queue` (bytes: bulk catch-ups
 *   stop while a session holds this much queued, so a live batch waits
 *   behind less; default 0, or more than the session's low watermark:
 *   that watermark)
 */
static int l_sync(lua_State *L) {
  odo_store *s = odo_store_check(L, 1);
  odo_tls *t = odo_tls_check(L, 2);
  odo_sync *y;
  if (s->node_len != ODO_NODE_ID_HEX || memcmp(s->node_id, t->id, ODO_NODE_ID_HEX) != 0)
    return luaL_argerror(L, 2, "the store belongs to another node than this TLS context's key");
  y = lua_newuserdatauv(L, sizeof *y, 1);
  memset(y, 0, sizeof *y);
  luaL_setmetatable(L, ODO_SYNC_CLASS);
  /* the engine keeps its store and TLS context alive */
  lua_createtable(L, 2, 0);
  lua_pushvalue(L, 1);
  lua_rawseti(L, -2, 1);
  lua_pushvalue(L, 2);
  lua_rawseti(L, -2, 2);
  odo_setuservalue(L, -2);
  y->store = s;
  /* our key, held by the store (it outlives a closed TLS context): it
   * signs heads here and source snapshots as the store stores them */
  odo_store_set_signer(s, t->key);
  y->verify = lua_istable(L, 3) ? odo_fieldbool(L, 3, "verify", 1) : 1;
  y->replica_sync = lua_istable(L, 3) ? odo_fieldbool(L, 3, "replica_sync", 0) : 0;
  y->max_batch = lua_istable(L, 3) ? (size_t)odo_fieldu64(L, 3, "max_batch", 15u << 20)
                                   : (15u << 20);
  y->bulk_batch = lua_istable(L, 3) ? (size_t)odo_fieldu64(L, 3, "bulk_batch", ODO_BULK_BATCH)
                                    : ODO_BULK_BATCH;
  y->bulk_queue = lua_istable(L, 3) ? (size_t)odo_fieldu64(L, 3, "bulk_queue", ODO_BULK_QUEUE)
                                    : ODO_BULK_QUEUE;
  return 1;
}

/***
 * Starts syncing with a peer over an open session.
 * @function sync:attach
 * @tparam odo.session session
 * @tparam string peer_id
 */
static int l_attach(lua_State *L) {
  odo_sync *y = check_sync(L);
  odo_session *s = check_sess(L, 2);
  const char *id = luaL_checkstring(L, 3);
  sync_peer *p;
  if (odo_sync_find_peer(y, s)) return 0;
  p = calloc(1, sizeof *p);
  if (p == NULL) return luaL_error(L, "out of memory");
  p->s = s;
  snprintf(p->id, sizeof p->id, "%s", id);
  lua_pushvalue(L, 2);
  p->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  p->next = y->peers;
  y->peers = p;
  return 0;
}

/***
 * Forgets a peer: its subscriptions here and ours there (seed rule 6).
 * @function sync:detach
 */
static int l_detach(lua_State *L) {
  odo_sync *y = check_sync(L);
  odo_session *s = check_sess(L, 2);
  for (sync_peer **pp = &y->peers; *pp; pp = &(*pp)->next)
    if ((*pp)->s == s) {
      sync_peer *p = *pp;
      *pp = p->next;
      odo_sync_peer_free(L, p);
      break;
    }
  return 0;
}

/***
 * Handles a sync message (type 0x10..0x16) received on an attached
 * session. Returns events for Lua: catalogue {full, entries}, subscribed
 * {stream, from}, events {stream, last, count}, snapshot {stream, rev},
 * caught_up {stream, rev}, refused {stream, code, reason}, violation
 * {stream, code, reason} (end the session with BYE `code`). With a commit
 * queue on the store, "events" of a batch queued for its worker come from
 * `written` instead; a small batch of a stream with nothing in flight,
 * without `replica_sync`, is written at once and noted here.
 * @function sync:handle
 */
static int l_handle(lua_State *L) {
  odo_sync *y = check_sync(L);
  sync_peer *p = check_peer(L, y, 2);
  lua_Integer type = luaL_checkinteger(L, 3);
  size_t n;
  const uint8_t *m = (const uint8_t *)luaL_checklstring(L, 4, &n);
  lua_newtable(L);
  odo_sync_handle(L, lua_gettop(L), y, p,
                  type < 0 || type > 255 ? -1 : (int)type, m, n);
  return 1;
}

/***
 * What the store's writer finished of the received batches since the
 * last call: events {stream, last, count, peer} once a batch is written
 * (durably with `replica_sync`), caught_up {stream, rev, peer} held back
 * until the batches before it were, violation {stream, code, reason,
 * peer} for a batch refused or not written (end that peer's session).
 * With no commit queue on the store, `handle` writes batches itself and
 * this returns none (so it does for small live batches: see `handle`).
 * @function sync:written
 * @treturn table the notes
 * @treturn integer bytes of batches in flight to the writer
 * @treturn integer batches in flight
 */
static int l_written(lua_State *L) {
  odo_sync *y = check_sync(L);
  lua_newtable(L);
  odo_sync_written(L, lua_gettop(L), y);
  lua_pushinteger(L, (lua_Integer)y->write_bytes);
  lua_pushinteger(L, (lua_Integer)y->writes);
  return 3;
}

/***
 * Received batches in flight to the store's writer, without taking what
 * it finished (see `written`).
 * @function sync:backlog
 * @treturn integer bytes
 * @treturn integer batches
 */
static int l_backlog(lua_State *L) {
  odo_sync *y = check_sync(L);
  lua_pushinteger(L, (lua_Integer)y->write_bytes);
  lua_pushinteger(L, (lua_Integer)y->writes);
  return 2;
}

/***
 * Asks a peer for streams: `streams` is an array of {id, from}; `live`
 * keeps them streaming after the catch-up; `snapshot` asks for the source
 * snapshot first even when not behind it (to compact against it).
 * @function sync:subscribe
 */
static int l_subscribe(lua_State *L) {
  odo_sync *y = check_sync(L);
  sync_peer *p = check_peer(L, y, 2);
  int live = lua_toboolean(L, 4), snap = lua_toboolean(L, 5);
  size_t n, f;
  unsigned frames = 0;
  luaL_checktype(L, 3, LUA_TTABLE);
  n = lua_rawlen(L, 3);
  /* every argument is checked before anything is built or remembered */
  for (size_t i = 1; i <= n; i++) {
    size_t sl;
    lua_rawgeti(L, 3, (lua_Integer)i);
    luaL_argcheck(L, lua_istable(L, -1), 3, "an array of {id=, from=}");
    lua_getfield(L, -1, "id");
    luaL_checklstring(L, -1, &sl);
    if (sl == 0 || sl > ODO_MAX_STREAM_ID)
      return luaL_error(L, "stream id %d is %d bytes long (1 to %d)", (int)i,
                        (int)sl, ODO_MAX_STREAM_ID);
    odo_fieldu64(L, -2, "from", 1);
    lua_pop(L, 2);
  }
  odo_sync_out_reset(y);
  /* at most ODO_MSG_FRAME_ENTRIES streams a frame: a long list goes out
   * in several frames (an empty list as one) */
  for (size_t at = 0; at < n || at == 0; at += ODO_MSG_FRAME_ENTRIES) {
    size_t k = n - at < ODO_MSG_FRAME_ENTRIES ? n - at : ODO_MSG_FRAME_ENTRIES;
    odo_msg_subscribe msg;
    odo_sync_section_reset(y);
    for (size_t i = at + 1; i <= at + k; i++) {
      odo_msg_sub_entry s;
      sync_want **w;
      lua_rawgeti(L, 3, (lua_Integer)i);
      lua_getfield(L, -1, "id");
      s.id = lua_tolstring(L, -1, &s.id_len);
      s.from = odo_fieldu64(L, -2, "from", 1);
      w = odo_sync_find_want(p, s.id, s.id_len);
      if (*w == NULL) {
        *w = calloc(1, sizeof **w);
        if (*w == NULL) {
          odo_sync_out_reset(y);
          return luaL_error(L, "out of memory");
        }
        memcpy((*w)->stream, s.id, s.id_len);
        (*w)->len = s.id_len;
      }
      odo_msg_sub_entry_put(&y->section, &s);
      lua_pop(L, 2);
    }
    msg.flags = (uint8_t)((live ? 1 : 0) | (snap ? 2 : 0));
    odo_sync_section_list(y, (uint32_t)k, &msg.entries);
    f = odo_frame_begin(&y->out, ODO_MSG_SUBSCRIBE);
    odo_msg_subscribe_encode(&y->out, &msg);
    odo_frame_end(&y->out, f);
    frames++;
  }
  lua_pushboolean(L, odo_sync_send_out(y, p, frames));
  return 1;
}

/***
 * Stops asking a peer for streams (an array of ids); batches of them
 * still in flight are dropped.
 * @function sync:unsubscribe
 */
static int l_unsubscribe(lua_State *L) {
  odo_sync *y = check_sync(L);
  sync_peer *p = check_peer(L, y, 2);
  size_t n, f;
  luaL_checktype(L, 3, LUA_TTABLE);
  n = lua_rawlen(L, 3);
  for (size_t i = 1; i <= n; i++) {
    size_t sl;
    lua_rawgeti(L, 3, (lua_Integer)i);
    luaL_checklstring(L, -1, &sl);
    if (sl == 0 || sl > ODO_MAX_STREAM_ID)
      return luaL_error(L, "stream id %d is %d bytes long (1 to %d)", (int)i,
                        (int)sl, ODO_MAX_STREAM_ID);
    lua_pop(L, 1);
  }
  odo_sync_out_reset(y);
  odo_sync_section_reset(y);
  for (size_t i = 1; i <= n; i++) {
    size_t sl;
    const char *id;
    sync_want **w;
    lua_rawgeti(L, 3, (lua_Integer)i);
    id = lua_tolstring(L, -1, &sl);
    odo_msg_id_put(&y->section, id, sl);
    w = odo_sync_find_want(p, id, sl);
    if (*w) {
      sync_want *x = *w;
      *w = x->next;
      free(x);
    }
    lua_pop(L, 1);
  }
  {
    odo_msg_unsubscribe msg;
    odo_sync_section_list(y, (uint32_t)n, &msg.ids);
    f = odo_frame_begin(&y->out, ODO_MSG_UNSUBSCRIBE);
    odo_msg_unsubscribe_encode(&y->out, &msg);
    odo_frame_end(&y->out, f);
  }
  lua_pushboolean(L, odo_sync_send_out(y, p, 1));
  return 1;
}

/* Streams in the order their records lie in the store. */
static int by_num(const void *a, const void *b) {
  uint64_t x = (*(odo_stream *const *)a)->num, y = (*(odo_stream *const *)b)->num;
  return x < y ? -1 : x > y;
}

/***
 * Sends our catalogue to a peer: every stream (full) when `ids` is nil,
 * else those streams; `hops` maps a replica's stream id to its distance
 * from the source in hops (absent: no path), `yours` is the set of stream
 * ids this peer is our upstream for. A large catalogue goes out in
 * several frames (the first marked full).
 * @function sync:catalogue
 */
static int l_catalogue(lua_State *L) {
  odo_sync *y = check_sync(L);
  sync_peer *p = check_peer(L, y, 2);
  int full = lua_isnoneornil(L, 3), ok = 1;
  int hops, yours;
  odo_store *s = y->store;
  odo_stream **list;
  size_t nlist = 0;
  unsigned frames = 0;
  if (!full) luaL_checktype(L, 3, LUA_TTABLE);
  if (!lua_isnoneornil(L, 4)) luaL_checktype(L, 4, LUA_TTABLE);
  if (!lua_isnoneornil(L, 5)) luaL_checktype(L, 5, LUA_TTABLE);
  hops = lua_istable(L, 4) ? 4 : 0;
  yours = lua_istable(L, 5) ? 5 : 0;
  /* GC-owned, so a memory error while reading ids leaks nothing */
  list = lua_newuserdatauv(L, (s->nstreams + 1) * sizeof *list, 0);
  odo_sync_out_reset(y);
  if (full) {
    for (size_t i = 0; i < s->nbuckets; i++)
      for (odo_stream *st = s->buckets[i]; st; st = st->next) list[nlist++] = st;
    /* in store order: a peer subscribing to them in this order is served
     * in it, each batch read where the last one ended (a fleet's) */
    qsort(list, nlist, sizeof *list, by_num);
  } else {
    size_t n = lua_rawlen(L, 3);
    for (size_t i = 1; i <= n && nlist < s->nstreams; i++) {
      size_t sl;
      const char *id;
      odo_stream *st;
      lua_rawgeti(L, 3, (lua_Integer)i);
      id = lua_tolstring(L, -1, &sl);
      st = id ? odo_store_find(s, id, sl) : NULL;
      if (st) list[nlist++] = st;
      lua_pop(L, 1);
    }
  }
  frames = odo_sync_catalogue(L, y, list, nlist, full, hops, yours);
  if (frames) ok = odo_sync_send_out(y, p, frames);
  lua_pushboolean(L, ok);
  return 1;
}

/***
 * Sends what subscriptions are owed, while sessions are under their high
 * watermark, at most `budget` frames in all (default 256): first what
 * each subscription owing at most one batch is owed (live traffic), then
 * bulk catch-ups for at most `max_us` microseconds (default 0: no limit),
 * so one turn of the loop never holds live events long; with `tails_only`,
 * no bulk at all (work is left while a subscription is ready).
 * @function sync:pump
 * @tparam[opt] integer budget
 * @tparam[opt] integer max_us
 * @tparam[opt] boolean tails_only
 * @treturn boolean whether work is left (call again on a later turn)
 * @treturn table events: {event = "error", stream, reason}
 */
static int l_pump(lua_State *L) {
  odo_sync *y = check_sync(L);
  lua_Integer budget = luaL_optinteger(L, 2, 256);
  uint64_t max_us = odo_optu64(L, 3, 0, "max_us");
  int tails_only = lua_toboolean(L, 4), more;
  lua_settop(L, 1);
  lua_pushnil(L); /* placeholder for `more` */
  lua_newtable(L);
  more = odo_sync_pump(L, y, (int64_t)budget, max_us * 1000u, tails_only, lua_gettop(L));
  lua_pushboolean(L, more);
  lua_replace(L, -3);
  return 2;
}

/***
 * Signs heads for this node's own streams' unsigned events (events
 * appended while it was stopped included), walking at most `budget`
 * events (default 100000).
 * @function sync:sign_heads
 * @treturn integer heads signed
 * @treturn boolean whether events are left to sign
 */
static int l_sign_heads(lua_State *L) {
  odo_sync *y = check_sync(L);
  uint64_t budget = odo_optu64(L, 2, 100000, "budget");
  odo_store *s = y->store;
  int total = 0, more = 0;
  odo_err e = {0};
  for (size_t i = 0; i < s->nbuckets; i++)
    for (odo_stream *st = s->buckets[i]; st; st = st->next) {
      int n;
      if (!st->own) continue;
      n = odo_sync_sign_stream(y, st, budget, &more, &e);
      if (n < 0) return odo_err_push(L, &e);
      total += n;
    }
  lua_pushinteger(L, total);
  lua_pushboolean(L, more);
  return 2;
}

/***
 * Signs this node's source snapshot of an own stream if it is unsigned
 * (one stored before this engine existed: from now on the store signs
 * each as it is stored).
 * @function sync:sign_snapshot
 * @treturn boolean whether it signed one
 */
static int l_sign_snapshot(lua_State *L) {
  odo_sync *y = check_sync(L);
  size_t len;
  const char *id = luaL_checklstring(L, 2, &len);
  odo_stream *st = odo_store_find(y->store, id, len);
  odo_snapshot_in in;
  char *raw = NULL;
  uint64_t rev;
  odo_err e = {0};
  int rc;
  if (st == NULL || !st->own) return 0;
  rc = odo_snapshot_read(y->store, st, ODO_ORIGIN_SOURCE, &raw, &rev, &in, &e);
  if (rc < 0) return odo_err_push(L, &e);
  if (rc == 0 || in.sig_len > 0) {
    if (raw) leveldb_free(raw);
    lua_pushboolean(L, 0);
    return 1;
  }
  rc = odo_snapshot_store(y->store, st, ODO_ORIGIN_SOURCE, rev, &in, 1, &e);
  leveldb_free(raw);
  if (!rc) return odo_err_push(L, &e);
  lua_pushboolean(L, 1);
  return 1;
}

/***
 * What a peer and this node ask of each other: {serving = {stream =
 * next}, wanted = {stream = true}}.
 * @function sync:info
 */
static int l_info(lua_State *L) {
  odo_sync *y = check_sync(L);
  sync_peer *p = check_peer(L, y, 2);
  lua_createtable(L, 0, 2);
  lua_newtable(L);
  for (sync_sub *s = p->subs; s; s = s->next_sub) {
    lua_pushlstring(L, s->stream, s->len);
    odo_pushu64(L, s->next);
    lua_rawset(L, -3);
  }
  lua_setfield(L, -2, "serving");
  lua_newtable(L);
  for (size_t i = 0; i < ODO_SYNC_WANT_BUCKETS; i++)
    for (sync_want *w = p->wants[i]; w; w = w->next) {
      lua_pushlstring(L, w->stream, w->len);
      lua_pushboolean(L, 1);
      lua_rawset(L, -3);
    }
  lua_setfield(L, -2, "wanted");
  return 1;
}

/***
 * What the engine has sent since it was made: {events_sent, batches_sent,
 * pump_visits} (batches of events to every peer, in catch-up and live;
 * and how many times the pump looked at a subscription: only those that
 * may have something to send are looked at).
 * @function sync:counters
 */
static int l_counters(lua_State *L) {
  odo_sync *y = check_sync(L);
  lua_createtable(L, 0, 3);
  odo_pushu64(L, y->events_sent);
  lua_setfield(L, -2, "events_sent");
  odo_pushu64(L, y->batches_sent);
  lua_setfield(L, -2, "batches_sent");
  odo_pushu64(L, y->pump_visits);
  lua_setfield(L, -2, "pump_visits");
  return 1;
}

/***
 * Tells the pump that streams changed in the store (appends, compaction,
 * snapshots): the peers' subscriptions to them are looked at again. The
 * engine already wakes them for the heads it writes and the batches it
 * stores; this is for changes made beside it.
 * @function sync:wake
 * @tparam[opt] {string,...} ids the streams (none: every subscription)
 */
static int l_wake(lua_State *L) {
  odo_sync *y = check_sync(L);
  if (lua_isnoneornil(L, 2)) {
    for (sync_peer *p = y->peers; p; p = p->next)
      for (sync_sub *s = p->subs; s; s = s->next_sub) odo_sync_wake_sub(p, s);
    return 0;
  }
  luaL_checktype(L, 2, LUA_TTABLE);
  for (lua_Integer i = 1, n = (lua_Integer)lua_rawlen(L, 2); i <= n; i++) {
    size_t len;
    const char *id;
    lua_rawgeti(L, 2, i);
    id = lua_tolstring(L, -1, &len);
    if (id == NULL) return luaL_error(L, "bad stream id at %d (a string expected)", (int)i);
    odo_sync_wake_stream(y, id, len);
    lua_pop(L, 1);
  }
  return 0;
}

static int l_sync_gc(lua_State *L) {
  odo_sync *y = luaL_checkudata(L, 1, ODO_SYNC_CLASS);
  sync_release(L, y);
  return 0;
}

static int l_sync_tostring(lua_State *L) {
  odo_sync *y = luaL_checkudata(L, 1, ODO_SYNC_CLASS);
  int n = 0;
  for (sync_peer *p = y->peers; p; p = p->next) n++;
  lua_pushfstring(L, "odo.sync (%d peers)", n);
  return 1;
}

void odo_sync_open(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"attach", l_attach},           {"detach", l_detach},
      {"handle", l_handle},           {"subscribe", l_subscribe},
      {"unsubscribe", l_unsubscribe}, {"catalogue", l_catalogue},
      {"pump", l_pump},               {"sign_heads", l_sign_heads},
      {"sign_snapshot", l_sign_snapshot}, {"info", l_info},
      {"counters", l_counters},       {"written", l_written},
      {"backlog", l_backlog},         {"wake", l_wake},
      {"close", l_sync_gc},           {NULL, NULL}};
  odo_newclass(L, ODO_SYNC_CLASS, methods, l_sync_gc, l_sync_tostring);
  lua_pushcfunction(L, l_sync);
  lua_setfield(L, -2, "sync");
}
