/* sync_serve.c - the serving half of the sync engine: what this node
 * sends. Every subscription has the next revision it owes. The pump
 * sends, while the session is under its high watermark, the source
 * snapshot when the subscriber is behind the compaction point (in chunks,
 * one snapshot at a time per session), then batches of events that each
 * end exactly at a stored signed head and carry it; when nothing is left
 * it sends CAUGHT_UP once. Catch-up and live streaming are the same loop,
 * so no gap and no duplicate whatever races it, and memory does not grow
 * with a stream's length. Also here: our catalogue, and signing the heads
 * of own streams. Messages are built with the codec (sync_msg.c). */
#include <stdio.h>
#include <stdlib.h>

#include "sync.h"

/* ---- single frames --------------------------------------------------------- */

void odo_sync_send_refused(odo_sync *y, sync_peer *p, const char *id,
                           size_t len, uint16_t code, const char *why) {
  odo_msg_refused m;
  size_t f = odo_frame_begin(&y->out, ODO_MSG_REFUSED);
  m.id = id;
  m.id_len = len;
  m.code = code;
  m.reason = why;
  m.reason_len = strlen(why);
  odo_msg_refused_encode(&y->out, &m);
  odo_frame_end(&y->out, f);
  odo_sync_send_out(y, p, 1);
}

static void send_caught_up(odo_sync *y, sync_peer *p, sync_sub *sub,
                           uint64_t rev) {
  odo_msg_caught_up m;
  size_t f = odo_frame_begin(&y->out, ODO_MSG_CAUGHT_UP);
  m.id = sub->stream;
  m.id_len = sub->len;
  m.rev = rev;
  odo_msg_caught_up_encode(&y->out, &m);
  odo_frame_end(&y->out, f);
  odo_sync_send_out(y, p, 1);
  sub->caught_up = 1;
}

/* Forgets the snapshot a subscription was sending. */
static void drop_snapshot(sync_sub *sub) {
  if (sub->snap_raw) leveldb_free(sub->snap_raw);
  sub->snap_raw = NULL;
  sub->want_snap = 0;
}

/* One chunk of the source snapshot a subscriber behind the compaction
 * point needs (or asked for). Returns 1 while chunks remain, 0 when done,
 * -1 when the subscription is refused. */
static int send_snapshot_chunk(odo_sync *y, sync_peer *p, sync_sub *sub,
                               odo_stream *st) {
  odo_err e = {0};
  odo_msg_snapshot m;
  size_t n, f;
  if (sub->snap_raw == NULL) {
    int rc = odo_snapshot_read(y->store, st, ODO_ORIGIN_SOURCE, &sub->snap_raw,
                               &sub->snap_rev, &sub->snap, &e);
    if (rc <= 0 || sub->snap_rev + 1 < st->cat.first || sub->snap.sig_len == 0 ||
        sub->snap.data_len > ODO_MAX_SNAPSHOT) {
      int asked = sub->want_snap && sub->next >= st->cat.first;
      drop_snapshot(sub);
      if (asked) return 0; /* no snapshot to give: go on with the events */
      odo_sync_send_refused(y, p, sub->stream, sub->len, ODO_REFUSED_GONE,
                            rc == 1 && sub->snap.data_len > ODO_MAX_SNAPSHOT
                                ? "the source snapshot is too large to send"
                                : "events before the first held are compacted and no "
                                  "signed source snapshot covers them");
      return -1;
    }
    /* h(rev): held as the base of the first held event */
    if (odo_store_hash_at(y->store, st, sub->snap_rev, sub->snap_hash, &e) != 1) {
      char why[sizeof e.msg + 64];
      snprintf(why, sizeof why, "cannot read h(%llu) for the snapshot: %s",
               (unsigned long long)sub->snap_rev, e.name ? e.msg : "not held");
      drop_snapshot(sub);
      odo_sync_send_refused(y, p, sub->stream, sub->len, ODO_REFUSED_UNAVAILABLE, why);
      return -1;
    }
    sub->snap_off = 0;
  }
  n = sub->snap.data_len - sub->snap_off;
  if (n > ODO_SNAPSHOT_CHUNK) n = ODO_SNAPSHOT_CHUNK;
  m.id = sub->stream;
  m.id_len = sub->len;
  m.rev = sub->snap_rev;
  m.hash = sub->snap_hash;
  m.format = sub->snap.format;
  m.format_len = sub->snap.format_len;
  m.sig = sub->snap.sig;
  m.sig_len = sub->snap.sig_len;
  m.total = (uint32_t)sub->snap.data_len;
  m.offset = (uint32_t)sub->snap_off;
  m.chunk = (const uint8_t *)sub->snap.data + sub->snap_off;
  m.chunk_len = n;
  f = odo_frame_begin(&y->out, ODO_MSG_SNAPSHOT);
  odo_msg_snapshot_encode(&y->out, &m);
  odo_frame_end(&y->out, f);
  odo_sync_send_out(y, p, 1);
  sub->snap_off += n;
  if (sub->snap_off < sub->snap.data_len) return 1;
  if (sub->next < sub->snap_rev + 1) sub->next = sub->snap_rev + 1;
  drop_snapshot(sub);
  return 0;
}

