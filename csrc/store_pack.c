/* store_pack.c - packing: rewrites a run of a stream's records (single
 * events, small segments) as segments, one range of revisions
 * k*1000+1 .. (k+1)*1000 at a time, the ranges an own append's segments
 * are cut at (docs/STORAGE.md, "Segment"). A source serves a segment
 * that starts where a batch starts as it is, and LevelDB holds one
 * record instead of a thousand.
 *
 * A range is packed only when a signed head is stored at its end (so its
 * segment ends where a batch ends) and it lies at or below the stream's
 * settled last revision and its newest stored head: records a write in
 * flight on the commit queue adds (events past the last revision, heads
 * past the newest stored one) are never inside it. Every event of it is
 * read and its chain checked; the old records, the signed heads strictly
 * inside the range and the new segments go in one write. The catalogue
 * does not change (the stream's last revision is that of its highest
 * event key, which packing keeps).
 *
 * How far a stream's ranges need no packing is stored ('m' "packed/"
 * num), so a store is looked through once, not at every open: a look at
 * a range that is one segment already reads that segment's block.
 *
 * LevelDB keeps the deleted records, and a tombstone each, until a
 * compaction reaches them, and a reader steps over all of them meanwhile
 * (measured, bench/pack.lua: serving a packed stream cost 0.26 us an
 * event, 0.11 once compacted). compact_packed asks LevelDB to compact a
 * packed span, from a thread of its own that waits for it.
 */

/***
 * @submodule odo.core
 */
#include <pthread.h>
#include <stdlib.h>

#include "store.h"
#include "thread_prio.h"

/* Packing of one range stops early (the rest waits for the next call) at
 * a record boundary once this much data is staged. */
#define PACK_MAX_STAGED (8u << 20)
/* What stepping over a range that needs nothing costs against a call's
 * budget (a unit is about what packing an event costs, ~1 us): a seek or
 * two, no event decoded; plus, when it looked at a segment, one unit for
 * each PACK_LOOK_EVENTS events of it (LevelDB read its whole block: a
 * catch-up's segment of 5000 events is half a millisecond). */
#define PACK_SKIP_COST 10
#define PACK_LOOK_EVENTS 8

typedef struct pack_out {
  uint64_t rev; /* the record's key revision */
  int lone;     /* a single-event record (else a segment) */
} pack_out;

/* One range being packed: where it is, the segment being built, and the
 * records put so far. */
typedef struct packing {
  odo_store *s;
  odo_stream *st;
  uint64_t a, end;        /* the range (a: above the compaction point) */
  odo_buf seg;            /* the segment being built */
  uint32_t count;         /* its events */
  size_t bytes;           /* their types and data */
  uint64_t at;            /* the revision of its last event */
  uint8_t hash[ODO_HASH_LEN]; /* h(at): the chain as checked */
  pack_out outs[ODO_SEG_CUT_EVENTS];
  size_t nouts;
  size_t staged;          /* bytes put into the write */
} packing;

static int corrupt_chain(odo_stream *st, uint64_t rev, odo_err *e) {
  return odo_err_set(e, "ECORRUPT",
                     "event %llu of stream %s does not chain to the event "
                     "before it: the log is damaged there; nothing was packed",
                     (unsigned long long)rev, st->id);
}

/* Puts the segment being built (or, holding one event, that event's own
 * record) into the write, keyed by its last revision. */
static int flush_segment(packing *p, odo_err *e) {
  odo_store *s = p->s;
  uint8_t key[ODO_SEGKEY_LEN];
  if (p->count == 0) return 1;
  if (p->count == 1) {
    odo_event ev;
    odo_rd r;
    odo_rd_init(&r, p->seg.p + 4 + ODO_SEG_FIXED, p->seg.len - 4 - ODO_SEG_FIXED);
    if (!odo_event_decode(&r, &ev, 0))
      return odo_err_set(e, "ENOMEM", "out of memory packing stream %s", p->st->id);
    ev.rev = p->at;
    memcpy(ev.hash, p->hash, ODO_HASH_LEN);
    odo_numkey(key, ODO_K_EVENT, p->st->num, p->at);
    odo_rec_begin(&s->val);
    odo_rec_event_encode(&s->val, &ev);
    if (!odo_store_put(s, key, ODO_NUMKEY_LEN, &s->val))
      return odo_err_set(e, "ENOMEM", "out of memory packing stream %s", p->st->id);
    p->staged += s->val.len;
  } else {
    odo_rec_segment_end(&p->seg, p->count, p->hash);
    odo_segkey(key, p->st->num, p->at);
    if (!odo_store_put(s, key, sizeof key, &p->seg))
      return odo_err_set(e, "ENOMEM", "out of memory packing stream %s", p->st->id);
    p->staged += p->seg.len;
  }
  p->outs[p->nouts].rev = p->at;
  p->outs[p->nouts].lone = p->count == 1;
  p->nouts++;
  p->count = 0;
  p->bytes = 0;
  return 1;
}

