/* store_events.c - event records: appends by the source, replica appends
 * that must continue the chain, reads of a range, iterators that walk a
 * large range a slice at a time, and chain verification. The event
 * record's layout is records.c's. Just over 600 lines, and one job: the
 * events of a stream, written and read back. */

/***
 * @submodule odo.core
 */
#include <stddef.h>
#include <stdlib.h>

#include "sign.h"
#include "store.h"

static const char *stream_arg(lua_State *L, int idx, size_t *len) {
  return luaL_checklstring(L, idx, len);
}

static int encode_event(odo_store *s, odo_stream *st, const odo_event *ev) {
  uint8_t key[ODO_NUMKEY_LEN];
  odo_numkey(key, ODO_K_EVENT, st->num, ev->rev);
  odo_rec_begin(&s->val);
  odo_rec_event_encode(&s->val, ev);
  return odo_store_put(s, key, sizeof key, &s->val);
}

/* Begins in val the segment record of evs (their hashes computed, after
 * prev), which lie back to back as they travelled, so its body is a copy
 * of those bytes; key is filled. 0 when out of memory. Sealed by the
 * caller. */
static int segment_encode(odo_buf *val, uint64_t num, const uint8_t prev[ODO_HASH_LEN],
                          const odo_event *evs, size_t n, uint8_t key[ODO_SEGKEY_LEN]) {
  const odo_event *last = &evs[n - 1];
  odo_seg_rec sr;
  sr.count = (uint32_t)n;
  sr.prev = prev;
  sr.last = last->hash;
  sr.events = (const uint8_t *)evs[0].type - 8 - 1; /* its ts, its type's length */
  sr.len = (size_t)((const uint8_t *)last->data + last->data_len - sr.events);
  odo_segkey(key, num, last->rev);
  odo_rec_begin(val);
  return odo_rec_segment_encode(val, &sr);
}

static int check_room(odo_stream *st, const odo_cat *c, size_t n,
                      odo_err *e) {
  if (n > ODO_MAX_REV - c->last)
    return odo_err_set(e, "ETOOBIG", "stream %s would pass revision 2^53",
                       st->id);
  return 1;
}

enum { STAGE_OWN, STAGE_CHECK, STAGE_CHAIN, STAGE_SEGMENT };

/* Numbers and chains events i.. of an own append into one segment in
 * s->val (cut as ODO_SEG_MIN_OWN says) and returns where the next one
 * starts; *ok 1, or 0 when SHA-256 failed, -1 when out of memory. */
static size_t own_segment(odo_store *s, odo_cat *c, odo_event *evs, size_t i, size_t n,
                          int *ok) {
  size_t first = i, bytes = 0;
  odo_rec_begin(&s->val);
  odo_rec_segment_begin(&s->val, c->hash);
  *ok = 1;
  for (;;) {
    odo_event *ev = &evs[i++];
    ev->rev = c->last + 1;
    if (!odo_chain_next(&s->hasher, c->hash, ev, ev->hash) && *ok == 1) *ok = 0;
    memcpy(c->hash, ev->hash, ODO_HASH_LEN);
    c->last++;
    bytes += ev->type_len + ev->data_len;
    odo_event_encode(&s->val, ev, 0);
    if (i == n || ev->rev % ODO_SEG_CUT_EVENTS == 0 ||
        bytes + evs[i].type_len + evs[i].data_len > ODO_SEG_MAX_BYTES)
      break;
  }
  odo_rec_segment_end(&s->val, (uint32_t)(i - first), c->hash);
  if (s->val.failed) *ok = -1;
  return i;
}

/* An own append of many events, as segments (one record for a lone
 * event a cut leaves). */