/* ---- batches ---------------------------------------------------------------- */

/* Encodes events next..head.rev and the first head at or after next as
 * one EVENTS frame in y->out, in one walk of the store (heads sit among
 * the events). Returns the frame's size, 0 when there is no head to end
 * at yet, or -1 with e set (a batch whose events are not all held is
 * never sent). A batch far from the stream's end (a catch-up) reads past
 * the block cache: it reads those blocks once; and it goes on past its
 * first head to the last head within y->bulk_batch bytes, so a catch-up
 * takes fewer frames and its receiver checks fewer signatures (one a
 * batch) for the same events. */
static long build_batch(odo_sync *y, odo_stream *st, uint64_t next,
                        uint64_t *end, odo_err *e) {
  odo_head h;
  odo_reader r;
  odo_event ev;
  uint32_t count = 0, end_count = 0;
  size_t f, count_at, end_len = 0;
  int rc, found = 0, bulk = next + ODO_HEAD_EVENTS <= st->cat.last;
  if (!(bulk ? odo_reader_open_bulk : odo_reader_open)(y->store, st, next, st->cat.last, &r, e))
    return -1;
  r.no_hashes = 1; /* the receiver chains them itself */
  /* the events go straight into the frame (a batch is copied once) */
  f = odo_frame_begin(&y->out, ODO_MSG_EVENTS);
  count_at = odo_msg_events_open(&y->out, st->id, st->id_len, next);
  for (;;) {
    const uint8_t *seg;
    size_t seg_len, used = y->out.len - f;
    uint32_t seg_count;
    /* a stored segment (a batch this node received) goes as it is */
    if (used <= y->max_batch &&
        odo_reader_segment(&r, y->max_batch - used, &seg, &seg_len, &seg_count)) {
      if (!odo_buf_add(&y->out, seg, seg_len)) {
        rc = -1;
        odo_err_set(e, "ENOMEM", "out of memory building a batch");
        break;
      }
      count += seg_count;
      ev.rev = r.next - 1;
    } else {
      if ((rc = odo_reader_next(&r, &ev, e)) != 1) break;
      if (!odo_event_encode(&y->out, &ev, 0)) {
        rc = -1;
        odo_err_set(e, "ENOMEM", "out of memory building a batch");
        break;
      }
      count++;
    }
    if (y->out.len - f > y->max_batch + ODO_FRAME_HEADER) {
      rc = -1;
      odo_err_set(e, "ETOOBIG", "a batch of stream %s is too big to send", st->id);
      break;
    }
    rc = odo_reader_head_after(&r, ev.rev, &h, e);
    if (rc < 0) break;
    if (rc == 1) {
      found = 1;
      end_len = y->out.len;
      end_count = count;
      if (!bulk || end_len - f >= y->bulk_batch) break;
    }
  }
  odo_reader_close(&r);
  /* past a head, what follows it (another head's events, the stream's
   * end, the size limit, a failure) waits for the next batch */
  if (rc < 0 && !found) {
    y->out.len = f;
    return -1;
  }
  if (!found) {
    y->out.len = f;
    return 0; /* no head yet: the next one brings it */
  }
  y->out.len = end_len;
  *end = h.rev;
  odo_msg_events_close(&y->out, count_at, end_count, h.rev, h.hash, h.sig, h.sig_len);
  odo_frame_end(&y->out, f);
  if (y->out.len - f > y->max_batch + ODO_FRAME_HEADER) {
    y->out.len = f;
    return odo_err_set(e, "ETOOBIG", "a batch of stream %s is too big to send", st->id), -1;
  }
  return (long)(y->out.len - f);
}