/* Adds event ev (checked: it chains from p->hash) to the segment being
 * built, cutting it first when its data would pass ODO_SEG_MAX_BYTES. */
static int add_event(packing *p, const odo_event *ev, odo_err *e) {
  uint8_t h[ODO_HASH_LEN];
  size_t size = ev->type_len + ev->data_len;
  if (!odo_chain_next(&p->s->hasher, p->hash, ev, h))
    return odo_err_set(e, "EIO", "SHA-256 failed");
  if (memcmp(h, ev->hash, ODO_HASH_LEN) != 0) return corrupt_chain(p->st, ev->rev, e);
  if (p->count > 0 && p->bytes + size > ODO_SEG_MAX_BYTES && !flush_segment(p, e)) return 0;
  if (p->count == 0) {
    odo_rec_begin(&p->seg);
    odo_rec_segment_begin(&p->seg, p->hash);
  }
  if (!odo_event_encode(&p->seg, ev, 0))
    return odo_err_set(e, "ENOMEM", "out of memory packing stream %s", p->st->id);
  p->count++;
  p->bytes += size;
  p->at = ev->rev;
  memcpy(p->hash, h, ODO_HASH_LEN);
  return 1;
}

/* Deletes the records of a .. upto the write replaced (but those it put
 * under the same keys), and the signed heads among them but the one at the
 * range's end; *heads counts those. */
static int delete_old(packing *p, uint64_t upto, size_t *heads, odo_err *e) {
  odo_store *s = p->s;
  uint8_t key[ODO_NUMKEY_LEN];
  size_t o = 0;
  leveldb_iterator_t *it = leveldb_create_iterator(s->db, s->ropts_bulk);
  int ok;
  odo_numkey(key, ODO_K_EVENT, p->st->num, p->a);
  for (leveldb_iter_seek(it, (const char *)key, sizeof key); leveldb_iter_valid(it);
       leveldb_iter_next(it)) {
    size_t kl;
    uint64_t rev;
    const uint8_t *k = (const uint8_t *)leveldb_iter_key(it, &kl);
    int kind = odo_logkey_kind(k, kl, p->st->num, &rev);
    if (kind == ODO_LOG_OTHER || rev > upto) break;
    if (kind == ODO_LOG_HEAD) {
      if (rev == p->end) continue;
      (*heads)++;
    } else {
      while (o < p->nouts && p->outs[o].rev < rev) o++;
      if (o < p->nouts && p->outs[o].rev == rev &&
          p->outs[o].lone == (kind == ODO_LOG_EVENT))
        continue; /* the write puts a new record under it */
    }
    odo_store_del(s, k, kl);
  }
  ok = odo_iter_ok(it, e, "packing events");
  leveldb_iter_destroy(it);
  return ok;
}

/* Whether a .. end lies inside one record already (a segment, or one
 * event): 1 yes, with *reach the last revision of that record (every
 * range up to it needs nothing: inside it, or crossed by it), 0 no, -1
 * with e set. Only keys are looked at: records are keyed by their last
 * revision, so the first record key at or after a's is the record that
 * holds a. (A look that fills no cache; LevelDB still reads the block.) */
static int one_record(odo_store *s, odo_stream *st, uint64_t a, uint64_t end, uint64_t *reach,
                      odo_err *e) {
  uint8_t key[ODO_NUMKEY_LEN];
  leveldb_iterator_t *it = leveldb_create_iterator(s->db, s->ropts_bulk);
  int found = 0;
  odo_numkey(key, ODO_K_EVENT, st->num, a);
  for (leveldb_iter_seek(it, (const char *)key, sizeof key); leveldb_iter_valid(it);
       leveldb_iter_next(it)) {
    size_t kl;
    uint64_t rev;
    const uint8_t *k = (const uint8_t *)leveldb_iter_key(it, &kl);
    int kind = odo_logkey_kind(k, kl, st->num, &rev);
    if (kind == ODO_LOG_HEAD) continue;
    found = (kind == ODO_LOG_EVENT && rev == end && a == end) ||
            (kind == ODO_LOG_SEGMENT && rev >= end);
    if (found) *reach = rev;
    break;
  }
  if (!found && !odo_iter_ok(it, e, "packing events")) found = -1;
  leveldb_iter_destroy(it);
  return found;
}