static int stage_own_segments(odo_store *s, odo_stream *st, odo_cat *c, odo_event *evs,
                              size_t n, odo_err *e) {
  size_t i = 0;
  while (i < n) {
    uint8_t key[ODO_SEGKEY_LEN];
    int ok;
    size_t j = own_segment(s, c, evs, i, n, &ok);
    if (ok != 1)
      return (s->txn_failed = 1), ok == 0 ? odo_err_set(e, "EIO", "SHA-256 failed")
                                          : odo_err_set(e, "ENOMEM", "out of memory encoding events");
    if (j - i == 1) {
      if (!encode_event(s, st, &evs[i]))
        return (s->txn_failed = 1), odo_err_set(e, "ENOMEM", "out of memory encoding an event");
    } else {
      odo_segkey(key, st->num, evs[j - 1].rev);
      if (!odo_store_put(s, key, sizeof key, &s->val))
        return (s->txn_failed = 1), odo_err_set(e, "ENOMEM", "out of memory encoding events");
    }
    i = j;
  }
  return 1;
}

/* Adds events to the open transaction after the stream's last revision:
 * STAGE_OWN numbers them (the source appending); STAGE_CHECK and
 * STAGE_CHAIN take their revisions, which must continue the stream, and
 * either check the chain hash each carries or compute it; STAGE_SEGMENT
 * computes them too, and stores the events (back to back as they
 * travelled) as one segment. */
static int stage(odo_store *s, odo_stream *st, odo_event *evs, size_t n,
                 int mode, odo_err *e) {
  odo_cat *c;
  uint8_t h[ODO_HASH_LEN], prev[ODO_HASH_LEN];
  char hex[2 * ODO_HASH_LEN + 1];
  if (mode == STAGE_OWN && !st->own)
    return odo_err_set(e, "ENOTSOURCE",
                       "this node (%s) is not the source of stream %s; only "
                       "its source appends to it",
                       s->node_id, st->id);
  if (mode != STAGE_OWN && st->own)
    return odo_err_set(e, "ESOURCE",
                       "this node is the source of stream %s; it never "
                       "accepts that stream's events from elsewhere",
                       st->id);
  c = odo_txn_touch(s, st);
  if (c == NULL) return odo_err_set(e, "ENOMEM", "out of memory");
  if (!check_room(st, c, n, e)) return 0;
  if (mode == STAGE_OWN && n >= ODO_SEG_MIN_OWN) return stage_own_segments(s, st, c, evs, n, e);
  memcpy(prev, c->hash, ODO_HASH_LEN);
  for (size_t i = 0; i < n; i++) {
    if (mode == STAGE_OWN)
      evs[i].rev = c->last + 1;
    else if (evs[i].rev != c->last + 1)
      return odo_err_set(e, "EGAP",
                         "stream %s is at revision %llu; event %llu does not "
                         "continue it (expected %llu)",
                         st->id, (unsigned long long)c->last,
                         (unsigned long long)evs[i].rev,
                         (unsigned long long)(c->last + 1));
    /* a group half staged must not be written: fail the transaction */
    if (!odo_chain_next(&s->hasher, c->hash, &evs[i], h))
      return (s->txn_failed = 1), odo_err_set(e, "EIO", "SHA-256 failed");
    if (mode == STAGE_CHECK && memcmp(h, evs[i].hash, ODO_HASH_LEN) != 0) {
      odo_hex(h, ODO_HASH_LEN, hex);
      return odo_err_set(e, "ECHAIN",
                         "event %llu of stream %s does not match its chain "
                         "hash (computed %s); it is not what the source wrote",
                         (unsigned long long)evs[i].rev, st->id, hex);
    }
    memcpy(evs[i].hash, h, ODO_HASH_LEN);
    if (mode != STAGE_SEGMENT && !encode_event(s, st, &evs[i]))
      return (s->txn_failed = 1),
             odo_err_set(e, "ENOMEM", "out of memory encoding an event");
    memcpy(c->hash, h, ODO_HASH_LEN);
    c->last++;
  }
  if (mode == STAGE_SEGMENT) {
    uint8_t key[ODO_SEGKEY_LEN];
    if (!segment_encode(&s->val, st->num, prev, evs, n, key) ||
        !odo_store_put(s, key, sizeof key, &s->val))
      return (s->txn_failed = 1),
             odo_err_set(e, "ENOMEM", "out of memory encoding a segment");
  }
  return 1;
}