/* The stream of a subscription (NULL: not held), found in the store once
 * and kept while no stream left the store's map. */
static odo_stream *sub_stream(odo_sync *y, sync_sub *sub) {
  if (sub->st == NULL || sub->st_freed != y->store->streams_freed) {
    sub->st = odo_store_find(y->store, sub->stream, sub->len);
    sub->st_freed = y->store->streams_freed;
  }
  return sub->st;
}

/* What one visit of a subscription did (pump_sub). */
enum {
  SUB_IDLE, /* nothing to send now: off the ready list until woken */
  SUB_MORE, /* sent, and may have more */
  SUB_DONE, /* sent, and CAUGHT_UP: nothing more until its stream moves */
  SUB_GONE  /* sent, and the subscription ended (it is freed) */
};

/* The end of a subscription's stream is reached: CAUGHT_UP once, and a
 * subscription that is not live ends. */
static int at_end(odo_sync *y, sync_peer *p, sync_sub *sub, odo_stream *st) {
  if (sub->caught_up) return SUB_IDLE;
  send_caught_up(y, p, sub, st->cat.last);
  if (!sub->live) {
    odo_sync_remove_sub(p, sub);
    return SUB_GONE;
  }
  return SUB_DONE;
}

/* Moves one subscription forward by at most one frame of events or of a
 * snapshot, and the CAUGHT_UP that follows when that reached the end of
 * the stream, or sends a CAUGHT_UP that is due. */
static int pump_sub(lua_State *L, odo_sync *y, sync_peer *p, sync_sub *sub,
                    int ev) {
  odo_stream *st = sub_stream(y, sub);
  odo_err e = {0};
  long n;
  uint64_t end = 0;
  y->pump_visits++;
  if (st == NULL) return SUB_IDLE;
  if (sub->snap_raw || sub->want_snap || sub->next < st->cat.first) {
    if (send_snapshot_chunk(y, p, sub, st) < 0) {
      odo_sync_remove_sub(p, sub);
      return SUB_GONE;
    }
    if (sub->snap_raw) p->snap_sub = sub;
    return SUB_MORE;
  }
  if (sub->next > st->cat.last) return at_end(y, p, sub, st);
  n = build_batch(y, st, sub->next, &end, &e);
  if (n == 0) return SUB_IDLE; /* not signed yet: the next head wakes it */
  if (n < 0) {
    odo_sync_note(L, "error", sub->stream, sub->len);
    lua_pushfstring(L, "%s: %s", e.name, e.msg);
    lua_setfield(L, -2, "reason");
    odo_sync_note_end(L, ev);
    odo_sync_out_reset(y);
    odo_sync_send_refused(y, p, sub->stream, sub->len,
                          strcmp(e.name, "ETOOBIG") == 0 ? ODO_REFUSED_TOO_BIG
                                                         : ODO_REFUSED_UNAVAILABLE,
                          e.msg);
    odo_sync_remove_sub(p, sub);
    return SUB_GONE;
  }
  /* the head ends the batch: what it covers is sent */
  y->events_sent += end - sub->next + 1;
  y->batches_sent++;
  sub->next = end + 1;
  odo_sync_send_out(y, p, 1);
  sub->caught_up = 0;
  /* at the end: CAUGHT_UP at once, not a round of every other ready
   * subscription later (a fleet's streams are caught up one by one) */
  if (sub->next > st->cat.last) return at_end(y, p, sub, st);
  return SUB_MORE;
}