/* h(a - 1) (at the compaction point its base; at a record's end its
 * stored hash). */
static int hash_before(odo_store *s, odo_stream *st, uint64_t a, uint8_t out[ODO_HASH_LEN],
                       odo_err *e) {
  int rc = odo_store_hash_at(s, st, a - 1, out, e);
  if (rc == 0)
    return odo_err_set(e, "ECORRUPT", "stream %s holds no hash for revision %llu",
                       st->id, (unsigned long long)(a - 1));
  return rc > 0;
}

/* Packs a .. end (or the part of it from a that budget allows: at least
 * two records, then whole records while fewer than budget events past
 * the first were read). *n: events packed; *whole: the range is done
 * (packed in full, or not to be packed: nothing of it written). 1, or 0
 * with e set and the transaction aborted. */
static int pack_range(packing *p, uint64_t budget, uint64_t *n, int *whole, odo_err *e) {
  odo_store *s = p->s;
  odo_stream *st = p->st;
  odo_reader r;
  odo_event ev;
  uint64_t first_end = 0, past_first = 0;
  size_t records = 0, heads = 0;
  int rc, cut = 0, boundary = 1;
  *n = 0;
  *whole = 1;
  if (!hash_before(s, st, p->a, p->hash, e)) return 0;
  if (!odo_reader_open_bulk(s, st, p->a, p->end, &r, e)) return 0;
  odo_txn_begin(s);
  while ((rc = odo_reader_next(&r, &ev, e)) == 1) {
    /* a segment reaching below the range (past the compaction point) is
     * not the range's to rewrite */
    if (ev.rev == p->a && r.seg_first != 0 && r.seg_first < p->a && p->a > st->cat.first) {
      rc = 0;
      boundary = 0;
      break;
    }
    if (!add_event(p, &ev, e)) {
      rc = -1;
      break;
    }
    boundary = r.seg_last == 0;
    if (!boundary) continue;
    if (++records == 1) first_end = ev.rev;
    else past_first = ev.rev - first_end;
    /* stop early, on a record boundary, only where the write gains */
    if (ev.rev < p->end && records > p->nouts + 1 &&
        (past_first >= budget || p->staged + p->bytes >= PACK_MAX_STAGED)) {
      cut = 1;
      break;
    }
  }
  odo_reader_close(&r);
  if (rc < 0) {
    odo_txn_abort(s);
    return 0;
  }
  /* a record crossing the range's end (or its start) breaks the rule
   * that no segment holds a signed head inside it: leave the range */
  if (!boundary || (!cut && p->at != p->end)) {
    odo_txn_abort(s);
    return 1;
  }
  if (!flush_segment(p, e) || !delete_old(p, p->at, &heads, e)) {
    odo_txn_abort(s);
    return 0;
  }
  if (p->nouts >= records && heads == 0) { /* nothing to gain */
    odo_txn_abort(s);
    return 1;
  }
  if (!odo_txn_commit(s, 0, e)) return 0;
  *n = p->at - p->a + 1;
  *whole = !cut;
  return 1;
}

/* The highest revision packing may reach: the settled last revision, and
 * the newest stored signed head (heads past it may be in flight). */
static int pack_limit(odo_store *s, odo_stream *st, uint64_t *limit, odo_err *e) {
  uint64_t head;
  if (st->head_known) {
    head = st->head;
  } else {
    odo_head h;
    int rc = odo_head_read(s, st, 0, 1, &h, e);
    if (rc < 0) return 0;
    head = rc == 1 ? h.rev : 0;
  }
  *limit = head < st->cat.last ? head : st->cat.last;
  return 1;
}

/* ---- how far a stream needs no packing, stored -------------------------- */

#define PACKED_NAME "packed/"

static void packed_key(uint8_t key[1 + sizeof PACKED_NAME - 1 + 8], const odo_stream *st) {
  key[0] = ODO_K_META;
  memcpy(key + 1, PACKED_NAME, sizeof PACKED_NAME - 1);
  odo_put_be64(key + sizeof PACKED_NAME, st->num);
}

/* Reads the stored mark of st, once an open. 1, or 0 with e set. */
static int packed_load(odo_store *s, odo_stream *st, odo_err *e) {
  uint8_t key[1 + sizeof PACKED_NAME - 1 + 8];
  char *err = NULL, *v;
  size_t vl;
  if (st->packed_loaded) return 1;
  packed_key(key, st);
  v = leveldb_get(s->db, s->ropts, (const char *)key, sizeof key, &vl, &err);
  if (err) return odo_store_dberr(e, err, "reading how far a stream is packed");
  if (v && vl == 8) {
    uint64_t mark = odo_get_be64((const uint8_t *)v);
    if (mark > st->packed) st->packed = mark;
    st->packed_saved = mark;
  }
  leveldb_free(v);
  st->packed_loaded = 1;
  return 1;
}

