/* sync.c - the sync engine: catalogues, subscriptions, catch-up and live
 * streaming between a store and peer sessions, and the source's signed
 * heads and snapshots.
 *
 * Serving: every subscription has the next revision it owes. pump() sends,
 * while the session is under its high watermark, the source snapshot when
 * the subscriber is behind the compaction point, then batches of events
 * that each end exactly at a stored signed head and carry it; when nothing
 * is left it sends CAUGHT_UP once. Catch-up and live streaming are the same
 * loop, so no gap and no duplicate whatever races it, and memory does not
 * grow with a stream's length. Lua calls pump() after anything that may
 * have made work (an append, new heads, a subscription, a drained socket):
 * one call for any number of events and sessions.
 *
 * Receiving: each EVENTS batch is checked (it continues the stream at
 * last + 1; its chain hashes end at the head's hash; the head carries the
 * source's signature) before it is written, with its head, in one write.
 * Nothing unverified reaches the store. */

/***
 * @submodule odo.core
 */
#include <openssl/err.h>
#include <openssl/x509.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "sync.h"

#define SYNC_CLASS "odo.sync"
/* Entries in one CATALOGUE or SUBSCRIBE frame, at most. */
#define SYNC_FRAME_ENTRIES 4096
/* Parsed events kept between EVENTS frames (larger arrays are freed). */
#define SYNC_KEEP_EVENTS 65536

/* What a tampering relay (a spec's test hook, never set otherwise) does to
 * every batch or snapshot it serves. */
enum {
  TAMPER_NONE,
  TAMPER_DATA,     /* changes one event's data */
  TAMPER_DROP,     /* leaves out an event in the middle */
  TAMPER_REORDER,  /* swaps two events */
  TAMPER_FOREIGN,  /* sends another stream's events under this stream's id */
  TAMPER_SNAPSHOT, /* changes a byte of a snapshot */
  TAMPER_OLD_HEAD  /* ends a batch with an older signed head */
};

typedef struct sync_sub {
  char stream[ODO_MAX_STREAM_ID + 1];
  size_t len;
  uint64_t next;  /* next revision owed */
  int live;       /* keep streaming after catching up */
  int caught_up;  /* CAUGHT_UP sent since the last batch */
  int want_snap;  /* send the source snapshot even when not behind it */
  /* a snapshot being sent */
  char *snap_raw;
  odo_snapshot_in snap;
  uint64_t snap_rev;
  uint8_t snap_hash[ODO_HASH_LEN];
  size_t snap_off;
  struct sync_sub *next_sub;
} sync_sub;

/* A stream this node asked a peer for (so stale batches are dropped). */
typedef struct sync_want {
  char stream[ODO_MAX_STREAM_ID + 1];
  size_t len;
  struct sync_want *next;
} sync_want;

typedef struct sync_peer {
  odo_session *s;
  int ref; /* registry reference keeping the session alive */
  char id[ODO_NODE_ID_HEX + 1];
  sync_sub *subs;
  sync_want *wants;
  /* a snapshot being received */
  odo_buf snap;
  char snap_stream[ODO_MAX_STREAM_ID + 1];
  size_t snap_len;
  uint64_t snap_rev;
  uint32_t snap_total;
  struct sync_peer *next;
} sync_peer;

typedef struct src_key {
  char id[ODO_NODE_ID_HEX + 1];
  EVP_PKEY *key;
  struct src_key *next;
} src_key;

typedef struct odo_sync {
  odo_store *store;
  sync_peer *peers;
  src_key *keys;
  int verify;         /* check signatures on what arrives */
  int replica_sync;   /* fsync replica writes */
  size_t max_batch;   /* bytes of one EVENTS frame we build */
  odo_buf out;        /* frames being built */
  int tamper;         /* test hook: a relay that alters what it serves */
  odo_event *evs;     /* scratch for decoding a batch */
  size_t cap_evs;
} odo_sync;

/* ---- bookkeeping ----------------------------------------------------------- */

/* A head was written: keep the stream's newest-head revision current. */
static void note_head(odo_stream *st, uint64_t rev) {
  if (st->head_known && rev > st->head) st->head = rev;
}

static sync_peer *find_peer(odo_sync *y, const odo_session *s) {
  for (sync_peer *p = y->peers; p; p = p->next)
    if (p->s == s) return p;
  return NULL;
}

static void sub_free(sync_sub *sub) {
  if (sub->snap_raw) leveldb_free(sub->snap_raw);
  free(sub);
}

static void peer_free(lua_State *L, sync_peer *p) {
  while (p->subs) {
    sync_sub *n = p->subs->next_sub;
    sub_free(p->subs);
    p->subs = n;
  }
  while (p->wants) {
    sync_want *n = p->wants->next;
    free(p->wants);
    p->wants = n;
  }
  odo_buf_free(&p->snap);
  if (L) luaL_unref(L, LUA_REGISTRYINDEX, p->ref);
  free(p);
}

static sync_want **find_want(sync_peer *p, const char *id, size_t len) {
  sync_want **w = &p->wants;
  for (; *w; w = &(*w)->next)
    if ((*w)->len == len && memcmp((*w)->stream, id, len) == 0) break;
  return w;
}

static sync_sub **find_sub(sync_peer *p, const char *id, size_t len) {
  sync_sub **s = &p->subs;
  for (; *s; s = &(*s)->next_sub)
    if ((*s)->len == len && memcmp((*s)->stream, id, len) == 0) break;
  return s;
}

/* The public key of a stream's source: ours, cached, or from the store. */
static EVP_PKEY *source_key(odo_sync *y, const char *src, size_t len,
                            odo_err *e) {
  char *raw = NULL;
  const uint8_t *der;
  size_t n;
  src_key *k;
  int rc;
  if (len != ODO_NODE_ID_HEX)
    return odo_err_set(e, "EKEY", "source id %.*s is not a key's id", (int)len, src), NULL;
  if (memcmp(y->store->node_id, src, len) == 0) return y->store->signer; /* ours */
  for (k = y->keys; k; k = k->next)
    if (memcmp(k->id, src, len) == 0) return k->key;
  rc = odo_store_key_get(y->store, src, len, &raw, &der, &n, e);
  if (rc <= 0) {
    if (rc == 0)
      odo_err_set(e, "EKEY", "no public key is known for source %.16s...", src);
    return NULL;
  }
  k = calloc(1, sizeof *k);
  if (k) k->key = odo_source_key(der, n, src, len, e);
  leveldb_free(raw);
  if (k == NULL || k->key == NULL) {
    free(k);
    return NULL;
  }
  memcpy(k->id, src, len);
  k->next = y->keys;
  y->keys = k;
  return k->key;
}

static size_t source_len(const char *id, size_t len) {
  const char *slash = memchr(id, '/', len);
  return slash ? (size_t)(slash - id) : len;
}

/* ---- building frames ----------------------------------------------------------- */

/* Empties the shared output buffer: every Lua-facing builder starts with
 * it, so a frame left half built by an argument error is never sent. */
