/* sync_recv.c - the receiving half of the sync engine: each message a
 * peer sends is decoded whole (sync_msg.c) before any of it is acted on.
 * A CATALOGUE binds the source keys it offers (only to the source each
 * hashes to); SUBSCRIBE and UNSUBSCRIBE change what we serve; an EVENTS
 * batch is checked (it continues the stream at last + 1, its chain hashes
 * end at the head's hash, the head carries the source's signature) before
 * it is written with its head in one write (pipelined when the store has
 * a writer: see queue_events; small live batches are written at once, see
 * write_here); SNAPSHOT chunks are assembled
 * and the whole snapshot verified against the source's signature before
 * it is stored. Nothing unverified reaches the store. What happened goes
 * to Lua as notes; a peer that broke the protocol gets a "violation" note
 * (Lua ends the session with BYE `code`). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "sync.h"

/* A batch this small is live traffic: written at once when it can be
 * (write_here), else queued ahead of bulk batches (queue_events). */
#define ODO_LIVE_BATCH_BYTES 8192u

/* A peer sent something wrong: the session ends with `code` (Lua reports
 * and decides what happens to the peer). */
static void violation(lua_State *L, int ev, const char *stream, size_t len,
                      const char *code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 6, 7)))
#endif
    ;

static void violation(lua_State *L, int ev, const char *stream, size_t len,
                      const char *code, const char *fmt, ...) {
  char msg[400];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  odo_sync_note(L, "violation", stream, len);
  lua_pushstring(L, code);
  lua_setfield(L, -2, "code");
  lua_pushstring(L, msg);
  lua_setfield(L, -2, "reason");
  odo_sync_note_end(L, ev);
}

/* A violation in a batch of stream id from p. While earlier batches of
 * that stream are on their way to the disk, the writer's thread may still
 * refuse one of them (a head not signed by its source): the note waits
 * behind them, so Lua hears the first wrong thing first, and nothing more
 * of p is taken meanwhile. Otherwise as violation(). */
static void refuse(lua_State *L, int ev, odo_sync *y, sync_peer *p, const char *id,
                   size_t len, const char *code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 8, 9)))
#endif
    ;

/* The chain of what is held for stream id (a few in flight at a time:
 * thousands of a fleet's streams cost no walk of each other's). */
static sync_written **held_chain(odo_sync *y, const char *id, size_t len) {
  return &y->held[odo_sync_bucket(id, len)];
}

/* Holds w (a CAUGHT_UP or a refusal) until its stream's writes in flight
 * are done, after what its stream has held already. */
static void hold(odo_sync *y, sync_written *w) {
  sync_written **pp = held_chain(y, w->stream, w->len);
  while (*pp) pp = &(*pp)->next;
  *pp = w;
}

static void refuse(lua_State *L, int ev, odo_sync *y, sync_peer *p, const char *id,
                   size_t len, const char *code, const char *fmt, ...) {
  odo_stream *st = y->writes ? odo_store_find(y->store, id, len) : NULL;
  sync_written *w = st && st->inflight ? calloc(1, sizeof *w) : NULL;
  va_list ap;
  va_start(ap, fmt);
  if (w) vsnprintf(w->e.msg, sizeof w->e.msg, fmt, ap);
  else {
    char msg[sizeof w->e.msg];
    vsnprintf(msg, sizeof msg, fmt, ap);
    violation(L, ev, id, len, code, "%s", msg);
  }
  va_end(ap);
  if (w == NULL) return;
  w->code = code;
  w->e.name = "EREFUSED";
  w->y = y;
  snprintf(w->peer, sizeof w->peer, "%s", p->id);
  memcpy(w->stream, id, len);
  w->len = len;
  hold(y, w);
  p->halted = 1;
}

/* ---- CATALOGUE -------------------------------------------------------------- */

/* Stages the source key an entry offers, when valid and not yet known;
 * returns whether it did. */
static int bind_offered_key(odo_sync *y, const odo_msg_cat_entry *c,
                            const odo_msg_list *keys, const size_t *key_off) {
  odo_rd kr;
  size_t src = odo_sync_source_len(c->id, c->id_len), kl;
  const uint8_t *der;
  odo_err e = {0};
  EVP_PKEY *key;
  if (c->key == ODO_MSG_NO_KEY || c->key >= keys->count) return 0;
  odo_rd_init(&kr, keys->p + key_off[c->key], keys->len - key_off[c->key]);
  if (!odo_msg_key_next(&kr, &der, &kl) ||
      odo_sync_source_key(y, c->id, src, &e) != NULL)
    return 0;
  key = odo_source_key(der, kl, c->id, src, &e);
  if (key == NULL) return 0; /* not the key of that source: ignored */
  EVP_PKEY_free(key);
  odo_stage_key(y->store, c->id, src, der, kl);
  return 1;
}