/* The subscription of p whose snapshot is going out, or NULL: a receiver
 * assembles one snapshot at a time, so it goes out whole before anything
 * else on the session. */
static sync_sub *snapshot_going(sync_peer *p) {
  if (p->snap_sub && p->snap_sub->snap_raw == NULL) p->snap_sub = NULL;
  return p->snap_sub;
}

/* Whether a subscription owes at most one batch (live traffic, or the
 * end of a catch-up, or a small stream): such subscriptions are served
 * before bulk catch-ups, so a live event never waits behind them. */
static int at_tail(odo_sync *y, sync_sub *sub) {
  odo_stream *st;
  if (sub->snap_raw || sub->want_snap) return 0;
  st = sub_stream(y, sub);
  return st != NULL && sub->next >= st->cat.first &&
         sub->next + ODO_HEAD_EVENTS > st->cat.last;
}

/* One visit of sub, the first subscription on p's ready list (or the
 * one sending a snapshot): when it may send more it goes last on the
 * list (in turn), or stays first (`stay`: bulk serves one catch-up to
 * its end before the next, so streams are caught up one by one, not all
 * at the end); it leaves the list when not. Returns whether it sent
 * something. */
static int visit(lua_State *L, odo_sync *y, sync_peer *p, sync_sub *sub,
                 int stay, int ev) {
  int rc;
  odo_sync_park_sub(p, sub);
  rc = pump_sub(L, y, p, sub, ev);
  if (rc == SUB_MORE) (stay ? odo_sync_wake_sub_first : odo_sync_wake_sub)(p, sub);
  return rc != SUB_IDLE;
}

/* The tail pass (up to the session's high watermark; bulk stops at its
 * low one): one frame for each ready subscription at its tail, over every
 * peer, until none has anything (or budget, the session's watermark or
 * the deadline stop it: the rest on a later turn). Only subscriptions on
 * a ready list are looked at: one with nothing to send costs nothing.
 * Returns the frames sent. */
#define ODO_TAIL_NS 1000000u
static int64_t pump_tails(lua_State *L, odo_sync *y, int64_t budget,
                          uint64_t deadline, int ev) {
  int64_t sent = 0;
  int progress = 1;
  while (progress && sent < budget && odo_mono_ns() < deadline) {
    progress = 0;
    for (sync_peer *p = y->peers; p && sent < budget; p = p->next) {
      /* each subscription ready as the pass begins, once, in turn */
      size_t n = p->nready;
      if (snapshot_going(p)) continue;
      while (n-- > 0 && p->ready && sent < budget && odo_session_writable(p->s)) {
        sync_sub *sub = p->ready;
        if (!at_tail(y, sub)) {
          odo_sync_park_sub(p, sub); /* bulk: its turn comes after the tails */
          odo_sync_wake_sub(p, sub);
          continue;
        }
        if (visit(L, y, p, sub, 0, ev)) {
          progress = 1;
          sent++;
        }
      }
    }
  }
  return sent;
}