static void out_reset(odo_sync *y) {
  y->out.len = 0;
  y->out.failed = 0;
}

/* Sends the frames built in y->out; a buffer that could not grow sends
 * nothing (a truncated frame would end the session). */
static int send_out(odo_sync *y, sync_peer *p, unsigned frames) {
  int ok = !y->out.failed &&
           odo_session_write_frames(p->s, y->out.p, y->out.len, frames);
  out_reset(y);
  return ok;
}

static void send_refused(odo_sync *y, sync_peer *p, const char *id, size_t len,
                         uint16_t code, const char *why) {
  size_t f = odo_frame_begin(&y->out, ODO_MSG_REFUSED);
  odo_buf_add_str8(&y->out, id, len);
  odo_buf_add_be16(&y->out, code);
  odo_buf_add_str16(&y->out, why, strlen(why));
  odo_frame_end(&y->out, f);
  send_out(y, p, 1);
}

static void send_caught_up(odo_sync *y, sync_peer *p, sync_sub *sub,
                           uint64_t rev) {
  size_t f = odo_frame_begin(&y->out, ODO_MSG_CAUGHT_UP);
  odo_buf_add_str8(&y->out, sub->stream, sub->len);
  odo_buf_add_be64(&y->out, rev);
  odo_frame_end(&y->out, f);
  send_out(y, p, 1);
  sub->caught_up = 1;
}

/* One chunk of the source snapshot a subscriber behind the compaction
 * point needs. Returns 1 while chunks remain, 0 when done, -1 on error. */
static int send_snapshot_chunk(odo_sync *y, sync_peer *p, sync_sub *sub,
                               odo_stream *st) {
  odo_err e = {0};
  size_t n, f;
  if (sub->snap_raw == NULL) {
    int rc = odo_snapshot_read(y->store, st, ODO_ORIGIN_SOURCE, &sub->snap_raw,
                               &sub->snap_rev, &sub->snap, &e);
    if (rc <= 0 || sub->snap_rev + 1 < st->cat.first || sub->snap.sig_len == 0 ||
        sub->snap.data_len > ODO_MAX_SNAPSHOT) {
      int asked = sub->want_snap && sub->next >= st->cat.first;
      if (sub->snap_raw) leveldb_free(sub->snap_raw);
      sub->snap_raw = NULL;
      sub->want_snap = 0;
      if (asked) return 0; /* no snapshot to give: go on with the events */
      send_refused(y, p, sub->stream, sub->len, ODO_REFUSED_GONE,
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
      leveldb_free(sub->snap_raw);
      sub->snap_raw = NULL;
      sub->want_snap = 0;
      send_refused(y, p, sub->stream, sub->len, ODO_REFUSED_UNAVAILABLE, why);
      return -1;
    }
    sub->snap_off = 0;
  }
  n = sub->snap.data_len - sub->snap_off;
  if (n > ODO_SNAPSHOT_CHUNK) n = ODO_SNAPSHOT_CHUNK;
  f = odo_frame_begin(&y->out, ODO_MSG_SNAPSHOT);
  odo_buf_add_str8(&y->out, sub->stream, sub->len);
  odo_buf_add_be64(&y->out, sub->snap_rev);
  odo_buf_add(&y->out, sub->snap_hash, ODO_HASH_LEN);
  odo_buf_add_str8(&y->out, sub->snap.format, sub->snap.format_len);
  odo_buf_add_str16(&y->out, sub->snap.sig, sub->snap.sig_len);
  odo_buf_add_be32(&y->out, (uint32_t)sub->snap.data_len);
  odo_buf_add_be32(&y->out, (uint32_t)sub->snap_off);
  odo_buf_add(&y->out, sub->snap.data + sub->snap_off, n);
  if (y->tamper == TAMPER_SNAPSHOT && n > 0) y->out.p[y->out.len - 1] ^= 0x01;
  odo_frame_end(&y->out, f);
  send_out(y, p, 1);
  sub->snap_off += n;
  if (sub->snap_off < sub->snap.data_len) return 1;
  if (sub->next < sub->snap_rev + 1) sub->next = sub->snap_rev + 1;
  sub->want_snap = 0;
  leveldb_free(sub->snap_raw);
  sub->snap_raw = NULL;
  return 0;
}

/* Encodes events next..head.rev and the head as one EVENTS frame.
 * Returns the frame's size, 0 when there is no head to end at yet, or -1
 * with e set. */
/* Another stream than st, with a head, for TAMPER_FOREIGN. */
static odo_stream *foreign_stream(odo_sync *y, odo_stream *st) {
  odo_store *s = y->store;
  for (size_t i = 0; i < s->nbuckets; i++)
    for (odo_stream *o = s->buckets[i]; o; o = o->next)
      if (o != st && o->cat.last >= o->cat.first) return o;
  return NULL;
}

static long build_batch(odo_sync *y, odo_stream *st, uint64_t next,
                        uint64_t *end, odo_err *e) {
  odo_head h, old;
  odo_reader r;
  odo_event ev;
  odo_stream *src = st;
  size_t f, count_at, swap_at = 0, prev_at = 0;
  uint32_t count = 0;
  uint64_t from = next, mid;
  int rc = odo_head_read(y->store, st, next, 0, &h, e);
  if (rc <= 0) return rc;
  if (h.rev > st->cat.last) return 0;
  *end = h.rev;
  if (y->tamper == TAMPER_FOREIGN && (src = foreign_stream(y, st)) != NULL) {
    /* the other stream's first batch, under this stream's id */
    if (odo_head_read(y->store, src, src->cat.first, 0, &h, e) != 1) src = st;
    else from = src->cat.first;
  }
  if (src == NULL) src = st;
  if (y->tamper == TAMPER_OLD_HEAD && odo_head_read(y->store, st, 1, 0, &old, e) == 1 &&
      old.rev < h.rev)
    h = old; /* keeps the events, claims an older head */
  mid = from + (*end - next) / 2;
  if (!odo_reader_open(y->store, src, from, from + (*end - next), &r, e)) return -1;
  f = odo_frame_begin(&y->out, ODO_MSG_EVENTS);
  odo_buf_add_str8(&y->out, st->id, st->id_len);
  odo_buf_add_be64(&y->out, next);
  count_at = y->out.len;
  odo_buf_add_be32(&y->out, 0);
  while ((rc = odo_reader_next(&r, &ev, e)) == 1) {
    size_t at = y->out.len;
    if (y->tamper == TAMPER_DROP && ev.rev == mid && *end > next) continue;
    if (!odo_event_encode(&y->out, &ev, 0)) {
      rc = -1;
      odo_err_set(e, "ENOMEM", "out of memory building a batch");
      break;
    }
    if (y->tamper == TAMPER_DATA && ev.rev == mid) y->out.p[y->out.len - 1] ^= 0x20;
    if (y->tamper == TAMPER_REORDER && ev.rev == mid + 1 && swap_at == 0) {
      swap_at = at; /* swap this event with the one before it */
      {
        size_t a = at - prev_at, b = y->out.len - at;
        uint8_t *tmp = malloc(a);
        if (tmp) {
          memcpy(tmp, y->out.p + prev_at, a);
          memmove(y->out.p + prev_at, y->out.p + at, b);
          memcpy(y->out.p + prev_at + b, tmp, a);
          free(tmp);
        }
      }
    }
    prev_at = at;
    count++;
  }
  odo_reader_close(&r);
  if (rc < 0) {
    y->out.len = f;
    return -1;
  }
  if (y->tamper == TAMPER_NONE && count != h.rev - next + 1) {
    y->out.len = f;
    return odo_err_set(e, "ECORRUPT", "stream %s: events missing before head %llu",
                       st->id, (unsigned long long)h.rev), -1;
  }
  odo_put_be32(y->out.p + count_at, count);
  odo_buf_add_be64(&y->out, h.rev);
  odo_buf_add(&y->out, h.hash, ODO_HASH_LEN);
  odo_buf_add_str16(&y->out, h.sig, h.sig_len);
  odo_frame_end(&y->out, f);
  if (y->out.len - f > y->max_batch + ODO_FRAME_HEADER) {
    y->out.len = f;
    return odo_err_set(e, "ETOOBIG", "a batch of stream %s is too big to send", st->id), -1;
  }
  return (long)(y->out.len - f);
}

/* Moves one subscription forward by at most one frame. Returns 1 when it
 * sent something, 0 when it has nothing to send now. */
static int pump_sub(lua_State *L, odo_sync *y, sync_peer *p, sync_sub **pp,
                    int ev) {
  sync_sub *sub = *pp;
  odo_stream *st = odo_store_find(y->store, sub->stream, sub->len);
  odo_err e = {0};
  long n;
  uint64_t end = 0;
  if (st == NULL) return 0;
  if (sub->snap_raw || sub->want_snap || sub->next < st->cat.first) {
    int rc = send_snapshot_chunk(y, p, sub, st);
    if (rc < 0) {
      *pp = sub->next_sub;
      sub_free(sub);
    }
    return 1;
  }
  if (sub->next > st->cat.last) {
    if (!sub->caught_up) {
      send_caught_up(y, p, sub, st->cat.last);
      if (!sub->live) {
        *pp = sub->next_sub;
        sub_free(sub);
      }
      return 1;
    }
    return 0;
  }
  n = build_batch(y, st, sub->next, &end, &e);
  if (n == 0) return 0; /* not signed yet: the next head brings it */
  if (n < 0) {
    lua_createtable(L, 0, 4);
    lua_pushstring(L, "error");
    lua_setfield(L, -2, "event");
    lua_pushlstring(L, sub->stream, sub->len);
    lua_setfield(L, -2, "stream");
    lua_pushfstring(L, "%s: %s", e.name, e.msg);
    lua_setfield(L, -2, "reason");
    lua_rawseti(L, ev, (lua_Integer)lua_rawlen(L, ev) + 1);
    y->out.len = 0;
    send_refused(y, p, sub->stream, sub->len,
                 strcmp(e.name, "ETOOBIG") == 0 ? ODO_REFUSED_TOO_BIG
                                                : ODO_REFUSED_UNAVAILABLE,
                 e.msg);
    *pp = sub->next_sub;
    sub_free(sub);
    return 1;
  }
  /* the head ends the batch: what it covers is sent */
  sub->next = end + 1;
  send_out(y, p, 1);
  sub->caught_up = 0;
  return 1;
}

/***
 * Sends what subscriptions are owed, while sessions are under their high
 * watermark, at most `budget` frames in all (default 256).
 * @function sync:pump
 * @treturn boolean whether work is left (call again on a later turn)
 * @treturn table events: {event = "error", stream, reason}
 */
static int l_pump(lua_State *L);

/* ---- receiving ------------------------------------------------------------------ */

static void note(lua_State *L, int ev, const char *kind, const char *stream,
                 size_t len) {
  lua_createtable(L, 0, 5);
  lua_pushstring(L, kind);
  lua_setfield(L, -2, "event");
  if (stream) {
    lua_pushlstring(L, stream, len);
    lua_setfield(L, -2, "stream");
  }
}

static void note_end(lua_State *L, int ev) {
  lua_rawseti(L, ev, (lua_Integer)lua_rawlen(L, ev) + 1);
}

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
  note(L, ev, "violation", stream, len);
  lua_pushstring(L, code);
  lua_setfield(L, -2, "code");
  lua_pushstring(L, msg);
  lua_setfield(L, -2, "reason");
  note_end(L, ev);
}