int odo_stage_own(odo_store *s, odo_stream *st, odo_event *evs, size_t n,
                  odo_err *e) {
  return stage(s, st, evs, n, STAGE_OWN, e);
}

int odo_stage_replica(odo_store *s, odo_stream *st, odo_event *evs, size_t n,
                      odo_err *e) {
  return stage(s, st, evs, n, STAGE_CHECK, e);
}

int odo_stage_chain(odo_store *s, odo_stream *st, odo_event *evs, size_t n,
                    int packed, odo_err *e) {
  return stage(s, st, evs, n, packed && n >= ODO_SEG_MIN_EVENTS ? STAGE_SEGMENT : STAGE_CHAIN, e);
}

void odo_chain_free(odo_chain *c) {
  if (c == NULL) return;
  EVP_PKEY_free(c->key);
  free(c);
}

/* Whether the chain's head is signed by its source's key (or no key is
 * given); 0 with e set (EVERIFY). */
static int chain_head_signed(const odo_chain *c, odo_err *e) {
  uint8_t msg[ODO_SIGNED_MAX];
  size_t mlen;
  if (c->key == NULL) return 1;
  mlen = odo_head_message(msg, c->stream, c->stream_len, c->head_rev, c->head);
  if (c->sig_len == 0 || !odo_verify(c->key, msg, mlen, c->sig, c->sig_len))
    return odo_err_set(e, "EVERIFY",
                       "the head at %llu of stream %.*s is not signed by its "
                       "source",
                       (unsigned long long)c->head_rev, (int)c->stream_len, c->stream);
  return 1;
}

int odo_chain_check(odo_hasher *h, odo_chain *c, odo_err *e) {
  const uint8_t *prev = c->prev;
  odo_event ev;
  odo_rd r;
  if (!chain_head_signed(c, e)) return 0; /* first, as a loop's check was */
  odo_rd_init(&r, c->events, c->len);
  for (size_t i = 0; i < c->n; i++) {
    ev.rev = c->first + i;
    if (!odo_event_decode(&r, &ev, 0)) return odo_err_set(e, "EIO", "a received batch is cut short");
    if (!odo_chain_next(h, prev, &ev, c->last)) return odo_err_set(e, "EIO", "SHA-256 failed");
    prev = c->last;
  }
  if (c->n == 0 || memcmp(prev, c->head, ODO_HASH_LEN) != 0)
    return odo_err_set(e, "EVERIFY",
                       "events %llu to %llu of stream %.*s do not chain to their "
                       "signed head: they are not what the source wrote",
                       (unsigned long long)c->first,
                       (unsigned long long)(c->first + c->n - 1),
                       (int)c->stream_len, c->stream);
  return 1;
}

int odo_chain_put(odo_buf *val, const odo_chain *c, leveldb_writebatch_t *b,
                  odo_err *e) {
  uint8_t key[ODO_SEGKEY_LEN];
  uint64_t last = c->first + c->n - 1;
  if (c->n == 1) { /* a lone event: its own record */
    odo_event ev;
    odo_rd r;
    odo_rd_init(&r, c->events, c->len);
    ev.rev = last;
    odo_event_decode(&r, &ev, 0);
    memcpy(ev.hash, c->last, ODO_HASH_LEN);
    odo_numkey(key, ODO_K_EVENT, c->num, last);
    odo_rec_begin(val);
    if (!odo_rec_event_encode(val, &ev) || !odo_rec_seal(val, key, ODO_NUMKEY_LEN))
      return odo_err_set(e, "ENOMEM", "out of memory encoding an event");
    leveldb_writebatch_put(b, (const char *)key, ODO_NUMKEY_LEN, (const char *)val->p, val->len);
  } else {
    odo_seg_rec sr;
    sr.count = (uint32_t)c->n;
    sr.prev = c->prev;
    sr.last = c->last;
    sr.events = c->events;
    sr.len = c->len;
    odo_segkey(key, c->num, last);
    odo_rec_segment_frame(&sr, key, sizeof key);
    leveldb_writebatch_put(b, (const char *)key, sizeof key,
                           (const char *)c->events - ODO_SEG_ROOM, ODO_SEG_ROOM + c->len);
  }
  return 1;
}