/* Stores st's mark when it moved (a write of its own, after the ranges
 * it covers were written: a crash leaves it behind, never ahead). */
static int packed_save(odo_store *s, odo_stream *st, odo_err *e) {
  uint8_t key[1 + sizeof PACKED_NAME - 1 + 8], val[8];
  char *err = NULL;
  if (st->packed == st->packed_saved) return 1;
  packed_key(key, st);
  odo_put_be64(val, st->packed);
  leveldb_put(s->db, s->wnosync, (const char *)key, sizeof key, (const char *)val, sizeof val, &err);
  if (err) return odo_store_dberr(e, err, "storing how far a stream is packed");
  st->packed_saved = st->packed;
  return 1;
}

/* Packs the oldest range that needs it (stepping over those that need
 * nothing, up to budget); *n events packed, *more: work is left. */
static int pack_stream(odo_store *s, odo_stream *st, uint64_t budget, uint64_t *n, int *more,
                       odo_err *e) {
  uint64_t limit, work = 0;
  packing *p;
  *n = 0;
  *more = 0;
  if (!packed_load(s, st, e) || !pack_limit(s, st, &limit, e)) return 0;
  p = calloc(1, sizeof *p);
  if (p == NULL) return odo_err_set(e, "ENOMEM", "out of memory packing stream %s", st->id);
  odo_buf_init(&p->seg);
  p->s = s;
  p->st = st;
  for (;;) {
    uint64_t lo = st->packed + 1 > st->cat.first ? st->packed + 1 : st->cat.first;
    uint64_t end = ((lo - 1) / ODO_SEG_CUT_EVENTS + 1) * ODO_SEG_CUT_EVENTS, reach = 0, cost;
    odo_head h;
    int rc, whole;
    if (end > limit) break;
    if (work >= budget) {
      *more = 1;
      break;
    }
    p->a = lo;
    p->end = end;
    p->nouts = p->count = 0;
    p->bytes = p->staged = 0;
    /* one record already (most ranges of a source that appends in
     * batches): looked at without filling the block cache; else a head
     * must end it */
    rc = one_record(s, st, lo, end, &reach, e);
    cost = PACK_SKIP_COST;
    if (rc == 0) {
      rc = odo_head_read(s, st, end, 0, &h, e);
      if (rc == 1) rc = h.rev == end ? 2 : 0;
    } else if (rc == 1) {
      cost += (reach - lo + 1) / PACK_LOOK_EVENTS;
      /* and every range up to the end of that record (a catch-up's
       * segment spans several) */
      if (reach / ODO_SEG_CUT_EVENTS * ODO_SEG_CUT_EVENTS > end)
        end = reach / ODO_SEG_CUT_EVENTS * ODO_SEG_CUT_EVENTS;
      rc = 0;
    }
    if (rc < 0) goto fail;
    /* no head at its end (a replica's received batch crossing it, or
     * signed past it) or one record already: nothing to do there, ever */
    if (rc < 2) {
      st->packed = end;
      work += cost;
      continue;
    }
    if (!pack_range(p, budget - work, n, &whole, e)) goto fail;
    if (whole) st->packed = end;
    *more = !whole || end + ODO_SEG_CUT_EVENTS <= limit;
    break;
  }
  odo_buf_free(&p->seg);
  free(p);
  return packed_save(s, st, e);
fail:
  odo_buf_free(&p->seg);
  free(p);
  return 0;
}

/* ---- compacting packed spans ------------------------------------------ */

/* One compaction of a span of a stream's log: a thread that waits in
 * leveldb_compact_range (LevelDB's background thread does the work),
 * held by the store as a dependent, so the store's close waits for it. */
typedef struct log_compaction {
  odo_dependent dep; /* first: the store's list holds &dep */
  odo_store *s;
  pthread_t thread;
  pthread_mutex_t mu;
  int done;
  uint8_t from[ODO_NUMKEY_LEN], to[ODO_HEADKEY_LEN];
} log_compaction;

static void *compaction_worker(void *arg) {
  log_compaction *c = arg;
  odo_thread_name("odo-compact");
  leveldb_compact_range(c->s->db, (const char *)c->from, sizeof c->from, (const char *)c->to,
                        sizeof c->to);
  pthread_mutex_lock(&c->mu);
  c->done = 1;
  pthread_mutex_unlock(&c->mu);
  return NULL;
}