static void push_cat_entry(lua_State *L, const odo_msg_cat_entry *c) {
  lua_createtable(L, 0, 6);
  lua_pushlstring(L, c->id, c->id_len);
  lua_setfield(L, -2, "id");
  odo_pushu64(L, c->first);
  lua_setfield(L, -2, "first");
  odo_pushu64(L, c->last);
  lua_setfield(L, -2, "last");
  odo_pushu64(L, c->snap);
  lua_setfield(L, -2, "snapshot");
  lua_pushboolean(L, c->flags & ODO_CAT_SOURCE);
  lua_setfield(L, -2, "source");
  lua_pushboolean(L, c->hops == 1);
  lua_setfield(L, -2, "direct");
  lua_pushboolean(L, (c->flags & ODO_CAT_FOLLOWS_YOU) != 0);
  lua_setfield(L, -2, "follows_you");
  lua_pushinteger(L, c->hops);
  lua_setfield(L, -2, "hops");
  odo_pushu64(L, c->fresh);
  lua_setfield(L, -2, "fresh");
}

/* A malformed CATALOGUE binds no key and reports no entry. The keys it
 * offers are stored in one write. */
static void on_catalogue(lua_State *L, int ev, odo_sync *y, const uint8_t *p,
                         size_t n) {
  odo_msg_catalogue m;
  odo_msg_cat_entry c;
  odo_rd r;
  size_t *key_off;
  uint8_t *staged; /* per key: staged for its source in this frame */
  odo_err e = {0};
  unsigned bound = 0;
  uint32_t nkeys;
  if (!odo_msg_catalogue_decode(p, n, &m, &e))
    return violation(L, ev, NULL, 0, "protocol", "%s", e.msg);
  nkeys = m.keys.count;
  /* GC-owned: freed whatever a Lua call below raises */
  key_off = lua_newuserdatauv(L, (nkeys + 1u) * (sizeof *key_off + 1), 0);
  staged = (uint8_t *)(key_off + nkeys + 1);
  memset(staged, 0, nkeys + 1u);
  odo_rd_init(&r, m.keys.p, m.keys.len);
  for (uint32_t i = 0; i < nkeys; i++) {
    const uint8_t *der;
    size_t kl;
    key_off[i] = r.pos;
    odo_msg_key_next(&r, &der, &kl);
  }
  odo_txn_begin(y->store);
  odo_rd_init(&r, m.entries.p, m.entries.len);
  for (uint32_t i = 0; i < m.entries.count; i++) {
    odo_msg_cat_entry_next(&r, &c);
    /* a key binds only to the source it hashes to: once staged, the other
     * entries of that source have it (staged keys are not read back) */
    if (c.key < nkeys && staged[c.key]) continue;
    if (bind_offered_key(y, &c, &m.keys, key_off)) {
      staged[c.key] = 1;
      bound++;
    }
  }
  if (bound == 0) {
    odo_txn_abort(y->store);
  } else if (!odo_txn_commit(y->store, 0, &e)) {
    lua_pop(L, 1);
    return violation(L, ev, NULL, 0, "local", "%s: %s", e.name, e.msg);
  }
  odo_sync_note(L, "catalogue", NULL, 0);
  lua_pushboolean(L, m.flags & 1);
  lua_setfield(L, -2, "full");
  lua_createtable(L, (int)m.entries.count, 0);
  odo_rd_init(&r, m.entries.p, m.entries.len);
  for (uint32_t i = 0; i < m.entries.count; i++) {
    odo_msg_cat_entry_next(&r, &c);
    push_cat_entry(L, &c);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  lua_setfield(L, -2, "entries");
  odo_sync_note_end(L, ev);
  lua_pop(L, 1); /* key_off */
}

/* ---- SUBSCRIBE, UNSUBSCRIBE --------------------------------------------------- */

/* Whether a peer's requests may still make us answer: a peer that asks
 * while it reads nothing would grow our output without bound. */
static int may_answer(sync_peer *p) {
  return odo_session_queued(p->s) < 2 * p->s->high;
}

static void on_subscribe(lua_State *L, int ev, odo_sync *y, sync_peer *p,
                         const uint8_t *b, size_t n) {
  odo_msg_subscribe m;
  odo_msg_sub_entry s;
  odo_rd r;
  odo_err e = {0};
  if (!odo_msg_subscribe_decode(b, n, &m, &e))
    return violation(L, ev, NULL, 0, "protocol", "%s", e.msg);
  odo_rd_init(&r, m.entries.p, m.entries.len);
  for (uint32_t i = 0; i < m.entries.count; i++) {
    sync_sub *sub;
    odo_msg_sub_entry_next(&r, &s);
    if (odo_store_find(y->store, s.id, s.id_len) == NULL) {
      if (!may_answer(p))
        return violation(L, ev, NULL, 0, "protocol",
                         "the peer keeps asking for streams without reading "
                         "the answers (%zu bytes wait for it)",
                         odo_session_queued(p->s));
      odo_sync_send_refused(y, p, s.id, s.id_len, ODO_REFUSED_UNKNOWN,
                            "this node has no such stream");
      continue;
    }
    sub = odo_sync_find_sub(p, s.id, s.id_len);
    if (sub == NULL) {
      sub = odo_sync_add_sub(p, s.id, s.id_len);
      if (sub == NULL) return violation(L, ev, s.id, s.id_len, "local", "out of memory");
    } else if (sub->snap_raw) {
      leveldb_free(sub->snap_raw);
      sub->snap_raw = NULL;
    }
    sub->next = s.from ? s.from : 1;
    sub->live = m.flags & 1;
    sub->want_snap = (m.flags & 2) != 0;
    sub->caught_up = 0;
    odo_sync_note(L, "subscribed", s.id, s.id_len);
    odo_pushu64(L, sub->next);
    lua_setfield(L, -2, "from");
    odo_sync_note_end(L, ev);
  }
}

static void on_unsubscribe(lua_State *L, int ev, sync_peer *p,
                           const uint8_t *b, size_t n) {
  odo_msg_unsubscribe m;
  odo_rd r;
  odo_err e = {0};
  if (!odo_msg_unsubscribe_decode(b, n, &m, &e))
    return violation(L, ev, NULL, 0, "protocol", "%s", e.msg);
  odo_rd_init(&r, m.ids.p, m.ids.len);
  for (uint32_t i = 0; i < m.ids.count; i++) {
    const char *id;
    size_t sl;
    sync_sub *sub;
    odo_msg_id_next(&r, &id, &sl);
    sub = odo_sync_find_sub(p, id, sl);
    if (sub) odo_sync_remove_sub(p, sub);
  }
}

/* ---- EVENTS ----------------------------------------------------------------- */

/* Checks a batch's head signature against the stream's source. */
static int verify_head(odo_sync *y, const char *id, size_t len, uint64_t rev,
                       const uint8_t hash[ODO_HASH_LEN], const uint8_t *sig,
                       size_t sig_len, odo_err *e) {
  uint8_t msg[ODO_SIGNED_MAX];
  EVP_PKEY *key;
  size_t mlen;
  if (!y->verify) return 1;
  key = odo_sync_source_key(y, id, odo_sync_source_len(id, len), e);
  if (key == NULL) return 0;
  mlen = odo_head_message(msg, id, len, rev, hash);
  if (sig_len == 0 || !odo_verify(key, msg, mlen, sig, sig_len))
    return odo_err_set(e, "EVERIFY",
                       "the head at %llu of stream %.*s is not signed by its "
                       "source",
                       (unsigned long long)rev, (int)len, id);
  return 1;
}

/* The batch's events, numbered from m->first, in y->evs. */
static int load_events(odo_sync *y, const odo_msg_events *m) {
  odo_rd r;
  uint32_t count = m->events.count;
  if (count > y->cap_evs) {
    odo_event *evs = realloc(y->evs, count * sizeof *evs);
    if (evs == NULL) return 0;
    y->evs = evs;
    y->cap_evs = count;
  }
  odo_rd_init(&r, m->events.p, m->events.len);
  for (uint32_t i = 0; i < count; i++) {
    odo_msg_event_next(&r, &y->evs[i]);
    y->evs[i].rev = m->first + i;
  }
  return 1;
}

/* ---- EVENTS, pipelined ------------------------------------------------------ */

static void note_peer(lua_State *L, const char *peer) {
  lua_pushstring(L, peer);
  lua_setfield(L, -2, "peer");
}

/* Moves the CAUGHT_UPs held for a stream to the done list, in order. */
static void release_held(odo_sync *y, const char *id, size_t len) {
  for (sync_written **pp = held_chain(y, id, len); *pp;) {
    sync_written *w = *pp;
    if (w->len != len || memcmp(w->stream, id, len) != 0) {
      pp = &w->next;
      continue;
    }
    *pp = w->next;
    odo_sync_done_push(y, w);
  }
}

/* The writer is done with a batch (loop thread): Lua hears of it at the
 * next sync:written, and of the CAUGHT_UPs that waited for the stream. */
static void batch_written(odo_write_done *d, int ok, const odo_err *e) {
  sync_written *w = (sync_written *)d;
  odo_sync *y = w->y;
  odo_stream *st = odo_store_find(y->store, w->stream, w->len);
  y->writes--;
  y->write_bytes -= w->bytes;
  if (st && w->urgent && st->urgent_inflight) st->urgent_inflight--;
  if (ok) {
    w->kind = "events";
    odo_sync_head_stored(y, st, w->stream, w->len, w->rev); /* a relay serves it */
  } else {
    w->e = *e;
  }
  odo_sync_done_push(y, w);
  if (st == NULL || st->inflight == 0) release_held(y, w->stream, w->len);
}

/* A batch checked for its place goes to the store's writer: the head and
 * the catalogue entry are staged here, the events travel with a chain the
 * writer's thread computes, checks against the head (and the head's
 * signature against key, the source's, when not NULL) and writes with
 * them, all in one write (commit_queue.c). */
static void queue_events(lua_State *L, int ev, odo_sync *y, sync_peer *p,
                         const odo_msg_events *m, const uint8_t *b, size_t n,
                         EVP_PKEY *key) {
  odo_store *s = y->store;
  odo_err e = {0};
  odo_stream *st;
  odo_cat *c;
  odo_chain *ch;
  sync_written *w;
  odo_rd r;
  uint32_t count = m->events.count;
  const char *id = m->id;
  size_t sl = m->id_len, bytes = sizeof *ch + ODO_SEG_ROOM + n;
  uint64_t have, skip;
  odo_txn_begin(s);
  s->staging_async = 1; /* stage after the writes in flight, not wait */
  st = odo_store_stream(s, id, sl, 1, &e);
  if (st == NULL) {
    s->staging_async = 0;
    odo_txn_abort(s);
    return violation(L, ev, id, sl, "protocol", "%s", e.msg);
  }
  if (st->own) {
    s->staging_async = 0;
    odo_txn_abort(s);
    return violation(L, ev, id, sl, "verification failed",
                     "a peer sent events of a stream this node is the source of");
  }
  /* the tip counts the batches in flight: a batch that overlaps it (asked
   * for from the catalogue's last, before they were written) keeps only
   * the events past it, chained from the tip's hash */
  have = odo_stream_tip(st)->last;
  skip = m->first <= have ? have + 1 - m->first : 0;
  if (skip >= count || m->first > have + 1 || count - skip > ODO_MAX_REV - have) {
    s->staging_async = 0;
    odo_txn_abort(s);
    if (skip >= count && m->first <= have) return; /* held already */
    if (m->first > have + 1)
      return refuse(L, ev, y, p, id, sl, "protocol",
                    "a batch of stream %.*s starts at %llu; this node is at %llu",
                    (int)sl, id, (unsigned long long)m->first, (unsigned long long)have);
    return refuse(L, ev, y, p, id, sl, "verification failed",
                  "stream %.*s would pass revision 2^53", (int)sl, id);
  }
  ch = malloc(bytes);
  w = calloc(1, sizeof *w);
  if (ch == NULL || w == NULL) {
    free(ch);
    free(w);
    s->staging_async = 0;
    odo_txn_abort(s);
    return violation(L, ev, id, sl, "local", "out of memory receiving a batch");
  }
  /* the events are the chain's own copy of the message's, past those
   * held already, with room before them for a segment's header */
  memcpy((uint8_t *)(ch + 1) + ODO_SEG_ROOM, b, n);
  odo_rd_init(&r, (uint8_t *)(ch + 1) + ODO_SEG_ROOM + (m->events.p - b), m->events.len);
  for (uint64_t i = 0; i < skip; i++) {
    odo_event held;
    odo_msg_event_next(&r, &held);
  }
  ch->events = (uint8_t *)r.p + r.pos;
  ch->len = m->events.len - r.pos;
  ch->first = m->first + skip;
  ch->n = count - skip;
  ch->num = st->num;
  ch->bytes = bytes;
  ch->key = key && EVP_PKEY_up_ref(key) == 1 ? key : NULL;
  if (key && ch->key == NULL) {
    free(ch);
    free(w);
    s->staging_async = 0;
    odo_txn_abort(s);
    return violation(L, ev, id, sl, "local", "cannot hold the source's key");
  }
  ch->head_rev = m->head_rev;
  ch->sig_len = m->sig_len; /* at most ODO_MAX_SIG (the decoder's bound) */
  memcpy(ch->sig, m->sig, m->sig_len);
  /* live: its stream has nothing in flight but urgent batches before it,
   * so it can go ahead of the other streams' catch-up batches queued for
   * the writer (and stay behind its own) */
  ch->urgent = n <= ODO_LIVE_BATCH_BYTES && st->inflight == st->urgent_inflight;
  memcpy(ch->head, m->head_hash, ODO_HASH_LEN);
  memcpy(ch->stream, id, sl);
  ch->stream_len = sl;
  c = odo_txn_touch(s, st);
  memcpy(ch->prev, c->hash, ODO_HASH_LEN);
  c->last = m->head_rev;
  memcpy(c->hash, m->head_hash, ODO_HASH_LEN);
  odo_stage_head(s, st, m->head_rev, m->head_hash, m->sig, m->sig_len);
  w->done.fn = batch_written;
  w->y = y;
  snprintf(w->peer, sizeof w->peer, "%s", p->id);
  memcpy(w->stream, id, sl);
  w->len = sl;
  w->rev = m->head_rev;
  w->count = (uint32_t)(count - skip);
  w->bytes = bytes;
  w->urgent = ch->urgent;
  if (s->writer->submit(s->writer, y->replica_sync, ch, &w->done, &e) == 0) {
    s->staging_async = 0;
    free(w);
    return violation(L, ev, id, sl, "local", "%s: %s", e.name, e.msg);
  }
  s->staging_async = 0;
  if (w->urgent) st->urgent_inflight++;
  y->writes++;
  y->write_bytes += bytes;
}

void odo_sync_written(lua_State *L, int ev, odo_sync *y) {
  while (y->done) {
    sync_written one = *y->done, *w = &one;
    free(y->done); /* first: a memory error building its note leaks nothing */
    y->done = one.next;
    if (y->done == NULL) y->done_tail = NULL;
    if (w->heads) {
      odo_sync_note(L, "heads", w->stream, w->len);
      odo_pushu64(L, w->rev);
      lua_setfield(L, -2, "rev");
      if (w->kind == NULL) {
        lua_pushfstring(L, "%s: %s", w->e.name, w->e.msg);
        lua_setfield(L, -2, "reason");
      }
      odo_sync_note_end(L, ev);
    } else if (w->kind) {
      odo_sync_note(L, w->kind, w->stream, w->len);
      odo_pushu64(L, w->rev);
      lua_setfield(L, -2, w->kind[0] == 'e' ? "last" : "rev");
      if (w->kind[0] == 'e') {
        lua_pushinteger(L, w->count);
        lua_setfield(L, -2, "count");
      }
      note_peer(L, w->peer);
      odo_sync_note_end(L, ev);
    } else if (strcmp(w->e.name, "ECANCELED") != 0) {
      /* (a batch behind a refused one: the refusal said it all) */
      int refused = strcmp(w->e.name, "EVERIFY") == 0;
      odo_sync_note(L, "violation", w->stream, w->len);
      lua_pushstring(L, w->code ? w->code : refused ? "verification failed" : "local");
      lua_setfield(L, -2, "code");
      if (refused || w->code) lua_pushstring(L, w->e.msg);
      else lua_pushfstring(L, "%s: %s", w->e.name, w->e.msg);
      lua_setfield(L, -2, "reason");
      note_peer(L, w->peer);
      odo_sync_note_end(L, ev);
    }
  }
}

void odo_sync_written_release(odo_sync *y) {
  if (y->writes && y->store && y->store->writer)
    y->store->writer->settle(y->store->writer);
  for (size_t i = 0; i < ODO_SYNC_WANT_BUCKETS; i++)
    while (y->held[i]) {
      sync_written *w = y->held[i];
      y->held[i] = w->next;
      free(w);
    }
  while (y->done) {
    sync_written *w = y->done;
    y->done = w->next;
    free(w);
  }
  y->done_tail = NULL;
}

/* ---- EVENTS ------------------------------------------------------------------ */

/* Whether a batch is written here, on the loop thread, though the store
 * has a writer: a small one (live traffic), when no fsync is asked for and
 * the writer has nothing queued or uncollected (so no stream has a write
 * in flight, this engine's batches included). Its
 * events then reach subscribers in this loop turn, not after two hand-offs
 * between threads (to the worker, and back through its descriptor), each
 * a wait for a CPU on a busy machine. Bulk batches keep the pipeline. */
static int write_here(const odo_sync *y, size_t n) {
  return !y->replica_sync && n <= ODO_LIVE_BATCH_BYTES &&
         !y->store->writer->busy(y->store->writer);
}

static void apply_events(lua_State *L, int ev, odo_sync *y, sync_peer *p,
                         const uint8_t *b, size_t n) {
  odo_msg_events m;
  odo_stream *st;
  odo_err e = {0};
  uint32_t count;
  uint64_t skip;
  const char *id;
  size_t sl;
  if (!odo_msg_events_decode(b, n, &m, &e)) {
    if (m.id_len == 0) return violation(L, ev, NULL, 0, "protocol", "%s", e.msg);
    if (*odo_sync_find_want(p, m.id, m.id_len) == NULL) return; /* stale */
    return violation(L, ev, m.id, m.id_len, "protocol", "%s", e.msg);
  }
  id = m.id;
  sl = m.id_len;
  count = m.events.count;
  if (*odo_sync_find_want(p, id, sl) == NULL) return; /* no longer asked for: stale */
  if (m.head_rev != m.first + count - 1)
    return refuse(L, ev, y, p, id, sl, "verification failed",
                  "a batch of %u events from %llu does not end at its head %llu",
                  count, (unsigned long long)m.first, (unsigned long long)m.head_rev);
  if (y->store->writer && !write_here(y, n)) {
    /* its signature is checked on the writer's threads, with its chain,
     * unless they are behind and have at most one verifier: the loop then
     * checks it (they share a fleet's many signatures) */
    EVP_PKEY *key = NULL;
    if (y->verify && y->writes >= ODO_SYNC_LOOP_VERIFY && y->store->writer->verifiers <= 1) {
      if (!verify_head(y, id, sl, m.head_rev, m.head_hash, m.sig, m.sig_len, &e))
        return refuse(L, ev, y, p, id, sl, "verification failed", "%s", e.msg);
    } else if (y->verify) {
      key = odo_sync_source_key(y, id, odo_sync_source_len(id, sl), &e);
      if (key == NULL) return refuse(L, ev, y, p, id, sl, "verification failed", "%s", e.msg);
    }
    return queue_events(L, ev, y, p, &m, b, n, key);
  }
  if (!verify_head(y, id, sl, m.head_rev, m.head_hash, m.sig, m.sig_len, &e))
    return violation(L, ev, id, sl, "verification failed", "%s", e.msg);
  if (!load_events(y, &m)) return violation(L, ev, id, sl, "protocol", "out of memory");
  odo_txn_begin(y->store);
  st = odo_store_stream(y->store, id, sl, 1, &e);
  if (st == NULL) {
    odo_txn_abort(y->store);
    return violation(L, ev, id, sl, "protocol", "%s", e.msg);
  }
  if (st->own) {
    odo_txn_abort(y->store);
    return violation(L, ev, id, sl, "verification failed",
                     "a peer sent events of a stream this node is the source of");
  }
  {
    /* a batch that overlaps what we hold keeps the events past it */
    uint64_t have = st->in_txn ? st->staged.last : st->cat.last;
    skip = m.first <= have ? have + 1 - m.first : 0;
    if (skip >= count) {
      /* what we hold already: left over from an earlier subscription */
      odo_txn_abort(y->store);
      return;
    }
    if (m.first > have + 1) {
      odo_txn_abort(y->store);
      return violation(L, ev, id, sl, "protocol",
                       "a batch of stream %.*s starts at %llu; this node is at %llu",
                       (int)sl, id, (unsigned long long)m.first, (unsigned long long)have);
    }
    if (!odo_stage_chain(y->store, st, y->evs + skip, count - skip, 1, &e)) {
      odo_txn_abort(y->store);
      return violation(L, ev, id, sl, "verification failed", "%s", e.msg);
    }
  }
  if (memcmp(y->evs[count - 1].hash, m.head_hash, ODO_HASH_LEN) != 0) {
    odo_txn_abort(y->store);
    return violation(L, ev, id, sl, "verification failed",
                     "events %llu to %llu of stream %.*s do not chain to their "
                     "signed head: they are not what the source wrote",
                     (unsigned long long)m.first, (unsigned long long)m.head_rev,
                     (int)sl, id);
  }
  odo_stage_head(y->store, st, m.head_rev, m.head_hash, m.sig, m.sig_len);
  if (!odo_txn_commit(y->store, y->replica_sync, &e))
    return violation(L, ev, id, sl, "local", "%s: %s", e.name, e.msg);
  odo_sync_head_stored(y, st, id, sl, m.head_rev);
  odo_sync_note(L, "events", id, sl);
  odo_pushu64(L, m.head_rev);
  lua_setfield(L, -2, "last");
  lua_pushinteger(L, (lua_Integer)(count - skip));
  lua_setfield(L, -2, "count");
  odo_sync_note_end(L, ev);
}

/* An EVENTS frame: its events are parsed into y->evs, which is kept for
 * the next frame only while small (a frame of many tiny events must not
 * pin a large array for the session's life). */
static void on_events(lua_State *L, int ev, odo_sync *y, sync_peer *p,
                      const uint8_t *b, size_t n) {
  if (p->halted) return; /* its violation waits for its writes (refuse) */
  apply_events(L, ev, y, p, b, n);
  if (y->cap_evs > ODO_SYNC_KEEP_EVENTS) {
    free(y->evs);
    y->evs = NULL;
    y->cap_evs = 0;
  }
}

/* ---- SNAPSHOT ---------------------------------------------------------------- */

/* Stores a whole, verified source snapshot: kept beside the events when
 * we hold its revision (compaction follows the policy), else installed
 * (stored, and the first held revision moved past it, in one write). */
static int store_snapshot(odo_sync *y, sync_peer *p, const odo_msg_snapshot *m,
                          odo_err *e) {
  odo_snapshot_in in;
  odo_stream *st = odo_store_find(y->store, m->id, m->id_len);
  in.data = p->snap.p ? (const char *)p->snap.p : "";
  in.data_len = p->snap.len;
  in.format = m->format;
  in.format_len = m->format_len;
  in.sig = m->sig;
  in.sig_len = m->sig_len;
  if (st && m->rev <= st->cat.last && m->rev + 1 >= st->cat.first) {
    uint8_t held[ODO_HASH_LEN];
    if (odo_store_hash_at(y->store, st, m->rev, held, e) != 1) return 0;
    if (memcmp(held, m->hash, ODO_HASH_LEN) != 0)
      return odo_err_set(e, "ECHAIN", "the snapshot at %llu does not match the events held",
                         (unsigned long long)m->rev);
    if (st->own) return odo_err_set(e, "ESOURCE", "a snapshot of our own stream");
    return odo_snapshot_store(y->store, st, ODO_ORIGIN_SOURCE, m->rev, &in, 1, e);
  }
  return odo_snapshot_install(y->store, m->id, m->id_len, m->rev, m->hash, &in, e);
}

static void on_snapshot(lua_State *L, int ev, odo_sync *y, sync_peer *p,
                        const uint8_t *b, size_t n) {
  odo_msg_snapshot m;
  odo_err e = {0};
  const char *id;
  size_t sl;
  if (!odo_msg_snapshot_decode(b, n, &m, &e))
    return violation(L, ev, NULL, 0, "protocol", "%s", e.msg);
  id = m.id;
  sl = m.id_len;
  if (*odo_sync_find_want(p, id, sl) == NULL) return;
  if (m.offset == 0) {
    p->snap.len = 0;
    memcpy(p->snap_stream, id, sl);
    p->snap_len = sl;
    p->snap_rev = m.rev;
    p->snap_total = m.total;
  }
  if (p->snap_len != sl || memcmp(p->snap_stream, id, sl) != 0 ||
      p->snap_rev != m.rev || p->snap_total != m.total || m.offset != p->snap.len ||
      m.chunk_len > m.total - m.offset)
    return violation(L, ev, id, sl, "protocol", "SNAPSHOT chunks out of order");
  if (!odo_buf_add(&p->snap, m.chunk, m.chunk_len))
    return violation(L, ev, id, sl, "protocol", "out of memory receiving a snapshot");
  if (p->snap.len < m.total) return;
  /* whole: the source's signature covers stream, rev, h(rev), the data */
  if (y->verify) {
    uint8_t msg[ODO_SIGNED_MAX];
    EVP_PKEY *key = odo_sync_source_key(y, id, odo_sync_source_len(id, sl), &e);
    size_t mlen;
    if (key == NULL) return violation(L, ev, id, sl, "verification failed", "%s", e.msg);
    mlen = odo_snapshot_message(msg, id, sl, m.rev, m.hash, p->snap.p, p->snap.len,
                                m.format, m.format_len);
    if (mlen == 0) return violation(L, ev, id, sl, "local", "hashing a snapshot failed");
    if (m.sig_len == 0 ||
        !odo_verify(key, msg, mlen, (const uint8_t *)m.sig, m.sig_len))
      return violation(L, ev, id, sl, "verification failed",
                       "the snapshot at %llu of stream %.*s is not signed by its source",
                       (unsigned long long)m.rev, (int)sl, id);
  }
  if (!store_snapshot(y, p, &m, &e)) {
    odo_buf_free(&p->snap);
    if (strcmp(e.name, "ESTALE") == 0) return; /* older than ours: nothing to do */
    return violation(L, ev, id, sl,
                     strcmp(e.name, "ECHAIN") == 0 || strcmp(e.name, "ESOURCE") == 0
                         ? "verification failed"
                         : "local",
                     "%s: %s", e.name, e.msg);
  }
  odo_buf_free(&p->snap);
  odo_sync_wake_stream(y, id, sl); /* a relay serves it */
  odo_sync_note(L, "snapshot", id, sl);
  odo_pushu64(L, m.rev);
  lua_setfield(L, -2, "rev");
  odo_sync_note_end(L, ev);
}

/* ---- CAUGHT_UP, REFUSED ------------------------------------------------------- */

/* Whether a CAUGHT_UP or REFUSED (decoded: whether it decoded, *id and
 * *len then set) is about a stream we ask this peer for; else a violation
 * was noted, or it is stale. */
static int wanted(lua_State *L, int ev, sync_peer *p, int decoded,
                  const odo_err *e, const char *const *id, const size_t *len) {
  if (!decoded) return violation(L, ev, NULL, 0, "protocol", "%s", e->msg), 0;
  return *odo_sync_find_want(p, *id, *len) != NULL;
}

/* A CAUGHT_UP after batches of its stream still on their way to the disk
 * waits for them: Lua hears it after their "events". */
static void on_caught_up(lua_State *L, int ev, odo_sync *y, sync_peer *p,
                         const uint8_t *b, size_t n) {
  odo_msg_caught_up m = {0};
  odo_err e = {0};
  odo_stream *st;
  if (!wanted(L, ev, p, odo_msg_caught_up_decode(b, n, &m, &e), &e, &m.id, &m.id_len))
    return;
  st = y->writes ? odo_store_find(y->store, m.id, m.id_len) : NULL;
  if (st && st->inflight) {
    sync_written *w = calloc(1, sizeof *w);
    if (w == NULL) return violation(L, ev, m.id, m.id_len, "local", "out of memory");
    w->kind = "caught_up";
    w->y = y;
    snprintf(w->peer, sizeof w->peer, "%s", p->id);
    memcpy(w->stream, m.id, m.id_len);
    w->len = m.id_len;
    w->rev = m.rev;
    hold(y, w);
    return;
  }
  odo_sync_note(L, "caught_up", m.id, m.id_len);
  odo_pushu64(L, m.rev);
  lua_setfield(L, -2, "rev");
  odo_sync_note_end(L, ev);
}

static void on_refused(lua_State *L, int ev, sync_peer *p, const uint8_t *b,
                       size_t n) {
  odo_msg_refused m = {0};
  odo_err e = {0};
  if (!wanted(L, ev, p, odo_msg_refused_decode(b, n, &m, &e), &e, &m.id, &m.id_len))
    return;
  odo_sync_note(L, "refused", m.id, m.id_len);
  lua_pushinteger(L, m.code);
  lua_setfield(L, -2, "code");
  lua_pushlstring(L, m.reason, m.reason_len);
  lua_setfield(L, -2, "reason");
  odo_sync_note_end(L, ev);
}

void odo_sync_handle(lua_State *L, int ev, odo_sync *y, sync_peer *p,
                     int type, const uint8_t *m, size_t n) {
  switch (type) {
  case ODO_MSG_CATALOGUE: on_catalogue(L, ev, y, m, n); break;
  case ODO_MSG_SUBSCRIBE: on_subscribe(L, ev, y, p, m, n); break;
  case ODO_MSG_UNSUBSCRIBE: on_unsubscribe(L, ev, p, m, n); break;
  case ODO_MSG_EVENTS: on_events(L, ev, y, p, m, n); break;
  case ODO_MSG_SNAPSHOT: on_snapshot(L, ev, y, p, m, n); break;
  case ODO_MSG_CAUGHT_UP: on_caught_up(L, ev, y, p, m, n); break;
  case ODO_MSG_REFUSED: on_refused(L, ev, p, m, n); break;
  default:
    violation(L, ev, NULL, 0, "protocol", "an unknown message type %d", type);
  }
}