/* One CATALOGUE entry as read off the wire. */
typedef struct cat_entry {
  uint8_t sl, flags;
  const char *id;
  uint64_t first, last, snap;
  uint16_t key;
} cat_entry;

static int read_cat_entry(odo_rd *r, cat_entry *c) {
  c->sl = odo_rd_u8(r);
  c->id = (const char *)odo_rd_bytes(r, c->sl);
  c->first = odo_rd_be64(r);
  c->last = odo_rd_be64(r);
  c->snap = odo_rd_be64(r);
  c->flags = odo_rd_u8(r);
  c->key = odo_rd_be16(r);
  return !r->bad && c->sl != 0;
}

/* Stages the source key an entry offers, when valid and not yet known;
 * returns whether it did. */
static int bind_offered_key(odo_sync *y, const cat_entry *c,
                             const uint8_t *p, size_t n,
                             const size_t *key_off, uint16_t nkeys) {
  odo_rd kr;
  size_t src = source_len(c->id, c->sl);
  uint16_t kl;
  const uint8_t *der;
  odo_err e = {0};
  EVP_PKEY *key;
  if (c->key == 0xffff || c->key >= nkeys) return 0;
  odo_rd_init(&kr, p + key_off[c->key], n - key_off[c->key]);
  kl = odo_rd_be16(&kr);
  der = odo_rd_bytes(&kr, kl);
  if (der == NULL || kr.bad || source_key(y, c->id, src, &e) != NULL) return 0;
  key = odo_source_key(der, kl, c->id, src, &e);
  if (key == NULL) return 0; /* not the key of that source: ignored */
  EVP_PKEY_free(key);
  odo_stage_key(y->store, c->id, src, der, kl);
  return 1;
}

static void push_cat_entry(lua_State *L, const cat_entry *c) {
  lua_createtable(L, 0, 6);
  lua_pushlstring(L, c->id, c->sl);
  lua_setfield(L, -2, "id");
  odo_pushu64(L, c->first);
  lua_setfield(L, -2, "first");
  odo_pushu64(L, c->last);
  lua_setfield(L, -2, "last");
  odo_pushu64(L, c->snap);
  lua_setfield(L, -2, "snapshot");
  lua_pushboolean(L, c->flags & 1);
  lua_setfield(L, -2, "source");
  lua_pushboolean(L, c->flags & 2);
  lua_setfield(L, -2, "direct");
}