int odo_sync_pump(lua_State *L, odo_sync *y, int64_t budget, uint64_t max_ns,
                  int tails_only, int ev) {
  uint64_t now = odo_mono_ns();
  uint64_t deadline = max_ns ? now + max_ns : 0;
  int timed_out = 0;
  /* tails get at least ODO_TAIL_NS (thousands of small streams are tails
   * too: they must not hold the loop either) */
  budget -= pump_tails(L, y, budget,
                       max_ns == 0 ? UINT64_MAX
                                   : now + (max_ns > ODO_TAIL_NS ? max_ns : ODO_TAIL_NS),
                       ev);
  if (deadline && odo_mono_ns() >= deadline) timed_out = 1;
  if (tails_only) { /* bulk, if any, on its own turn */
    for (sync_peer *p = y->peers; p; p = p->next)
      if (p->ready) return 1;
    return budget <= 0;
  }
  /* bulk: the first ready subscription to its end, then the next (a
   * snapshot going out whole first), while the session holds less than
   * bulk_queue (at most its low watermark): a live batch queues behind
   * no more */
  for (sync_peer *p = y->peers; p && budget > 0 && !timed_out; p = p->next) {
    while (budget > 0 && odo_session_bulk_writable_under(p->s, y->bulk_queue)) {
      sync_sub *snap = snapshot_going(p), *sub = snap ? snap : p->ready;
      if (deadline && odo_mono_ns() >= deadline) {
        timed_out = 1; /* the rest on a later turn: live events go first */
        break;
      }
      if (sub == NULL) break;
      if (visit(L, y, p, sub, 1, ev)) budget--;
      else if (snap) break; /* its stream left the store: nothing to send */
    }
  }
  return budget <= 0 || timed_out;
}

/* ---- catalogues -------------------------------------------------------------- */

/* The DER of a source's key for a catalogue: ours, or the stored one. */
static int key_der(odo_sync *y, const char *src, size_t len, odo_buf *out) {
  char *raw = NULL;
  const uint8_t *der;
  size_t n;
  odo_err e = {0};
  out->len = 0;
  if (len == ODO_NODE_ID_HEX && memcmp(y->store->node_id, src, len) == 0) {
    unsigned char *d = NULL;
    int dn = i2d_PUBKEY(y->store->signer, &d);
    int ok = dn > 0 && odo_buf_add(out, d, (size_t)dn);
    OPENSSL_free(d);
    return ok;
  }
  if (odo_store_key_get(y->store, src, len, &raw, &der, &n, &e) != 1) return 0;
  odo_buf_add(out, der, n);
  leveldb_free(raw);
  return 1;
}