/* Reads the event array at idx into a GC-managed odo_event array pushed on
 * the stack (so a raise while reading leaks nothing). Returns NULL with msg
 * set when an event breaks a limit. */
static odo_event *check_events(lua_State *L, int idx, size_t *n,
                               int replica, odo_err *e) {
  size_t count, total = 0;
  odo_event *evs;
  uint64_t now = odo_now_ms();
  luaL_checktype(L, idx, LUA_TTABLE);
  count = lua_rawlen(L, idx);
  if (count > ODO_MAX_BATCH_EVENTS) {
    odo_err_set(e, "ETOOBIG", "%zu events in one batch; the limit is %d",
                count, ODO_MAX_BATCH_EVENTS);
    return NULL;
  }
  evs = lua_newuserdatauv(L, (count ? count : 1) * sizeof *evs, 0);
  for (size_t i = 0; i < count; i++) {
    int ok;
    lua_rawgeti(L, idx, (lua_Integer)i + 1);
    ok = odo_check_event(L, lua_gettop(L), &evs[i], now, e);
    if (replica) {
      size_t hl;
      const char *h;
      evs[i].rev = odo_fieldu64(L, -1, "rev", 0);
      lua_getfield(L, -1, "hash");
      h = lua_tolstring(L, -1, &hl);
      if (h == NULL || hl != ODO_HASH_LEN)
        luaL_error(L, "replica event %d needs rev and a 32-byte hash",
                   (int)i + 1);
      memcpy(evs[i].hash, h, ODO_HASH_LEN);
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
    if (!ok) return NULL;
    total += evs[i].data_len;
    if (total > ODO_MAX_BATCH_BYTES) {
      odo_err_set(e, "ETOOBIG",
                  "a batch carries over %u bytes of data; split it",
                  ODO_MAX_BATCH_BYTES);
      return NULL;
    }
  }
  *n = count;
  return evs;
}

static int sync_opt(lua_State *L, odo_store *s, int idx) {
  return lua_istable(L, idx) ? odo_fieldbool(L, idx, "sync", s->sync_default)
                             : s->sync_default;
}

/* Reads a group (stream id at sidx, events at eidx, options at oidx or
 * 0); pushes the events' userdata, which must stay on the stack or be
 * anchored while g is used. Raises on wrong argument types. */
static void prepare_group(lua_State *L, odo_store *s, int sidx, int eidx,
                          int oidx, odo_group *g) {
  memset(g, 0, sizeof *g);
  if (lua_isnil(L, sidx)) {
    g->id = s->node_id;
    g->len = s->node_len;
  } else {
    g->id = stream_arg(L, sidx, &g->len);
  }
  if (oidx) {
    lua_getfield(L, oidx, "expected");
    g->has_expected = !lua_isnil(L, -1);
    if (g->has_expected) g->expected = odo_checku64(L, -1, "expected");
    lua_pop(L, 1);
  }
  g->evs = check_events(L, eidx, &g->n, 0, &g->e);
  if (g->evs == NULL) lua_pushnil(L); /* keep one slot either way */
}

static uint64_t staged_last(odo_store *s, const odo_group *g) {
  odo_stream *st = odo_store_find(s, g->id, g->len);
  return st ? odo_stream_tip(st)->last : 0;
}

static int stage_group_events(odo_store *s, odo_group *g) {
  odo_err *e = &g->e;
  odo_stream *st;
  if (g->evs == NULL) return 0;
  /* the expected revision is checked against what the writer wrote */
  odo_store_settle(s, odo_store_find(s, g->id, g->len));
  if (g->has_expected) {
    uint64_t last = staged_last(s, g);
    if (g->expected != last)
      return odo_err_set(e, "ECONFLICT",
                         "stream %.*s is at revision %llu, not the expected "
                         "%llu; nothing was written",
                         (int)g->len, g->id, (unsigned long long)last,
                         (unsigned long long)g->expected);
  }
  if (g->n == 0) return 1;
  if (odo_store_find(s, g->id, g->len) == NULL &&
      !odo_store_own_id(s, g->id, g->len))
    return odo_err_set(e, "ENOTSOURCE",
                       "this node (%s) is not the source of stream %.*s; "
                       "only its source appends to it",
                       s->node_id, (int)g->len, g->id);
  st = odo_store_stream(s, g->id, g->len, 1, e);
  return st != NULL && odo_stage_own(s, st, g->evs, g->n, e);
}

/* Stages a prepared group into the open transaction; never raises. */
static int stage_group(odo_store *s, odo_group *g) {
  int ok = stage_group_events(s, g);
  if (ok) g->last = staged_last(s, g);
  return ok;
}

/***
 * Appends events to a stream this node is the source of, in one atomic
 * write.
 * @function append
 * @tparam ?string stream full stream id (nil: the node's own stream)
 * @tparam table events array of {type=, data=, ts=}
 * @tparam[opt] table opts `expected` (revision the stream must be at),
 *   `sync` (default: the store's)
 * @treturn integer the stream's new last revision
 * @treturn[2] nil
 * @treturn[2] string "ECONFLICT: ...", "ETOOBIG: ...", ...
 */
int odo_store_l_append(lua_State *L) {
  odo_store *s = odo_store_check(L, 1);
  odo_group g;
  int sync;
  if (!lua_isnil(L, 2)) luaL_checktype(L, 2, LUA_TSTRING);
  if (!lua_isnoneornil(L, 4)) luaL_checktype(L, 4, LUA_TTABLE);
  sync = sync_opt(L, s, 4);
  prepare_group(L, s, 2, 3, lua_istable(L, 4) ? 4 : 0, &g);
  odo_txn_begin(s);
  if (!stage_group(s, &g) || !odo_txn_commit(s, sync, &g.e)) {
    odo_txn_abort(s);
    return odo_err_push(L, &g.e);
  }
  odo_pushu64(L, g.last);
  return 1;
}

/***
 * Appends several groups in one atomic write and one sync (group commit).
 * A group that fails its expected revision or a limit is skipped, and
 * says why in its result; the others are written. A failure of the write
 * itself fails every group.
 * @function append_many
 * @tparam table groups array of {stream=, events=, expected=}
 * @tparam[opt] table opts `sync`
 * @treturn table per group: the new last revision, or "NAME: message"
 */
int odo_store_l_append_many(lua_State *L) {
  odo_store *s = odo_store_check(L, 1);
  odo_err e = {0};
  size_t n;
  int sync;
  odo_group *gs;
  if (!lua_isnoneornil(L, 3)) luaL_checktype(L, 3, LUA_TTABLE);
  sync = sync_opt(L, s, 3);
  gs = odo_read_groups(L, s, 2, &n);
  odo_stage_groups(s, gs, n);
  if (!odo_txn_commit(s, sync, &e)) return odo_err_push(L, &e);
  odo_push_group_results(L, gs, n);
  return 1;
}

odo_group *odo_read_groups(lua_State *L, odo_store *s, int idx, size_t *count) {
  size_t n;
  int anchors;
  odo_group *gs;
  luaL_checktype(L, idx, LUA_TTABLE);
  n = lua_rawlen(L, idx);
  gs = lua_newuserdatauv(L, (n ? n : 1) * sizeof *gs, 0);
  lua_createtable(L, (int)n, 0); /* keeps each group's events alive */
  anchors = lua_gettop(L);
  for (size_t i = 0; i < n; i++) {
    int g;
    lua_rawgeti(L, idx, (lua_Integer)i + 1);
    if (!lua_istable(L, -1))
      luaL_error(L, "group %d is a %s, not a table", (int)i + 1,
                 luaL_typename(L, -1));
    g = lua_gettop(L);
    lua_getfield(L, g, "stream");
    if (!lua_isnil(L, -1)) luaL_checktype(L, -1, LUA_TSTRING);
    lua_getfield(L, g, "events");
    prepare_group(L, s, g + 1, g + 2, g, &gs[i]);
    lua_rawseti(L, anchors, (lua_Integer)i + 1); /* the events */
    lua_settop(L, g + 1);
    lua_rawseti(L, anchors, (lua_Integer)(n + i + 1)); /* the stream id */
    lua_settop(L, anchors);
  }
  *count = n;
  return gs;
}

void odo_stage_groups(odo_store *s, odo_group *gs, size_t n) {
  odo_txn_begin(s);
  for (size_t i = 0; i < n; i++) stage_group(s, &gs[i]);
}

void odo_push_group_results(lua_State *L, const odo_group *gs, size_t n) {
  lua_createtable(L, (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    if (gs[i].e.name)
      lua_pushfstring(L, "%s: %s", gs[i].e.name, gs[i].e.msg);
    else
      odo_pushu64(L, gs[i].last);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
}

/***
 * Appends events received from another node: they must continue the
 * stream at last + 1 and match their chain hashes, else nothing is written.
 * @function append_replica
 * @tparam string stream
 * @tparam table events array of {rev=, ts=, type=, data=, hash=}
 * @tparam[opt] table opts `sync`
 */
int odo_store_l_append_replica(lua_State *L) {
  odo_store *s = odo_store_check(L, 1);
  size_t len, n = 0;
  const char *id = stream_arg(L, 2, &len);
  odo_err e = {0};
  odo_event *evs = check_events(L, 3, &n, 1, &e);
  odo_stream *st;
  if (evs == NULL) return odo_err_push(L, &e);
  odo_txn_begin(s);
  st = odo_store_stream(s, id, len, n > 0, &e);
  if (n > 0 && (st == NULL || !odo_stage_replica(s, st, evs, n, &e) ||
                !odo_txn_commit(s, sync_opt(L, s, 4), &e))) {
    odo_txn_abort(s);
    return odo_err_push(L, &e);
  }
  odo_txn_abort(s);
  st = odo_store_find(s, id, len);
  odo_pushu64(L, st ? st->cat.last : 0);
  return 1;
}

/* ---- reading ----------------------------------------------------------- */

/* Reads up to limit events from r into a new Lua array on the stack.
 * Returns the count, or -1 with e set (nothing pushed). */
static long read_into(lua_State *L, odo_reader *r, uint64_t limit,
                      int with_hash, odo_err *e) {
  odo_event ev;
  long n = 0;
  uint64_t want = r->to >= r->next ? r->to - r->next + 1 : 0;
  if (want > limit) want = limit;
  lua_createtable(L, want < 65536 ? (int)want : 65536, 0);
  while ((uint64_t)n < limit) {
    int rc = odo_reader_next(r, &ev, e);
    if (rc < 0) {
      lua_pop(L, 1);
      return -1;
    }
    if (rc == 0) break;
    odo_push_event(L, &ev, with_hash);
    lua_rawseti(L, -2, ++n);
  }
  return n;
}

/***
 * Reads events from..to (inclusive), at most limit of them, as one array.
 * @function read
 * @tparam string stream
 * @tparam[opt] integer from default: the first revision held
 * @tparam[opt] integer to default: the last revision
 * @tparam[opt] integer limit default: no limit
 * @tparam[opt] boolean with_hash default true: include each event's hash
 * @treturn table array of {rev, ts, type, data, hash}
 * @treturn[2] nil
 * @treturn[2] string "ECOMPACTED: ..." or "ECORRUPT: ..."
 */
int odo_store_l_read(lua_State *L) {
  odo_store *s = odo_store_check(L, 1);
  size_t len;
  const char *id = stream_arg(L, 2, &len);
  odo_stream *st = odo_store_find(s, id, len);
  uint64_t from, to, limit;
  odo_reader r;
  odo_err e = {0};
  long n;
  if (st == NULL) {
    lua_newtable(L);
    return 1;
  }
  from = odo_optu64(L, 3, st->cat.first, "from");
  to = odo_optu64(L, 4, st->cat.last, "to");
  limit = odo_optu64(L, 5, UINT64_MAX, "limit");
  if (!odo_reader_open(s, st, from, to, &r, &e)) return odo_err_push(L, &e);
  n = read_into(L, &r, limit, lua_isnoneornil(L, 6) || lua_toboolean(L, 6), &e);
  odo_reader_close(&r);
  if (n < 0) return odo_err_push(L, &e);
  return 1;
}

/* ---- iterators ----------------------------------------------------------- */

/* An open iterator holds a LevelDB iterator: it is one of the store's
 * dependents, closed when the store closes first. */
typedef struct odo_iter {
  odo_reader r;
  odo_store *store;
  odo_dependent dep;
  int open;
} odo_iter;

static void iter_unlink(odo_iter *it) {
  if (!it->open) return;
  odo_reader_close(&it->r);
  odo_store_remove_dependent(it->store, &it->dep);
  it->open = 0;
}

static void iter_dep_release(odo_dependent *d) {
  iter_unlink((odo_iter *)((char *)d - offsetof(odo_iter, dep)));
}

/***
 * An iterator over a large range that holds one slice at a time.
 * @function iter
 * @tparam string stream
 * @tparam[opt] integer from
 * @tparam[opt] integer to default: the last revision now
 * @treturn odo.store.iterator with `next(n)` and `close()`
 */
int odo_store_l_iter(lua_State *L) {
  odo_store *s = odo_store_check(L, 1);
  size_t len;
  const char *id = stream_arg(L, 2, &len);
  odo_stream *st = odo_store_find(s, id, len);
  odo_iter *it;
  odo_err e = {0};
  uint64_t from = odo_optu64(L, 3, st ? st->cat.first : 1, "from");
  uint64_t to = odo_optu64(L, 4, st ? st->cat.last : 0, "to");
  it = lua_newuserdatauv(L, sizeof *it, 1);
  memset(it, 0, sizeof *it);
  luaL_setmetatable(L, ODO_ITER_CLASS);
  if (st && !odo_reader_open(s, st, from, to, &it->r, &e))
    return odo_err_push(L, &e);
  it->store = s;
  it->open = 1;
  it->dep.release = iter_dep_release;
  odo_store_add_dependent(s, &it->dep);
  lua_pushvalue(L, 1); /* the iterator keeps its store alive */
  odo_setuservalue(L, -2);
  return 1;
}

static odo_iter *check_iter(lua_State *L) {
  odo_iter *it = luaL_checkudata(L, 1, ODO_ITER_CLASS);
  if (!it->open) luaL_error(L, "attempt to use a closed iterator");
  return it;
}

/***
 * The next slice of at most n events (default 1000), or nil at the end.
 * @function iterator:next
 */
static int l_iter_next(lua_State *L) {
  odo_iter *it = check_iter(L);
  uint64_t n = odo_optu64(L, 2, 1000, "n");
  odo_err e = {0};
  long got = read_into(L, &it->r, n ? n : 1, 1, &e);
  if (got < 0) return odo_err_push(L, &e);
  if (got == 0) {
    iter_unlink(it);
    lua_pushnil(L);
  }
  return 1;
}

static int l_iter_close(lua_State *L) {
  odo_iter *it = luaL_checkudata(L, 1, ODO_ITER_CLASS);
  iter_unlink(it);
  return 0;
}

static int l_iter_tostring(lua_State *L) {
  odo_iter *it = luaL_checkudata(L, 1, ODO_ITER_CLASS);
  lua_pushfstring(L, "odo.store.iterator (%s)", it->open ? "open" : "closed");
  return 1;
}

void odo_iter_register(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"next", l_iter_next}, {"close", l_iter_close}, {NULL, NULL}};
  odo_newclass(L, ODO_ITER_CLASS, methods, l_iter_close, l_iter_tostring);
}

/* ---- hashes and verification -------------------------------------------- */

int odo_store_hash_at(odo_store *s, odo_stream *st, uint64_t rev,
                      uint8_t out[ODO_HASH_LEN], odo_err *e) {
  odo_reader r;
  odo_event ev;
  int rc;
  if (rev + 1 == st->cat.first) {
    memcpy(out, st->cat.base, ODO_HASH_LEN);
    return 1;
  }
  if (rev < st->cat.first || rev > st->cat.last) return 0;
  if (rev == st->cat.last) {
    memcpy(out, st->cat.hash, ODO_HASH_LEN);
    return 1;
  }
  if (!odo_reader_open(s, st, rev, rev, &r, e)) return -1;
  /* a segment's last event: its stored hash, none of its events hashed */
  if (odo_reader_segment_end_hash(&r, out)) {
    rc = 1;
  } else {
    rc = odo_reader_next(&r, &ev, e);
    if (rc == 1) memcpy(out, ev.hash, ODO_HASH_LEN);
  }
  odo_reader_close(&r);
  return rc;
}

/***
 * Recomputes a stream's chain over the events it holds and checks it
 * against the stored hashes, the catalogue and the snapshots.
 * @function verify
 * @tparam string stream
 * @treturn true
 * @treturn[2] nil
 * @treturn[2] string "ECORRUPT: ..." naming the first bad revision
 * @treturn[2] string "ECORRUPT"
 * @treturn[2] integer the first bad revision
 */
int odo_store_l_verify(lua_State *L) {
  odo_store *s = odo_store_check(L, 1);
  size_t len;
  const char *id = stream_arg(L, 2, &len);
  odo_stream *st = odo_store_find(s, id, len);
  uint8_t h[ODO_HASH_LEN], computed[ODO_HASH_LEN];
  odo_reader r;
  odo_event ev;
  odo_err e = {0};
  uint64_t bad = 0;
  int rc;
  if (st == NULL) return odo_fail(L, "ENOENT", "no stream %s", id);
  memcpy(h, st->cat.base, ODO_HASH_LEN);
  if (!odo_reader_open(s, st, st->cat.first, st->cat.last, &r, &e))
    return odo_err_push(L, &e);
  while ((rc = odo_reader_next(&r, &ev, &e)) == 1) {
    if (!odo_chain_next(&s->hasher, h, &ev, computed)) {
      odo_reader_close(&r);
      return luaL_error(L, "SHA-256 failed");
    }
    if (memcmp(computed, ev.hash, ODO_HASH_LEN) != 0) {
      bad = ev.rev;
      odo_err_set(&e, "ECORRUPT",
                  "stream %s: event %llu does not match its chain hash", id,
                  (unsigned long long)bad);
      break;
    }
    memcpy(h, computed, ODO_HASH_LEN);
  }
  odo_reader_close(&r);
  if (rc < 0) bad = r.seg_last ? r.seg_first : r.next; /* a segment: its first */
  if (!bad && rc == 0 && memcmp(h, st->cat.hash, ODO_HASH_LEN) != 0) {
    bad = st->cat.last;
    odo_err_set(&e, "ECORRUPT",
                "stream %s: the catalogue's head hash does not match event "
                "%llu",
                id, (unsigned long long)bad);
  }
  for (int origin = ODO_ORIGIN_SOURCE; !bad && origin <= ODO_ORIGIN_LOCAL;
       origin++) {
    uint64_t srev;
    uint8_t sh[ODO_HASH_LEN], held[ODO_HASH_LEN];
    int got = odo_snapshot_meta(s, st, origin, &srev, sh, &e);
    if (got < 0) {
      bad = st->cat.first;
      break;
    }
    if (got == 1 && odo_store_hash_at(s, st, srev, held, &e) == 1 &&
        memcmp(held, sh, ODO_HASH_LEN) != 0) {
      bad = srev;
      odo_err_set(&e, "ECORRUPT",
                  "stream %s: the %s snapshot at %llu does not match the "
                  "chain",
                  id, origin == ODO_ORIGIN_SOURCE ? "source" : "local",
                  (unsigned long long)srev);
    }
  }
  if (bad) {
    odo_err_push(L, &e);
    odo_pushu64(L, bad);
    return 4;
  }
  lua_pushboolean(L, 1);
  return 1;
}