/* A CATALOGUE is read whole before anything is kept: a malformed one
 * binds no key and reports no entry. The keys it offers are stored in
 * one write. */
static void on_catalogue(lua_State *L, int ev, odo_sync *y, const uint8_t *p,
                         size_t n) {
  odo_rd r;
  uint8_t flags;
  uint16_t nkeys;
  uint32_t count;
  size_t *key_off, entries_at;
  uint8_t *staged; /* per key: staged for its source in this frame */
  cat_entry c;
  odo_err e = {0};
  unsigned bound = 0;
  odo_rd_init(&r, p, n);
  flags = odo_rd_u8(&r);
  nkeys = odo_rd_be16(&r);
  if (r.bad || nkeys == 0xffff) return violation(L, ev, NULL, 0, "protocol", "a malformed CATALOGUE");
  /* GC-owned: freed whatever a Lua call below raises */
  key_off = lua_newuserdatauv(L, (nkeys + 1u) * (sizeof *key_off + 1), 0);
  staged = (uint8_t *)(key_off + nkeys + 1);
  memset(staged, 0, nkeys + 1u);
  for (uint16_t i = 0; i < nkeys && !r.bad; i++) {
    key_off[i] = r.pos;
    odo_rd_bytes(&r, odo_rd_be16(&r));
  }
  count = odo_rd_be32(&r);
  if (r.bad || count > odo_rd_left(&r) / (1 + 8 + 8 + 8 + 1 + 2 + 1)) {
    lua_pop(L, 1);
    return violation(L, ev, NULL, 0, "protocol", "a malformed CATALOGUE");
  }
  entries_at = r.pos;
  for (uint32_t i = 0; i < count && !r.bad; i++)
    if (!read_cat_entry(&r, &c)) r.bad = 1;
  if (r.bad || odo_rd_left(&r) != 0) {
    lua_pop(L, 1);
    return violation(L, ev, NULL, 0, "protocol", "a malformed CATALOGUE entry");
  }
  odo_txn_begin(y->store);
  r.pos = entries_at;
  for (uint32_t i = 0; i < count; i++) {
    read_cat_entry(&r, &c);
    /* a key binds only to the source it hashes to: once staged, the other
     * entries of that source have it (staged keys are not read back) */
    if (c.key < nkeys && staged[c.key]) continue;
    if (bind_offered_key(y, &c, p, n, key_off, nkeys)) {
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
  note(L, ev, "catalogue", NULL, 0);
  lua_pushboolean(L, flags & 1);
  lua_setfield(L, -2, "full");
  lua_createtable(L, (int)count, 0);
  r.pos = entries_at;
  for (uint32_t i = 0; i < count; i++) {
    read_cat_entry(&r, &c);
    push_cat_entry(L, &c);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  lua_setfield(L, -2, "entries");
  note_end(L, ev);
  lua_pop(L, 1); /* key_off */
}

/* Reads one SUBSCRIBE entry; 0 when malformed. */
static int read_sub_entry(odo_rd *r, const char **id, uint8_t *sl,
                          uint64_t *from) {
  *sl = odo_rd_u8(r);
  *id = (const char *)odo_rd_bytes(r, *sl);
  *from = odo_rd_be64(r);
  return !r->bad && *sl != 0;
}

/* Whether a peer's requests may still make us answer: a peer that asks
 * while it reads nothing would grow our output without bound. */
static int may_answer(sync_peer *p) {
  return odo_session_queued(p->s) < 2 * p->s->high;
}

/* A SUBSCRIBE is read whole before any of it is acted on. */
static void on_subscribe(lua_State *L, int ev, odo_sync *y, sync_peer *p,
                         const uint8_t *m, size_t n) {
  odo_rd r;
  uint8_t flags, sl;
  uint32_t count;
  size_t entries_at;
  const char *id;
  uint64_t from;
  odo_rd_init(&r, m, n);
  flags = odo_rd_u8(&r);
  count = odo_rd_be32(&r);
  if (r.bad || count > SYNC_FRAME_ENTRIES)
    return violation(L, ev, NULL, 0, "protocol",
                     "a malformed SUBSCRIBE (at most %d streams a frame)",
                     SYNC_FRAME_ENTRIES);
  entries_at = r.pos;
  for (uint32_t i = 0; i < count && !r.bad; i++)
    if (!read_sub_entry(&r, &id, &sl, &from)) r.bad = 1;
  if (r.bad || odo_rd_left(&r) != 0)
    return violation(L, ev, NULL, 0, "protocol", "a malformed SUBSCRIBE entry");
  r.pos = entries_at;
  for (uint32_t i = 0; i < count; i++) {
    sync_sub **pp, *sub;
    read_sub_entry(&r, &id, &sl, &from);
    if (odo_store_find(y->store, id, sl) == NULL) {
      if (!may_answer(p))
        return violation(L, ev, NULL, 0, "protocol",
                         "the peer keeps asking for streams without reading "
                         "the answers (%zu bytes wait for it)",
                         odo_session_queued(p->s));
      send_refused(y, p, id, sl, ODO_REFUSED_UNKNOWN, "this node has no such stream");
      continue;
    }
    pp = find_sub(p, id, sl);
    sub = *pp;
    if (sub == NULL) {
      sub = calloc(1, sizeof *sub);
      if (sub == NULL) return violation(L, ev, id, sl, "local", "out of memory");
      memcpy(sub->stream, id, sl);
      sub->len = sl;
      *pp = sub;
    } else if (sub->snap_raw) {
      leveldb_free(sub->snap_raw);
      sub->snap_raw = NULL;
    }
    sub->next = from ? from : 1;
    sub->live = flags & 1;
    sub->want_snap = (flags & 2) != 0;
    sub->caught_up = 0;
    note(L, ev, "subscribed", id, sl);
    odo_pushu64(L, sub->next);
    lua_setfield(L, -2, "from");
    note_end(L, ev);
  }
}

/* An UNSUBSCRIBE is read whole before any of it is acted on. */
static void on_unsubscribe(lua_State *L, int ev, sync_peer *p,
                           const uint8_t *m, size_t n) {
  odo_rd r;
  uint32_t count;
  size_t entries_at;
  odo_rd_init(&r, m, n);
  count = odo_rd_be32(&r);
  if (r.bad || count > odo_rd_left(&r) / 2)
    return violation(L, ev, NULL, 0, "protocol", "a malformed UNSUBSCRIBE");
  entries_at = r.pos;
  for (uint32_t i = 0; i < count && !r.bad; i++) {
    uint8_t sl = odo_rd_u8(&r);
    if (odo_rd_bytes(&r, sl) == NULL || sl == 0) r.bad = 1;
  }
  if (r.bad || odo_rd_left(&r) != 0)
    return violation(L, ev, NULL, 0, "protocol", "a malformed UNSUBSCRIBE");
  r.pos = entries_at;
  for (uint32_t i = 0; i < count; i++) {
    uint8_t sl = odo_rd_u8(&r);
    const char *id = (const char *)odo_rd_bytes(&r, sl);
    sync_sub **pp = find_sub(p, id, sl);
    if (*pp) {
      sync_sub *sub = *pp;
      *pp = sub->next_sub;
      sub_free(sub);
    }
  }
}

/* Checks a batch's head signature against the stream's source. */
static int verify_head(odo_sync *y, const char *id, size_t len, uint64_t rev,
                       const uint8_t hash[ODO_HASH_LEN], const uint8_t *sig,
                       size_t sig_len, odo_err *e) {
  uint8_t msg[ODO_SIGNED_MAX];
  EVP_PKEY *key;
  size_t mlen;
  if (!y->verify) return 1;
  key = source_key(y, id, source_len(id, len), e);
  if (key == NULL) return 0;
  mlen = odo_head_message(msg, id, len, rev, hash);
  if (sig_len == 0 || !odo_verify(key, msg, mlen, sig, sig_len))
    return odo_err_set(e, "EVERIFY",
                       "the head at %llu of stream %.*s is not signed by its "
                       "source",
                       (unsigned long long)rev, (int)len, id);
  return 1;
}

static void apply_events(lua_State *L, int ev, odo_sync *y, sync_peer *p,
                         const uint8_t *m, size_t n) {
  odo_rd r;
  uint8_t sl;
  const char *id;
  uint64_t first, head_rev;
  uint32_t count;
  const uint8_t *head_hash, *sig;
  uint16_t sig_len;
  odo_stream *st;
  odo_err e = {0};
  odo_rd_init(&r, m, n);
  sl = odo_rd_u8(&r);
  id = (const char *)odo_rd_bytes(&r, sl);
  first = odo_rd_be64(&r);
  count = odo_rd_be32(&r);
  if (r.bad || sl == 0 || count == 0 || count > odo_rd_left(&r) / 14)
    return violation(L, ev, NULL, 0, "protocol", "a malformed EVENTS");
  if (*find_want(p, id, sl) == NULL) return; /* no longer asked for: stale */
  if (count > y->cap_evs) {
    odo_event *evs = realloc(y->evs, count * sizeof *evs);
    if (evs == NULL) return violation(L, ev, id, sl, "protocol", "out of memory");
    y->evs = evs;
    y->cap_evs = count;
  }
  for (uint32_t i = 0; i < count; i++) {
    odo_event *x = &y->evs[i];
    uint32_t dl;
    x->rev = first + i;
    x->ts = odo_rd_be64(&r);
    x->type_len = odo_rd_u8(&r);
    x->type = (const char *)odo_rd_bytes(&r, x->type_len);
    dl = odo_rd_be32(&r);
    x->data = (const char *)odo_rd_bytes(&r, dl);
    x->data_len = dl;
    if (r.bad || x->type_len == 0 || dl > ODO_MAX_DATA)
      return violation(L, ev, id, sl, "protocol", "a malformed event in EVENTS");
  }
  head_rev = odo_rd_be64(&r);
  head_hash = odo_rd_bytes(&r, ODO_HASH_LEN);
  sig_len = odo_rd_be16(&r);
  sig = odo_rd_bytes(&r, sig_len);
  if (r.bad || odo_rd_left(&r) != 0 || sig_len > ODO_MAX_SIG)
    return violation(L, ev, id, sl, "protocol", "a malformed EVENTS head");
  if (head_rev != first + count - 1)
    return violation(L, ev, id, sl, "verification failed",
                     "a batch of %u events from %llu does not end at its head %llu",
                     count, (unsigned long long)first, (unsigned long long)head_rev);
  if (!verify_head(y, id, sl, head_rev, head_hash, sig, sig_len, &e))
    return violation(L, ev, id, sl, "verification failed", "%s", e.msg);
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
    uint64_t have = st->in_txn ? st->staged.last : st->cat.last;
    if (first <= have) {
      /* what we hold already: left over from an earlier subscription */
      odo_txn_abort(y->store);
      return;
    }
    if (first != have + 1) {
      odo_txn_abort(y->store);
      return violation(L, ev, id, sl, "protocol",
                       "a batch of stream %.*s starts at %llu; this node is at %llu",
                       (int)sl, id, (unsigned long long)first, (unsigned long long)have);
    }
  }
  if (!odo_stage_chain(y->store, st, y->evs, count, &e)) {
    odo_txn_abort(y->store);
    return violation(L, ev, id, sl, "verification failed", "%s", e.msg);
  }
  if (memcmp(y->evs[count - 1].hash, head_hash, ODO_HASH_LEN) != 0) {
    odo_txn_abort(y->store);
    return violation(L, ev, id, sl, "verification failed",
                     "events %llu to %llu of stream %.*s do not chain to their "
                     "signed head: they are not what the source wrote",
                     (unsigned long long)first, (unsigned long long)head_rev,
                     (int)sl, id);
  }
  odo_stage_head(y->store, st, head_rev, head_hash, sig, sig_len);
  if (!odo_txn_commit(y->store, y->replica_sync, &e))
    return violation(L, ev, id, sl, "local", "%s: %s", e.name, e.msg);
  note_head(st, head_rev);
  note(L, ev, "events", id, sl);
  odo_pushu64(L, head_rev);
  lua_setfield(L, -2, "last");
  lua_pushinteger(L, count);
  lua_setfield(L, -2, "count");
  note_end(L, ev);
}

/* An EVENTS frame: its events are parsed into y->evs, which is kept for
 * the next frame only while small (a frame of many tiny events must not
 * pin a large array for the session's life). */
static void on_events(lua_State *L, int ev, odo_sync *y, sync_peer *p,
                      const uint8_t *m, size_t n) {
  apply_events(L, ev, y, p, m, n);
  if (y->cap_evs > SYNC_KEEP_EVENTS) {
    free(y->evs);
    y->evs = NULL;
    y->cap_evs = 0;
  }
}

static void on_snapshot(lua_State *L, int ev, odo_sync *y, sync_peer *p,
                        const uint8_t *m, size_t n) {
  odo_rd r;
  uint8_t sl, fl;
  const char *id, *format;
  const uint8_t *hash, *sig, *chunk;
  uint16_t sig_len;
  uint64_t rev;
  uint32_t total, off;
  size_t clen;
  odo_err e = {0};
  odo_rd_init(&r, m, n);
  sl = odo_rd_u8(&r);
  id = (const char *)odo_rd_bytes(&r, sl);
  rev = odo_rd_be64(&r);
  hash = odo_rd_bytes(&r, ODO_HASH_LEN);
  fl = odo_rd_u8(&r);
  format = (const char *)odo_rd_bytes(&r, fl);
  sig_len = odo_rd_be16(&r);
  sig = odo_rd_bytes(&r, sig_len);
  total = odo_rd_be32(&r);
  off = odo_rd_be32(&r);
  clen = odo_rd_left(&r);
  chunk = odo_rd_bytes(&r, clen);
  if (r.bad || sl == 0 || rev == 0 || total > ODO_MAX_SNAPSHOT || sig_len > ODO_MAX_SIG)
    return violation(L, ev, NULL, 0, "protocol", "a malformed SNAPSHOT");
  if (*find_want(p, id, sl) == NULL) return;
  if (off == 0) {
    p->snap.len = 0;
    memcpy(p->snap_stream, id, sl);
    p->snap_len = sl;
    p->snap_rev = rev;
    p->snap_total = total;
  }
  if (p->snap_len != sl || memcmp(p->snap_stream, id, sl) != 0 ||
      p->snap_rev != rev || p->snap_total != total || off != p->snap.len ||
      clen > total - off)
    return violation(L, ev, id, sl, "protocol", "SNAPSHOT chunks out of order");
  if (!odo_buf_add(&p->snap, chunk, clen))
    return violation(L, ev, id, sl, "protocol", "out of memory receiving a snapshot");
  if (p->snap.len < total) return;
  /* whole: the source's signature covers stream, rev, h(rev), the data */
  if (y->verify) {
    uint8_t msg[ODO_SIGNED_MAX];
    EVP_PKEY *key = source_key(y, id, source_len(id, sl), &e);
    size_t mlen;
    if (key == NULL) return violation(L, ev, id, sl, "verification failed", "%s", e.msg);
    mlen = odo_snapshot_message(msg, id, sl, rev, hash, p->snap.p, p->snap.len, format, fl);
    if (mlen == 0) return violation(L, ev, id, sl, "local", "hashing a snapshot failed");
    if (sig_len == 0 || !odo_verify(key, msg, mlen, sig, sig_len))
      return violation(L, ev, id, sl, "verification failed",
                       "the snapshot at %llu of stream %.*s is not signed by its source",
                       (unsigned long long)rev, (int)sl, id);
  }
  {
    odo_snapshot_in in;
    odo_stream *st = odo_store_find(y->store, id, sl);
    int ok;
    in.data = p->snap.p ? (const char *)p->snap.p : "";
    in.data_len = p->snap.len;
    in.format = format;
    in.format_len = fl;
    in.sig = (const char *)sig;
    in.sig_len = sig_len;
    if (st && rev <= st->cat.last && rev + 1 >= st->cat.first) {
      /* we hold its revision: keep it (compaction follows the policy) */
      uint8_t held[ODO_HASH_LEN];
      ok = odo_store_hash_at(y->store, st, rev, held, &e) == 1;
      if (ok && memcmp(held, hash, ODO_HASH_LEN) != 0)
        ok = odo_err_set(&e, "ECHAIN", "the snapshot at %llu does not match the events held",
                         (unsigned long long)rev);
      if (ok) ok = st->own ? odo_err_set(&e, "ESOURCE", "a snapshot of our own stream")
                           : odo_snapshot_store(y->store, st, ODO_ORIGIN_SOURCE, rev, &in, 1, &e);
    } else {
      ok = odo_snapshot_install(y->store, id, sl, rev, hash, &in, &e);
    }
    if (!ok) {
      odo_buf_free(&p->snap);
      if (strcmp(e.name, "ESTALE") == 0) return; /* older than ours: nothing to do */
      return violation(L, ev, id, sl,
                       strcmp(e.name, "ECHAIN") == 0 || strcmp(e.name, "ESOURCE") == 0
                           ? "verification failed"
                           : "local",
                       "%s: %s", e.name, e.msg);
    }
  }
  odo_buf_free(&p->snap);
  note(L, ev, "snapshot", id, sl);
  odo_pushu64(L, rev);
  lua_setfield(L, -2, "rev");
  note_end(L, ev);
}

static void on_caught_up(lua_State *L, int ev, sync_peer *p, const uint8_t *m,
                         size_t n, int refused) {
  odo_rd r;
  uint8_t sl;
  const char *id;
  odo_rd_init(&r, m, n);
  sl = odo_rd_u8(&r);
  id = (const char *)odo_rd_bytes(&r, sl);
  if (r.bad || sl == 0) return violation(L, ev, NULL, 0, "protocol", "a malformed frame");
  if (refused) {
    uint16_t code = odo_rd_be16(&r), rl = odo_rd_be16(&r);
    const char *why = (const char *)odo_rd_bytes(&r, rl);
    if (r.bad || odo_rd_left(&r) != 0) return violation(L, ev, NULL, 0, "protocol", "a malformed REFUSED");
    if (*find_want(p, id, sl) == NULL) return;
    note(L, ev, "refused", id, sl);
    lua_pushinteger(L, code);
    lua_setfield(L, -2, "code");
    lua_pushlstring(L, why, rl);
    lua_setfield(L, -2, "reason");
    note_end(L, ev);
    return;
  }
  {
    uint64_t rev = odo_rd_be64(&r);
    if (r.bad || odo_rd_left(&r) != 0) return violation(L, ev, NULL, 0, "protocol", "a malformed CAUGHT_UP");
    if (*find_want(p, id, sl) == NULL) return;
    note(L, ev, "caught_up", id, sl);
    odo_pushu64(L, rev);
    lua_setfield(L, -2, "rev");
    note_end(L, ev);
  }
}

/* ---- signing ------------------------------------------------------------------ */

/* Signs and stores heads for an own stream's unsigned events: one every
 * ODO_HEAD_EVENTS revisions or ODO_HEAD_BYTES of data, and one at the
 * last revision. Walks at most `budget` events; returns heads signed, or
 * -1 with e set. *more is set when events are left. */
/* The newest signed head's revision (0: none), found in the store once,
 * then kept up to date as heads are written. */
static int last_head(odo_sync *y, odo_stream *st, uint64_t *rev, odo_err *e) {
  odo_head h;
  int rc;
  if (!st->head_known) {
    rc = odo_head_read(y->store, st, 0, 1, &h, e);
    if (rc < 0) return 0;
    st->head = rc == 1 ? h.rev : 0;
    st->head_known = 1;
  }
  *rev = st->head;
  return 1;
}

static int sign_stream(odo_sync *y, odo_stream *st, uint64_t budget, int *more,
                       odo_err *e) {
  odo_reader r;
  odo_event ev;
  uint64_t from, until, since = 0, signed_to = 0;
  size_t bytes = 0;
  int rc, signed_n = 0;
  uint8_t msg[ODO_SIGNED_MAX], sig[ODO_MAX_SIG];
  if (!last_head(y, st, &signed_to, e)) return -1;
  from = signed_to ? signed_to + 1 : st->cat.first;
  if (from < st->cat.first) from = st->cat.first;
  if (from > st->cat.last) return 0;
  until = st->cat.last;
  if (until - from + 1 > budget) {
    until = from + budget - 1;
    *more = 1;
  }
  if (!odo_reader_open(y->store, st, from, until, &r, e)) return -1;
  odo_txn_begin(y->store);
  while ((rc = odo_reader_next(&r, &ev, e)) == 1) {
    since++;
    bytes += ev.data_len;
    if (since >= ODO_HEAD_EVENTS || bytes >= ODO_HEAD_BYTES || ev.rev == until) {
      size_t sl = sizeof sig;
      size_t mlen = odo_head_message(msg, st->id, st->id_len, ev.rev, ev.hash);
      if (!odo_sign(y->store->signer, msg, mlen, sig, &sl, e)) {
        rc = -1;
        break;
      }
      odo_stage_head(y->store, st, ev.rev, ev.hash, sig, sl);
      signed_n++;
      signed_to = ev.rev;
      since = 0;
      bytes = 0;
    }
  }
  odo_reader_close(&r);
  if (rc < 0 || !odo_txn_commit(y->store, 0, e)) {
    odo_txn_abort(y->store);
    return -1;
  }
  note_head(st, signed_to);
  return signed_n;
}

/***
 * Signs heads for this node's own streams' unsigned events (events
 * appended while it was stopped included), walking at most `budget`
 * events (default 100000).
 * @function sync:sign_heads
 * @treturn integer heads signed
 * @treturn boolean whether events are left to sign
 */
static int l_sign_heads(lua_State *L);

/* ---- the Lua class -------------------------------------------------------------- */

static odo_sync *check_sync(lua_State *L) {
  odo_sync *y = luaL_checkudata(L, 1, SYNC_CLASS);
  if (y->store == NULL || y->store->db == NULL)
    luaL_error(L, "attempt to use a closed sync engine");
  return y;
}

static odo_session *check_sess(lua_State *L, int idx) {
  return luaL_checkudata(L, idx, ODO_SESSION_CLASS);
}

static sync_peer *check_peer(lua_State *L, odo_sync *y, int idx) {
  sync_peer *p = find_peer(y, check_sess(L, idx));
  if (p == NULL) luaL_error(L, "the session is not attached to the sync engine");
  return p;
}

static void sync_release(lua_State *L, odo_sync *y) {
  while (y->peers) {
    sync_peer *n = y->peers->next;
    peer_free(L, y->peers);
    y->peers = n;
  }
  while (y->keys) {
    src_key *n = y->keys->next;
    EVP_PKEY_free(y->keys->key);
    free(y->keys);
    y->keys = n;
  }
  odo_buf_free(&y->out);
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
 *   `replica_sync` (default false: fsync replica writes), `max_batch`
 */
static int l_sync(lua_State *L) {
  odo_store *s = odo_store_check(L, 1);
  odo_tls *t = odo_tls_check(L, 2);
  odo_sync *y;
  if (s->node_len != ODO_NODE_ID_HEX || memcmp(s->node_id, t->id, ODO_NODE_ID_HEX) != 0)
    return luaL_argerror(L, 2, "the store belongs to another node than this TLS context's key");
  y = lua_newuserdatauv(L, sizeof *y, 1);
  memset(y, 0, sizeof *y);
  luaL_setmetatable(L, SYNC_CLASS);
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
  if (find_peer(y, s)) return 0;
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
      peer_free(L, p);
      break;
    }
  return 0;
}

/***
 * Handles a sync message (type 0x10..0x16) received on an attached
 * session. Returns events for Lua: catalogue {full, entries}, subscribed
 * {stream, from}, events {stream, last, count}, snapshot {stream, rev},
 * caught_up {stream, rev}, refused {stream, code, reason}, violation
 * {stream, code, reason} (end the session with BYE `code`).
 * @function sync:handle
 */
static int l_handle(lua_State *L) {
  odo_sync *y = check_sync(L);
  sync_peer *p = check_peer(L, y, 2);
  lua_Integer type = luaL_checkinteger(L, 3);
  size_t n;
  const uint8_t *m = (const uint8_t *)luaL_checklstring(L, 4, &n);
  int ev;
  lua_newtable(L);
  ev = lua_gettop(L);
  switch (type) {
  case ODO_MSG_CATALOGUE: on_catalogue(L, ev, y, m, n); break;
  case ODO_MSG_SUBSCRIBE: on_subscribe(L, ev, y, p, m, n); break;
  case ODO_MSG_UNSUBSCRIBE: on_unsubscribe(L, ev, p, m, n); break;
  case ODO_MSG_EVENTS: on_events(L, ev, y, p, m, n); break;
  case ODO_MSG_SNAPSHOT: on_snapshot(L, ev, y, p, m, n); break;
  case ODO_MSG_CAUGHT_UP: on_caught_up(L, ev, p, m, n, 0); break;
  case ODO_MSG_REFUSED: on_caught_up(L, ev, p, m, n, 1); break;
  default:
    violation(L, ev, NULL, 0, "protocol", "an unknown message type %d", (int)type);
  }
  return 1;
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
  out_reset(y);
  /* at most SYNC_FRAME_ENTRIES streams a frame: a long list goes out in
   * several frames (an empty list as one) */
  for (size_t at = 0; at < n || at == 0; at += SYNC_FRAME_ENTRIES) {
    size_t m = n - at < SYNC_FRAME_ENTRIES ? n - at : SYNC_FRAME_ENTRIES;
    f = odo_frame_begin(&y->out, ODO_MSG_SUBSCRIBE);
    odo_buf_add_u8(&y->out, (uint8_t)((live ? 1 : 0) | (snap ? 2 : 0)));
    odo_buf_add_be32(&y->out, (uint32_t)m);
    for (size_t i = at + 1; i <= at + m; i++) {
      size_t sl;
      const char *id;
      uint64_t from;
      sync_want **w;
      lua_rawgeti(L, 3, (lua_Integer)i);
      lua_getfield(L, -1, "id");
      id = lua_tolstring(L, -1, &sl);
      from = odo_fieldu64(L, -2, "from", 1);
      w = find_want(p, id, sl);
      if (*w == NULL) {
        *w = calloc(1, sizeof **w);
        if (*w == NULL) {
          out_reset(y);
          return luaL_error(L, "out of memory");
        }
        memcpy((*w)->stream, id, sl);
        (*w)->len = sl;
      }
      odo_buf_add_str8(&y->out, id, sl);
      odo_buf_add_be64(&y->out, from);
      lua_pop(L, 2);
    }
    odo_frame_end(&y->out, f);
    frames++;
  }
  lua_pushboolean(L, send_out(y, p, frames));
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
  out_reset(y);
  f = odo_frame_begin(&y->out, ODO_MSG_UNSUBSCRIBE);
  odo_buf_add_be32(&y->out, (uint32_t)n);
  for (size_t i = 1; i <= n; i++) {
    size_t sl;
    const char *id;
    sync_want **w;
    lua_rawgeti(L, 3, (lua_Integer)i);
    id = lua_tolstring(L, -1, &sl);
    odo_buf_add_str8(&y->out, id, sl);
    w = find_want(p, id, sl);
    if (*w) {
      sync_want *x = *w;
      *w = x->next;
      free(x);
    }
    lua_pop(L, 1);
  }
  odo_frame_end(&y->out, f);
  lua_pushboolean(L, send_out(y, p, 1));
  return 1;
}

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

/***
 * Sends our catalogue to a peer: every stream (full) when `ids` is nil,
 * else those streams; `direct` is a set of stream ids whose upstream is
 * their source.
 * @function sync:catalogue
 */
/* One CATALOGUE frame for list[0..n): its own key section. */
static void catalogue_frame(lua_State *L, odo_sync *y, odo_stream **list,
                            size_t n, int full, int direct_idx) {
  char (*srcs)[ODO_NODE_ID_HEX + 1] = malloc((n + 1) * sizeof *srcs);
  uint16_t nsrc = 0;
  odo_buf keys, der;
  size_t f;
  if (srcs == NULL) {
    y->out.failed = 1; /* send_out sends nothing */
    return;
  }
  odo_buf_init(&keys);
  odo_buf_init(&der);
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
    odo_buf_add_str16(&keys, der.p, der.len);
  }
  f = odo_frame_begin(&y->out, ODO_MSG_CATALOGUE);
  odo_buf_add_u8(&y->out, full ? 1 : 0);
  odo_buf_add_be16(&y->out, nsrc);
  odo_buf_add(&y->out, keys.p, keys.len);
  odo_buf_add_be32(&y->out, (uint32_t)n);
  for (size_t i = 0; i < n; i++) {
    odo_stream *st = list[i];
    uint8_t flags = st->own ? 3 : 0;
    uint16_t k = 0xffff;
    if (direct_idx) {
      lua_pushlstring(L, st->id, st->id_len);
      lua_rawget(L, direct_idx);
      if (!lua_isnil(L, -1)) flags |= 2;
      lua_pop(L, 1);
    }
    for (uint16_t j = 0; j < nsrc; j++)
      if (st->src_len == ODO_NODE_ID_HEX && memcmp(srcs[j], st->id, ODO_NODE_ID_HEX) == 0) k = j;
    odo_buf_add_str8(&y->out, st->id, st->id_len);
    odo_buf_add_be64(&y->out, st->cat.first);
    odo_buf_add_be64(&y->out, st->cat.last);
    odo_buf_add_be64(&y->out, st->cat.snap);
    odo_buf_add_u8(&y->out, flags);
    odo_buf_add_be16(&y->out, k);
  }
  odo_frame_end(&y->out, f);
  odo_buf_free(&keys);
  odo_buf_free(&der);
  free(srcs);
}

/***
 * Sends our catalogue to a peer: every stream (full) when `ids` is nil,
 * else those streams; `direct` is a set of stream ids whose upstream is
 * their source. A large catalogue goes out in several frames (the first
 * marked full).
 * @function sync:catalogue
 */
static int l_catalogue(lua_State *L) {
  odo_sync *y = check_sync(L);
  sync_peer *p = check_peer(L, y, 2);
  int full = lua_isnoneornil(L, 3), ok = 1;
  int direct;
  odo_store *s = y->store;
  odo_stream **list;
  size_t nlist = 0;
  unsigned frames = 0;
  if (!full) luaL_checktype(L, 3, LUA_TTABLE);
  if (!lua_isnoneornil(L, 4)) luaL_checktype(L, 4, LUA_TTABLE);
  direct = lua_istable(L, 4) ? 4 : 0;
  /* GC-owned, so a memory error while reading ids leaks nothing */
  list = lua_newuserdatauv(L, (s->nstreams + 1) * sizeof *list, 0);
  out_reset(y);
  if (full) {
    for (size_t i = 0; i < s->nbuckets; i++)
      for (odo_stream *st = s->buckets[i]; st; st = st->next) list[nlist++] = st;
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
  for (size_t at = 0; at < nlist || (full && at == 0); at += SYNC_FRAME_ENTRIES) {
    size_t n = nlist - at < SYNC_FRAME_ENTRIES ? nlist - at : SYNC_FRAME_ENTRIES;
    catalogue_frame(L, y, list + at, n, full && at == 0, direct);
    frames++;
  }
  if (frames) ok = send_out(y, p, frames);
  lua_pushboolean(L, ok);
  return 1;
}

static int l_pump(lua_State *L) {
  odo_sync *y = check_sync(L);
  lua_Integer budget = luaL_optinteger(L, 2, 256);
  int more = 0, ev;
  lua_pushnil(L); /* placeholder for `more` */
  lua_newtable(L);
  ev = lua_gettop(L);
  for (sync_peer *p = y->peers; p && budget > 0; p = p->next) {
    int progress = 1;
    while (progress && budget > 0 && odo_session_writable(p->s)) {
      /* a snapshot goes out whole before anything else on this session:
       * a receiver assembles one snapshot at a time */
      sync_sub **busy = NULL;
      progress = 0;
      for (sync_sub **pp = &p->subs; *pp; pp = &(*pp)->next_sub)
        if ((*pp)->snap_raw) busy = pp;
      if (busy) {
        if (pump_sub(L, y, p, busy, ev)) {
          progress = 1;
          budget--;
        }
        continue;
      }
      for (sync_sub **pp = &p->subs; *pp && budget > 0;) {
        sync_sub *sub = *pp;
        if (!odo_session_writable(p->s)) break;
        if (pump_sub(L, y, p, pp, ev)) {
          progress = 1;
          budget--;
        }
        if (*pp == sub) pp = &sub->next_sub;
        if (sub->snap_raw) break; /* it started a snapshot: finish it first */
      }
    }
    if (budget <= 0) more = 1;
  }
  if (budget <= 0) more = 1;
  lua_pushboolean(L, more);
  lua_replace(L, ev - 1);
  return 2;
}

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
      n = sign_stream(y, st, budget, &more, &e);
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
  for (sync_want *w = p->wants; w; w = w->next) {
    lua_pushlstring(L, w->stream, w->len);
    lua_pushboolean(L, 1);
    lua_rawset(L, -3);
  }
  lua_setfield(L, -2, "wanted");
  return 1;
}

/* Test hook: makes this engine a relay that alters what it serves. */
static int l_tamper(lua_State *L) {
  static const char *const kinds[] = {"none", "data", "drop", "reorder", "foreign",
                                      "snapshot", "old_head", NULL};
  odo_sync *y = check_sync(L);
  y->tamper = luaL_checkoption(L, 2, "none", kinds);
  return 0;
}

static int l_sync_gc(lua_State *L) {
  odo_sync *y = luaL_checkudata(L, 1, SYNC_CLASS);
  sync_release(L, y);
  return 0;
}

static int l_sync_tostring(lua_State *L) {
  odo_sync *y = luaL_checkudata(L, 1, SYNC_CLASS);
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
      {"close", l_sync_gc},           {"_tamper", l_tamper},
      {NULL, NULL}};
  odo_newclass(L, SYNC_CLASS, methods, l_sync_gc, l_sync_tostring);
  lua_pushcfunction(L, l_sync);
  lua_setfield(L, -2, "sync");
}