/* One CATALOGUE frame for list[0..n), with its own key section. */
static void catalogue_frame(lua_State *L, odo_sync *y, odo_stream **list,
                            size_t n, int full, int hops_idx, int yours_idx) {
  char (*srcs)[ODO_NODE_ID_HEX + 1] = malloc((n + 1) * sizeof *srcs);
  uint16_t nsrc = 0;
  odo_buf keys, der;
  odo_msg_catalogue m;
  size_t f;
  if (srcs == NULL) {
    y->out.failed = 1; /* send_out sends nothing */
    return;
  }
  odo_buf_init(&keys);
  odo_buf_init(&der);
  odo_sync_section_reset(y);
  for (size_t i = 0; i < n; i++) {
    odo_stream *st = list[i];
    uint16_t k;
    if (st->src_len != ODO_NODE_ID_HEX) continue;
    for (k = 0; k < nsrc; k++)
      if (memcmp(srcs[k], st->id, ODO_NODE_ID_HEX) == 0) break;
    if (k < nsrc || !key_der(y, st->id, st->src_len, &der)) continue;
    memcpy(srcs[nsrc], st->id, ODO_NODE_ID_HEX);
    srcs[nsrc][ODO_NODE_ID_HEX] = '\0';
    nsrc++;
    odo_msg_key_put(&keys, der.p, der.len);
  }
  for (size_t i = 0; i < n; i++) {
    odo_stream *st = list[i];
    odo_msg_cat_entry c;
    c.flags = st->own ? ODO_CAT_SOURCE : 0;
    c.hops = st->own ? 0 : ODO_CAT_NO_PATH;
    c.fresh = st->head_known ? st->head : 0;
    c.key = ODO_MSG_NO_KEY;
    if (hops_idx && !st->own) {
      lua_pushlstring(L, st->id, st->id_len);
      lua_rawget(L, hops_idx);
      if (lua_isinteger(L, -1)) {
        lua_Integer h = lua_tointeger(L, -1);
        c.hops = h < 1 ? 1 : h > ODO_CAT_NO_PATH ? ODO_CAT_NO_PATH : (uint8_t)h;
      }
      lua_pop(L, 1);
    }
    if (yours_idx) {
      lua_pushlstring(L, st->id, st->id_len);
      lua_rawget(L, yours_idx);
      if (lua_toboolean(L, -1)) c.flags |= ODO_CAT_FOLLOWS_YOU;
      lua_pop(L, 1);
    }
    for (uint16_t j = 0; j < nsrc; j++)
      if (st->src_len == ODO_NODE_ID_HEX && memcmp(srcs[j], st->id, ODO_NODE_ID_HEX) == 0)
        c.key = j;
    c.id = st->id;
    c.id_len = st->id_len;
    c.first = st->cat.first;
    c.last = st->cat.last;
    c.snap = st->cat.snap;
    odo_msg_cat_entry_put(&y->section, &c);
  }
  m.flags = full ? 1 : 0;
  m.keys.p = keys.p;
  m.keys.len = keys.len;
  m.keys.count = nsrc;
  odo_sync_section_list(y, (uint32_t)n, &m.entries);
  f = odo_frame_begin(&y->out, ODO_MSG_CATALOGUE);
  if (keys.failed) y->out.failed = 1;
  odo_msg_catalogue_encode(&y->out, &m);
  odo_frame_end(&y->out, f);
  odo_buf_free(&keys);
  odo_buf_free(&der);
  free(srcs);
}

unsigned odo_sync_catalogue(lua_State *L, odo_sync *y, odo_stream **list,
                            size_t n, int full, int hops_idx, int yours_idx) {
  unsigned frames = 0;
  for (size_t at = 0; at < n || (full && at == 0); at += ODO_MSG_FRAME_ENTRIES) {
    size_t k = n - at < ODO_MSG_FRAME_ENTRIES ? n - at : ODO_MSG_FRAME_ENTRIES;
    catalogue_frame(L, y, list + at, k, full && at == 0, hops_idx, yours_idx);
    frames++;
  }
  return frames;
}

/* ---- signing heads ------------------------------------------------------------ */

/* The newest signed head's revision (0: none), found in the store once,
 * then kept up to date as heads are written; a head with the writer
 * counts (it is not signed twice). */
static int last_head(odo_sync *y, odo_stream *st, uint64_t *rev, odo_err *e) {
  odo_head h;
  int rc;
  if (!st->head_known) {
    rc = odo_head_read(y->store, st, 0, 1, &h, e);
    if (rc < 0) return 0;
    st->head = rc == 1 ? h.rev : 0;
    st->head_known = 1;
  }
  *rev = st->head > st->head_staged ? st->head : st->head_staged;
  return 1;
}

/* The writer is done with own heads (loop thread): the pump may serve up
 * to them, and Lua hears of it at the next sync:written. Heads that were
 * not written are signed again at the next pass. */
static void heads_written(odo_write_done *d, int ok, const odo_err *e) {
  sync_written *w = (sync_written *)d;
  odo_sync *y = w->y;
  odo_stream *st = odo_store_find(y->store, w->stream, w->len);
  y->writes--;
  if (ok) {
    w->kind = "heads";
    odo_sync_head_stored(y, st, w->stream, w->len, w->rev);
  } else {
    w->e = *e;
    if (st && st->head_staged <= w->rev) st->head_staged = st->head;
  }
  odo_sync_done_push(y, w);
}