static void compaction_release(odo_dependent *d) {
  log_compaction *c = (log_compaction *)d;
  pthread_join(c->thread, NULL);
  odo_store_remove_dependent(c->s, d);
  pthread_mutex_destroy(&c->mu);
  free(c);
}

/* Whether a compaction of the store's is still running (one that ended
 * is joined and freed). */
static int compaction_running(odo_store *s) {
  for (odo_dependent *d = s->dependents; d != NULL; d = d->next) {
    log_compaction *c = (log_compaction *)d;
    int done;
    if (d->release != compaction_release) continue;
    pthread_mutex_lock(&c->mu);
    done = c->done;
    pthread_mutex_unlock(&c->mu);
    if (!done) return 1;
    compaction_release(d); /* at most one is kept */
    return 0;
  }
  return 0;
}

/***
 * Starts a LevelDB compaction of a stream's log from revision `from` to
 * `to` (a span `pack` rewrote) on a thread of its own, so the deleted
 * records stop costing readers; the store's close waits for it. One at a
 * time per store.
 * @function compact_packed
 * @tparam string stream
 * @tparam integer from
 * @tparam integer to
 * @treturn boolean true: started; false: one is still running (ask later)
 * @treturn[2] nil
 * @treturn[2] string "EAGAIN: ..." (no thread)
 */
int odo_store_l_compact_packed(lua_State *L) {
  odo_store *s = odo_store_check(L, 1);
  size_t len;
  const char *id = luaL_checklstring(L, 2, &len);
  uint64_t from = odo_checku64(L, 3, "from"), to = odo_checku64(L, 4, "to");
  odo_stream *st = odo_store_find(s, id, len);
  log_compaction *c;
  int rc;
  luaL_argcheck(L, from <= to, 4, "to must not be below from");
  if (st == NULL) return odo_fail(L, "ENOENT", "no stream %s", id);
  if (compaction_running(s)) {
    lua_pushboolean(L, 0);
    return 1;
  }
  c = calloc(1, sizeof *c);
  if (c == NULL) return odo_fail(L, "ENOMEM", "out of memory compacting stream %s", st->id);
  c->s = s;
  c->dep.release = compaction_release;
  odo_numkey(c->from, ODO_K_EVENT, st->num, from);
  odo_headkey(c->to, st->num, to);
  pthread_mutex_init(&c->mu, NULL);
  rc = pthread_create(&c->thread, NULL, compaction_worker, c);
  if (rc != 0) {
    pthread_mutex_destroy(&c->mu);
    free(c);
    return odo_fail(L, "EAGAIN", "cannot start a thread to compact stream %s: %s", st->id,
                    strerror(rc));
  }
  odo_store_add_dependent(s, &c->dep);
  lua_pushboolean(L, 1);
  return 1;
}

/***
 * Packs the oldest run of a stream's records that can be one segment:
 * the revisions k*1000+1 .. (k+1)*1000 (or the part above the compaction
 * point), once a signed head is stored at the range's end and the range
 * is settled (no write in flight reaches it). Reads every record of it,
 * checking the chain, and replaces them, and the signed heads strictly
 * inside it, by segments (cut before 1 MiB of data) in one write.
 * Ranges that are one record already are stepped over. A range larger
 * than `max_events` is packed in parts, one a call.
 * @function pack
 * @tparam string stream
 * @tparam[opt] integer max_events work per call (default 5000, at least 1)
 * @treturn integer events rewritten by this call (0: none; a range packed
 *   in parts rewrites what its earlier parts packed again)
 * @treturn boolean whether more is left to pack now
 * @treturn integer the ranges up to this revision need no packing
 *   (stored: a store opened again does not look at them again)
 * @treturn[2] nil
 * @treturn[2] string "ECORRUPT: ..." (naming the revision), or LevelDB's error
 * @treturn[2] string its name
 */
int odo_store_l_pack(lua_State *L) {
  odo_store *s = odo_store_check(L, 1);
  size_t len;
  const char *id = luaL_checklstring(L, 2, &len);
  uint64_t max = odo_optu64(L, 3, 5000, "max_events"), n = 0;
  odo_stream *st = odo_store_find(s, id, len);
  odo_err e = {0};
  int more = 0;
  luaL_argcheck(L, max >= 1, 3, "max_events must be 1 or more");
  if (st != NULL && !pack_stream(s, st, max, &n, &more, &e)) return odo_err_push(L, &e);
  odo_pushu64(L, n);
  lua_pushboolean(L, more);
  odo_pushu64(L, st ? st->packed : 0);
  return 3;
}