/* Ends the signing transaction: while the writer (the commit queue) has
 * writes, hands it over, never waiting on the loop in LevelDB's writer
 * queue (behind a durable commit's fsync); with the writer idle or none,
 * writes it at once (no round trip through the worker for a live head). */
static int commit_heads(odo_sync *y, odo_stream *st, uint64_t rev, odo_err *e) {
  odo_store *s = y->store;
  sync_written *w;
  if (s->writer == NULL || !s->writer->busy(s->writer)) {
    if (!odo_txn_commit(s, 0, e)) return 0;
    odo_sync_head_stored(y, st, st->id, st->id_len, rev);
    return 1;
  }
  w = calloc(1, sizeof *w);
  if (w == NULL) {
    odo_txn_abort(s);
    return odo_err_set(e, "ENOMEM", "out of memory signing heads of stream %.*s",
                       (int)st->id_len, st->id);
  }
  w->done.fn = heads_written;
  w->y = y;
  w->heads = 1;
  memcpy(w->stream, st->id, st->id_len);
  w->len = st->id_len;
  w->rev = rev;
  /* it holds no stream (heads only): a transaction of the loop's own on
   * the stream, such as the next append, does not wait for it */
  s->staging_async = 1;
  if (s->writer->submit(s->writer, 0, NULL, &w->done, e) == 0) {
    s->staging_async = 0;
    free(w);
    return 0;
  }
  s->staging_async = 0;
  y->writes++;
  st->head_staged = rev;
  return 1;
}

/* Signs and stores heads for an own stream's unsigned events: one at
 * every revision that is a multiple of ODO_HEAD_EVENTS, one after
 * ODO_HEAD_BYTES of data, and one at the last revision; each at the end
 * of a stored record (an event, or a segment, which the store cuts at
 * those multiples). Walks about `budget` events (to the end of the
 * record it is in); *more is set when events are left. */
int odo_sync_sign_stream(odo_sync *y, odo_stream *st, uint64_t budget,
                         int *more, odo_err *e) {
  odo_reader r;
  odo_event ev;
  uint64_t from, until, signed_to = 0;
  size_t bytes = 0;
  int rc, signed_n = 0;
  uint8_t msg[ODO_SIGNED_MAX], sig[ODO_MAX_SIG];
  if (!last_head(y, st, &signed_to, e)) return -1;
  from = signed_to ? signed_to + 1 : st->cat.first;
  if (from < st->cat.first) from = st->cat.first;
  if (from > st->cat.last) return 0;
  until = st->cat.last;
  if (until - from + 1 > budget) until = from + budget - 1;
  if (!odo_reader_open(y->store, st, from, st->cat.last, &r, e)) return -1;
  odo_txn_begin(y->store);
  while ((rc = odo_reader_next(&r, &ev, e)) == 1) {
    bytes += ev.data_len;
    if (r.seg_last != 0) continue; /* inside a segment: no head here */
    if (ev.rev % ODO_HEAD_EVENTS == 0 || bytes >= ODO_HEAD_BYTES || ev.rev >= until) {
      size_t sl = sizeof sig;
      size_t mlen = odo_head_message(msg, st->id, st->id_len, ev.rev, ev.hash);
      if (!odo_sign(y->store->signer, msg, mlen, sig, &sl, e)) {
        rc = -1;
        break;
      }
      odo_stage_head(y->store, st, ev.rev, ev.hash, sig, sl);
      signed_n++;
      signed_to = ev.rev;
      bytes = 0;
      if (ev.rev >= until) break;
    }
  }
  if (signed_to < st->cat.last) *more = 1;
  odo_reader_close(&r);
  if (rc < 0) {
    odo_txn_abort(y->store);
    return -1;
  }
  if (signed_n == 0) {
    odo_txn_abort(y->store);
    return 0;
  }
  if (!commit_heads(y, st, signed_to, e)) return -1;
  return signed_n;
}
