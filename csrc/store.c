/* store.c - the event store's state: opening a LevelDB directory bound to
 * one node id, node metadata, the in-memory catalogue (a hash map of
 * streams), transactions, reading and writing framed records, snapshot
 * records read back, LevelDB error mapping, and the store's own Lua
 * methods (open, close, streams, info). The bottom of the store's files:
 * store_events.c, store_snapshots.c and store_peers.c build on it and the
 * Lua class (store_class.c) on all of them.
 *
 * Over 600 lines, and one job: the catalogue in memory and its
 * transactions are one piece of state (a commit moves staged entries into
 * the map; opening loads the map from the records the commit writes), and
 * splitting them would put that state's invariants in two files. */

/***
 * @submodule odo.core
 */
#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "store.h"
#include "thread_prio.h"

#define ODO_BLOCK_SIZE (16u << 10) /* LevelDB table blocks (see store_open) */

/* The catalogue record holds what events cannot tell: the stream's key
 * number, first held revision, source snapshot revision, purge progress
 * and h(first - 1). The last revision and its hash are those of the
 * stream's highest event, read back at open, so an append writes events
 * only and never rewrites a catalogue key (which would make every LevelDB
 * table overlap and multiply compaction work). */

/* ---- errors ---------------------------------------------------------- */

int odo_iter_ok(leveldb_iterator_t *it, odo_err *e, const char *doing) {
  char *err = NULL;
  leveldb_iter_get_error(it, &err);
  return err ? odo_store_dberr(e, err, doing) : 1;
}

int odo_store_dberr(odo_err *e, char *dberr, const char *doing) {
  const char *name = "EIO";
  if (strstr(dberr, "lock") &&
      (strstr(dberr, "already held") || strstr(dberr, "temporarily")))
    name = "EBUSY";
  else if (strncmp(dberr, "Corruption", 10) == 0)
    name = "ECORRUPT";
  else if (strstr(dberr, "No space left"))
    name = "ENOSPC";
  else if (strstr(dberr, "does not exist"))
    name = "ENOENT";
  else if (strstr(dberr, "Permission denied"))
    name = "EACCES";
  if (strcmp(name, "EBUSY") == 0)
    odo_err_set(e, name,
                "%s: the store is already open, in this process or another "
                "(%s); close it or stop the node that uses it",
                doing, dberr);
  else if (strcmp(name, "ENOSPC") == 0)
    odo_err_set(e, name,
                "%s: the disk is full (%s); nothing was written; free space "
                "and reopen the store",
                doing, dberr);
  else
    odo_err_set(e, name, "%s: %s", doing, dberr);
  leveldb_free(dberr);
  return 0;
}

/* ---- keys and framed values -------------------------------------------- */

int odo_store_put(odo_store *s, const uint8_t *key, size_t klen, odo_buf *b) {
  if (!odo_rec_seal(b, key, klen)) {
    s->txn_failed = 1;
    return 0;
  }
  leveldb_writebatch_put(s->batch, (const char *)key, klen,
                         (const char *)b->p, b->len);
  return 1;
}

void odo_store_del(odo_store *s, const uint8_t *key, size_t klen) {
  leveldb_writebatch_delete(s->batch, (const char *)key, klen);
}

static void describe_key(const uint8_t *key, size_t klen, char *out,
                         size_t outlen) {
  if (klen == ODO_NUMKEY_LEN || klen == ODO_HEADKEY_LEN)
    snprintf(out, outlen, "record '%c' #%llu/%llu", key[0],
             (unsigned long long)odo_get_be64(key + 1),
             (unsigned long long)odo_get_be64(key + 9));
  else
    snprintf(out, outlen, "record '%c' %.*s", key[0], (int)(klen - 1),
             (const char *)key + 1);
}

int odo_store_get(odo_store *s, const uint8_t *key, size_t klen, char **raw,
                  const uint8_t **payload, size_t *plen, odo_err *e) {
  char *err = NULL, what[300];
  size_t vlen = 0;
  *raw = leveldb_get(s->db, s->ropts, (const char *)key, klen, &vlen, &err);
  if (err) return odo_store_dberr(e, err, "read"), -1;
  if (*raw == NULL) return 0;
  *payload = odo_rec_open(key, klen, *raw, vlen, plen);
  if (*payload == NULL) {
    leveldb_free(*raw);
    *raw = NULL;
    describe_key(key, klen, what, sizeof what);
    odo_err_set(e, "ECORRUPT", "%s in %s: checksum mismatch", what, s->path);
    return -1;
  }
  return 1;
}

/* ---- snapshot records -------------------------------------------------- */

/* (store.h) */
int odo_snapshot_rec_read(odo_store *s, odo_stream *st, int origin, char **raw,
                          odo_snap_rec *sr, odo_err *e) {
  uint8_t key[ODO_NUMKEY_LEN];
  const uint8_t *p;
  size_t n;
  int rc;
  odo_numkey(key, ODO_K_SNAP, st->num, (uint64_t)origin);
  rc = odo_store_get(s, key, sizeof key, raw, &p, &n, e);
  if (rc != 1) return rc;
  if (!odo_rec_snapshot_decode(p, n, sr)) {
    leveldb_free(*raw);
    *raw = NULL;
    odo_err_set(e, "ECORRUPT", "the %s snapshot of stream %s is damaged",
                odo_origin_name(origin), st->id);
    return -1;
  }
  return 1;
}

int odo_snapshot_meta(odo_store *s, odo_stream *st, int origin, uint64_t *rev,
                      uint8_t hash[ODO_HASH_LEN], odo_err *e) {
  char *raw = NULL;
  odo_snap_rec sr;
  int rc = odo_snapshot_rec_read(s, st, origin, &raw, &sr, e);
  if (rc == 1) {
    *rev = sr.rev;
    memcpy(hash, sr.hash, ODO_HASH_LEN);
    leveldb_free(raw);
  }
  return rc;
}

int odo_snapshot_read(odo_store *s, odo_stream *st, int origin, char **raw,
                      uint64_t *rev, odo_snapshot_in *out, odo_err *e) {
  odo_snap_rec sr;
  int rc = odo_snapshot_rec_read(s, st, origin, raw, &sr, e);
  if (rc != 1) return rc;
  *rev = sr.rev;
  out->data = sr.data;
  out->data_len = sr.data_len;
  out->format = sr.format;
  out->format_len = sr.format_len;
  out->sig = sr.sig;
  out->sig_len = sr.sig_len;
  return 1;
}

/* ---- the catalogue in memory ------------------------------------------- */

static uint64_t hash_id(const char *id, size_t len) {
  return odo_fnv1a(id, len);
}

odo_stream *odo_store_find(odo_store *s, const char *id, size_t len) {
  odo_stream *st;
  if (s->nbuckets == 0) return NULL;
  st = s->buckets[hash_id(id, len) & (s->nbuckets - 1)];
  for (; st; st = st->next)
    if (st->id_len == len && memcmp(st->id, id, len) == 0) return st;
  return NULL;
}

static int map_grow(odo_store *s) {
  size_t n = s->nbuckets ? s->nbuckets * 2 : 64;
  odo_stream **b = calloc(n, sizeof *b);
  if (b == NULL) return 0;
  for (size_t i = 0; i < s->nbuckets; i++) {
    odo_stream *st = s->buckets[i], *next;
    for (; st; st = next) {
      size_t j = hash_id(st->id, st->id_len) & (n - 1);
      next = st->next;
      st->next = b[j];
      b[j] = st;
    }
  }
  free(s->buckets);
  s->buckets = b;
  s->nbuckets = n;
  return 1;
}

static int map_insert(odo_store *s, odo_stream *st) {
  size_t j;
  if (s->nstreams >= s->nbuckets && !map_grow(s)) return 0;
  j = hash_id(st->id, st->id_len) & (s->nbuckets - 1);
  st->next = s->buckets[j];
  s->buckets[j] = st;
  s->nstreams++;
  return 1;
}

static void map_remove(odo_store *s, odo_stream *st) {
  odo_stream **pp = &s->buckets[hash_id(st->id, st->id_len) &
                                (s->nbuckets - 1)];
  for (; *pp; pp = &(*pp)->next)
    if (*pp == st) {
      *pp = st->next;
      s->nstreams--;
      s->streams_freed++;
      return;
    }
}

static void stream_free(odo_stream *st) {
  if (st) free(st->id);
  free(st);
}

static int valid_name_bytes(const char *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)p[i] < 0x20 || p[i] == 0x7f) return 0;
  return 1;
}

/* A stream id is SOURCE or SOURCE/NAME; SOURCE is a node id. */
static int check_stream_id(const char *id, size_t len, size_t *src_len,
                           odo_err *e) {
  const char *slash = memchr(id, '/', len);
  size_t sl = slash ? (size_t)(slash - id) : len;
  if (len == 0 || len > ODO_MAX_STREAM_ID)
    return odo_err_set(e, "EINVAL",
                       "a stream id must be 1 to %d bytes, got %zu",
                       ODO_MAX_STREAM_ID, len);
  if (sl == 0 || sl > ODO_MAX_NODE_ID || (slash && sl + 1 == len))
    return odo_err_set(e, "EINVAL",
                       "stream id '%.*s' is not NODE_ID or NODE_ID/NAME",
                       (int)len, id);
  if (!valid_name_bytes(id, len))
    return odo_err_set(e, "EINVAL",
                       "stream id '%.*s' contains control characters",
                       (int)len, id);
  *src_len = sl;
  return 1;
}

int odo_store_own_id(const odo_store *s, const char *id, size_t len) {
  const char *slash = memchr(id, '/', len);
  size_t sl = slash ? (size_t)(slash - id) : len;
  return sl == s->node_len && memcmp(id, s->node_id, sl) == 0;
}

odo_stream *odo_store_stream(odo_store *s, const char *id, size_t len,
                             int create, odo_err *e) {
  odo_stream *st = odo_store_find(s, id, len);
  size_t src_len;
  if (st || !create) return st;
  if (!check_stream_id(id, len, &src_len, e)) return NULL;
  st = calloc(1, sizeof *st);
  if (st) st->id = malloc(len + 1);
  if (st == NULL || st->id == NULL) {
    stream_free(st);
    odo_err_set(e, "ENOMEM", "out of memory creating stream");
    return NULL;
  }
  memcpy(st->id, id, len);
  st->id[len] = '\0';
  st->id_len = len;
  st->src_len = src_len;
  st->own = odo_store_own_id(s, id, len);
  st->num = s->next_num++;
  st->cat.first = 1;
  if (!odo_chain_genesis(&s->hasher, id, len, st->cat.base)) {
    stream_free(st);
    odo_err_set(e, "EIO", "SHA-256 failed");
    return NULL;
  }
  memcpy(st->cat.hash, st->cat.base, ODO_HASH_LEN);
  if (!map_insert(s, st)) {
    stream_free(st);
    odo_err_set(e, "ENOMEM", "out of memory creating stream");
    return NULL;
  }
  st->is_new = 1;
  /* A new stream exists only inside the transaction that creates it. */
  odo_txn_touch(s, st);
  return st;
}

static int cat_encode(odo_buf *b, const odo_stream *st, const odo_cat *c) {
  odo_cat_rec r;
  r.num = st->num;
  r.first = c->first;
  r.snap = c->snap;
  r.purged = c->purged;
  memcpy(r.base, c->base, ODO_HASH_LEN);
  return odo_rec_cat_encode(b, &r);
}

static int cat_decode(const uint8_t *p, size_t n, uint64_t *num, odo_cat *c) {
  odo_cat_rec r;
  if (!odo_rec_cat_decode(p, n, &r)) return 0;
  *num = r.num;
  c->first = r.first;
  c->snap = r.snap;
  c->purged = r.purged;
  memcpy(c->base, r.base, ODO_HASH_LEN);
  /* until the events say otherwise: nothing held */
  c->last = c->first - 1;
  memcpy(c->hash, c->base, ODO_HASH_LEN);
  return 1;
}

/* Whether a change touches what the catalogue record holds. */
static int cat_record_changed(const odo_cat *a, const odo_cat *b) {
  return a->first != b->first || a->snap != b->snap ||
         a->purged != b->purged ||
         memcmp(a->base, b->base, ODO_HASH_LEN) != 0;
}

/* Sets last and hash from the stream's highest event at or past first
 * (a single event's record, or the last of a segment). */
static int cat_find_last(odo_store *s, odo_stream *st, leveldb_iterator_t *it,
                         odo_err *e) {
  uint8_t key[ODO_NUMKEY_LEN];
  size_t kl, vl, pl;
  const uint8_t *k, *p;
  const char *v;
  uint64_t rev = 0;
  int kind;
  odo_event ev;
  odo_seg_rec sr;
  odo_numkey(key, ODO_K_EVENT, st->num + 1, 0);
  leveldb_iter_seek(it, (const char *)key, sizeof key);
  if (leveldb_iter_valid(it)) leveldb_iter_prev(it);
  else leveldb_iter_seek_to_last(it);
  /* the last event, past its signed head; a damaged block LevelDB stepped
   * over must fail the open, or the stream would look shorter than it is
   * and the next append would rewrite history */
  for (;;) {
    if (!leveldb_iter_valid(it)) return odo_iter_ok(it, e, "finding a stream's last event");
    k = (const uint8_t *)leveldb_iter_key(it, &kl);
    kind = odo_logkey_kind(k, kl, st->num, &rev);
    if (kind == ODO_LOG_EVENT || kind == ODO_LOG_SEGMENT) break;
    if (kind == ODO_LOG_OTHER && (kl < ODO_NUMKEY_LEN || k[0] != ODO_K_EVENT ||
                                  odo_get_be64(k + 1) != st->num))
      return odo_iter_ok(it, e, "finding a stream's last event");
    leveldb_iter_prev(it);
  }
  if (!odo_iter_ok(it, e, "finding a stream's last event")) return 0;
  if (rev < st->cat.first) return 1;
  v = leveldb_iter_value(it, &vl);
  if (kind == ODO_LOG_EVENT ? !odo_rec_event_decode(k, v, vl, &ev)
                            : (p = odo_rec_open(k, kl, v, vl, &pl)) == NULL ||
                                  !odo_rec_segment_decode(p, pl, &sr) || sr.count > rev)
    return odo_err_set(e, "ECORRUPT",
                       "%s: the last event (%llu) of stream %s is damaged",
                       s->path, (unsigned long long)rev, st->id);
  st->cat.last = rev;
  memcpy(st->cat.hash, kind == ODO_LOG_EVENT ? ev.hash : sr.last, ODO_HASH_LEN);
  return 1;
}

static int cat_key(odo_buf *k, const odo_stream *st) {
  k->len = 0;
  return odo_buf_add_u8(k, ODO_K_CAT) && odo_buf_add(k, st->id, st->id_len);
}

/* ---- transactions ------------------------------------------------------ */

void odo_txn_begin(odo_store *s) {
  if (s->txn_open) odo_txn_abort(s);
  leveldb_writebatch_clear(s->batch);
  s->ntouched = 0;
  s->txn_open = 1;
  s->txn_failed = 0;
}

const odo_cat *odo_stream_tip(const odo_stream *st) {
  return st->in_txn ? &st->staged : st->inflight ? &st->tip : &st->cat;
}

void odo_store_settle(odo_store *s, odo_stream *st) {
  if (st && st->inflight && !s->staging_async && s->writer)
    s->writer->settle(s->writer);
}

odo_cat *odo_txn_touch(odo_store *s, odo_stream *st) {
  if (!st->in_txn) {
    odo_store_settle(s, st); /* a write of ours follows the writer's */
    if (s->ntouched == s->captouched) {
      size_t n = s->captouched ? s->captouched * 2 : 16;
      odo_stream **t = realloc(s->touched, n * sizeof *t);
      if (t == NULL) {
        s->txn_failed = 1; /* the commit refuses; writes go to scratch */
        return &s->scratch;
      }
      s->touched = t;
      s->captouched = n;
    }
    s->touched[s->ntouched++] = st;
    st->staged = st->inflight ? st->tip : st->cat;
    st->in_txn = 1;
  }
  return &st->staged;
}

void odo_txn_abort(odo_store *s) {
  for (size_t i = 0; i < s->ntouched; i++) {
    odo_stream *st = s->touched[i];
    st->in_txn = 0;
    if (st->is_new && !st->inflight) {
      map_remove(s, st);
      stream_free(st);
    }
  }
  s->ntouched = 0;
  s->txn_open = 0;
  s->txn_failed = 0;
  leveldb_writebatch_clear(s->batch);
}

static void note_changed(odo_store *s, odo_stream *st) {
  if (st->changed) return;
  if (s->nchanged == s->capchanged) {
    size_t n = s->capchanged ? s->capchanged * 2 : 16;
    odo_stream **t = realloc(s->changed, n * sizeof *t);
    if (t == NULL) return; /* Lua polls the catalogue as well */
    s->changed = t;
    s->capchanged = n;
  }
  s->changed[s->nchanged++] = st;
  st->changed = 1;
}

/* Adds the catalogue records of the touched streams that changed to the
 * batch; 0 (the transaction aborted, e set) when out of memory. */
static int stage_catalogue(odo_store *s, odo_err *e) {
  odo_buf key;
  odo_buf_init(&key);
  for (size_t i = 0; i < s->ntouched; i++) {
    odo_stream *st = s->touched[i];
    const odo_cat *was = st->inflight ? &st->tip : &st->cat;
    if (!st->is_new && !cat_record_changed(was, &st->staged)) continue;
    if (!cat_key(&key, st)) goto nomem;
    odo_rec_begin(&s->val);
    if (!cat_encode(&s->val, st, &st->staged)) goto nomem;
    odo_store_put(s, key.p, key.len, &s->val);
  }
  odo_buf_free(&key);
  if (s->txn_failed) goto nomem;
  return 1;
nomem:
  odo_buf_free(&key);
  odo_txn_abort(s);
  return odo_err_set(e, "ENOMEM", "out of memory staging a write");
}

int odo_txn_commit(odo_store *s, int sync, odo_err *e) {
  char *err = NULL;
  if (!stage_catalogue(s, e)) return 0;
  leveldb_write(s->db, sync ? s->wsync : s->wnosync, s->batch, &err);
  if (err) {
    odo_store_dberr(e, err, "write");
    odo_txn_abort(s);
    return 0;
  }
  for (size_t i = 0; i < s->ntouched; i++) {
    odo_stream *st = s->touched[i];
    st->cat = st->staged;
    st->in_txn = 0;
    st->is_new = 0;
    note_changed(s, st);
  }
  s->ntouched = 0;
  s->txn_open = 0;
  leveldb_writebatch_clear(s->batch);
  return 1;
}

int odo_txn_detach(odo_store *s, odo_detached *d, odo_err *e) {
  size_t n = s->ntouched;
  memset(d, 0, sizeof *d);
  if (!stage_catalogue(s, e)) return 0;
  d->streams = malloc((n ? n : 1) * sizeof *d->streams);
  d->cats = malloc((n ? n : 1) * sizeof *d->cats);
  d->batch = leveldb_writebatch_create();
  if (d->streams == NULL || d->cats == NULL) {
    free(d->streams);
    free(d->cats);
    leveldb_writebatch_destroy(d->batch);
    memset(d, 0, sizeof *d);
    odo_txn_abort(s);
    return odo_err_set(e, "ENOMEM", "out of memory staging a write");
  }
  { /* the store keeps a fresh batch; the staged one goes */
    leveldb_writebatch_t *b = s->batch;
    s->batch = d->batch;
    d->batch = b;
  }
  for (size_t i = 0; i < n; i++) {
    odo_stream *st = s->touched[i];
    d->streams[i] = st;
    d->cats[i] = st->staged;
    st->tip = st->staged;
    st->inflight++;
    st->in_txn = 0;
  }
  d->n = n;
  s->ntouched = 0;
  s->txn_open = 0;
  return 1;
}

void odo_txn_settle(odo_store *s, odo_detached *d, int ok) {
  for (size_t i = 0; i < d->n; i++) {
    odo_stream *st = d->streams[i];
    st->inflight--;
    if (ok) {
      st->cat = d->cats[i];
      st->is_new = 0;
      note_changed(s, st);
    } else if (st->is_new && st->inflight == 0) {
      map_remove(s, st); /* it was never written */
      stream_free(st);
    }
  }
  free(d->streams);
  free(d->cats);
  d->streams = NULL;
  d->cats = NULL;
  d->n = 0;
}

/* ---- metadata and opening ---------------------------------------------- */

static int meta_key(odo_buf *k, const char *name) {
  k->len = 0;
  return odo_buf_add_u8(k, ODO_K_META) && odo_buf_add(k, name, strlen(name));
}

static void meta_put(odo_store *s, const char *name, const void *p,
                     size_t n) {
  odo_buf k;
  odo_buf_init(&k);
  odo_rec_begin(&s->val);
  odo_buf_add(&s->val, p, n);
  if (meta_key(&k, name)) odo_store_put(s, k.p, k.len, &s->val);
  else s->txn_failed = 1;
  odo_buf_free(&k);
}

/* 1 found (payload copied into out, at most cap bytes), 0 absent, -1 bad. */
static int meta_get(odo_store *s, const char *name, uint8_t *out, size_t cap,
                    size_t *n, odo_err *e) {
  odo_buf k;
  char *raw = NULL;
  const uint8_t *p;
  size_t plen;
  int rc;
  odo_buf_init(&k);
  if (!meta_key(&k, name)) {
    odo_buf_free(&k);
    return odo_err_set(e, "ENOMEM", "out of memory reading metadata"), -1;
  }
  rc = odo_store_get(s, k.p, k.len, &raw, &p, &plen, e);
  odo_buf_free(&k);
  if (rc == 1) {
    if (plen > cap) {
      leveldb_free(raw);
      return odo_err_set(e, "ECORRUPT", "metadata '%s' is %zu bytes long",
                         name, plen), -1;
    }
    memcpy(out, p, plen);
    *n = plen;
    leveldb_free(raw);
  }
  return rc;
}

static int db_is_empty(odo_store *s) {
  leveldb_iterator_t *it = leveldb_create_iterator(s->db, s->ropts);
  int empty;
  leveldb_iter_seek_to_first(it);
  empty = !leveldb_iter_valid(it);
  leveldb_iter_destroy(it);
  return empty;
}

/* Writes the meta records put in s->batch, synced. */
static int meta_write(odo_store *s, const char *doing, odo_err *e) {
  char *err = NULL;
  if (s->txn_failed) return odo_err_set(e, "ENOMEM", "out of memory %s", doing);
  leveldb_write(s->db, s->wsync, s->batch, &err);
  leveldb_writebatch_clear(s->batch);
  if (err) return odo_store_dberr(e, err, doing);
  return 1;
}

/* A store of format 1 reads as it is in format 2 (which adds segments
 * to the log); its record says 2 from now on, so an older odo-journal,
 * which would not read the segments this one writes, refuses it. */
static int upgrade_format(odo_store *s, odo_err *e) {
  uint8_t fmt[4];
  odo_put_be32(fmt, ODO_STORE_FORMAT);
  leveldb_writebatch_clear(s->batch);
  s->txn_failed = 0;
  meta_put(s, "format", fmt, 4);
  return meta_write(s, "upgrading the store's format", e);
}

static int init_meta(odo_store *s, const char *node_id, odo_err *e) {
  uint8_t buf[ODO_MAX_NODE_ID], fmt[4], created[8];
  size_t n = 0;
  int rc = meta_get(s, "format", fmt, sizeof fmt, &n, e);
  if (rc < 0) return 0;
  if (rc == 0) {
    if (!db_is_empty(s))
      return odo_err_set(e, "EFORMAT",
                         "%s holds a LevelDB database that is not an "
                         "odo-journal store",
                         s->path);
    if (node_id == NULL)
      return odo_err_set(e, "ENOENT",
                         "no store at %s yet, and no node id to create one "
                         "with",
                         s->path);
    s->node_len = strlen(node_id);
    memcpy(s->node_id, node_id, s->node_len + 1);
    s->created = odo_now_ms();
    odo_put_be32(fmt, ODO_STORE_FORMAT);
    odo_put_be64(created, s->created);
    leveldb_writebatch_clear(s->batch);
    s->txn_failed = 0;
    meta_put(s, "format", fmt, 4);
    meta_put(s, "node", node_id, s->node_len);
    meta_put(s, "created", created, 8);
    return meta_write(s, "creating the store", e);
  }
  if (n != 4)
    return odo_err_set(e, "ECORRUPT", "%s: bad format record", s->path);
  if (odo_get_be32(fmt) > ODO_STORE_FORMAT)
    return odo_err_set(e, "EFORMAT",
                       "%s is in store format %u, newer than this "
                       "odo-journal reads (%d); upgrade odo-journal to open it",
                       s->path, (unsigned)odo_get_be32(fmt), ODO_STORE_FORMAT);
  if (odo_get_be32(fmt) < ODO_STORE_FORMAT && !upgrade_format(s, e)) return 0;
  if (meta_get(s, "node", buf, sizeof buf, &n, e) != 1)
    return e->name ? 0
                   : odo_err_set(e, "ECORRUPT", "%s: node id missing",
                                 s->path);
  if (node_id && (strlen(node_id) != n || memcmp(node_id, buf, n) != 0))
    return odo_err_set(e, "EIDENTITY",
                       "%s belongs to node %.*s, not %s; each node needs its "
                       "own store",
                       s->path, (int)n, (const char *)buf, node_id);
  memcpy(s->node_id, buf, n);
  s->node_id[n] = '\0';
  s->node_len = n;
  if (meta_get(s, "created", created, sizeof created, &n, e) == 1 && n == 8)
    s->created = odo_get_be64(created);
  return 1;
}

/* A snapshot written by a worker thread is recorded in the catalogue by
 * a second write; if the node stopped between the two, the snapshot
 * record is the truth. */
static int cat_find_snap(odo_store *s, odo_stream *st, odo_err *e) {
  uint64_t rev;
  uint8_t hash[ODO_HASH_LEN];
  int rc = odo_snapshot_meta(s, st, ODO_ORIGIN_SOURCE, &rev, hash, e);
  if (rc < 0) return 0;
  if (rc == 1 && rev > st->cat.snap && rev <= st->cat.last) st->cat.snap = rev;
  return 1;
}

static int load_catalogue(odo_store *s, odo_err *e) {
  leveldb_iterator_t *it = leveldb_create_iterator(s->db, s->ropts);
  leveldb_iterator_t *evit = leveldb_create_iterator(s->db, s->ropts);
  char tag = ODO_K_CAT;
  int ok = 1;
  leveldb_iter_seek(it, &tag, 1);
  for (; ok && leveldb_iter_valid(it); leveldb_iter_next(it)) {
    size_t klen, vlen, plen, src_len;
    const char *k = leveldb_iter_key(it, &klen);
    const char *v = leveldb_iter_value(it, &vlen);
    const uint8_t *p;
    odo_stream *st;
    odo_cat c;
    uint64_t num;
    if (klen == 0 || k[0] != ODO_K_CAT) break;
    p = odo_rec_open((const uint8_t *)k, klen, v, vlen, &plen);
    if (p == NULL || !cat_decode(p, plen, &num, &c) ||
        !check_stream_id(k + 1, klen - 1, &src_len, e)) {
      ok = odo_err_set(e, "ECORRUPT",
                       "%s: the catalogue entry of stream '%.*s' is damaged",
                       s->path, (int)(klen - 1), k + 1);
      break;
    }
    st = calloc(1, sizeof *st);
    if (st) st->id = malloc(klen);
    if (st == NULL || st->id == NULL) {
      stream_free(st);
      ok = odo_err_set(e, "ENOMEM", "out of memory loading the catalogue");
      break;
    }
    memcpy(st->id, k + 1, klen - 1);
    st->id[klen - 1] = '\0';
    st->id_len = klen - 1;
    st->src_len = src_len;
    st->own = odo_store_own_id(s, k + 1, klen - 1);
    st->num = num;
    st->cat = c;
    if (!cat_find_last(s, st, evit, e) || !cat_find_snap(s, st, e) ||
        !map_insert(s, st)) {
      stream_free(st);
      ok = e->name ? 0
                   : odo_err_set(e, "ENOMEM",
                                 "out of memory loading the catalogue");
      break;
    }
    if (num >= s->next_num) s->next_num = num + 1;
  }
  if (ok) ok = odo_iter_ok(it, e, "loading the catalogue");
  if (ok) ok = odo_iter_ok(evit, e, "loading the catalogue");
  leveldb_iter_destroy(it);
  leveldb_iter_destroy(evit);
  return ok;
}

void odo_store_add_dependent(odo_store *s, odo_dependent *d) {
  d->next = s->dependents;
  s->dependents = d;
}

void odo_store_remove_dependent(odo_store *s, odo_dependent *d) {
  for (odo_dependent **pp = &s->dependents; *pp; pp = &(*pp)->next)
    if (*pp == d) {
      *pp = d->next;
      return;
    }
}

static void store_release(odo_store *s) {
  /* each one removes itself from the list */
  while (s->dependents) s->dependents->release(s->dependents);
  if (s->db) leveldb_close(s->db);
  s->db = NULL;
  if (s->batch) leveldb_writebatch_destroy(s->batch);
  if (s->options) leveldb_options_destroy(s->options);
  if (s->cache) leveldb_cache_destroy(s->cache);
  if (s->filter) leveldb_filterpolicy_destroy(s->filter);
  if (s->ropts) leveldb_readoptions_destroy(s->ropts);
  if (s->ropts_bulk) leveldb_readoptions_destroy(s->ropts_bulk);
  if (s->wsync) leveldb_writeoptions_destroy(s->wsync);
  if (s->wnosync) leveldb_writeoptions_destroy(s->wnosync);
  s->batch = NULL;
  s->options = NULL;
  s->cache = NULL;
  s->filter = NULL;
  s->ropts = NULL;
  s->ropts_bulk = NULL;
  s->wsync = s->wnosync = NULL;
  for (size_t i = 0; i < s->nbuckets; i++) {
    odo_stream *st = s->buckets[i], *next;
    for (; st; st = next) {
      next = st->next;
      stream_free(st);
    }
  }
  free(s->buckets);
  s->streams_freed++;
  free(s->touched);
  free(s->changed);
  free(s->path);
  s->buckets = NULL;
  s->touched = s->changed = NULL;
  s->path = NULL;
  s->nbuckets = s->nstreams = s->ntouched = s->nchanged = 0;
  odo_buf_free(&s->val);
  odo_hasher_free(&s->hasher);
  odo_store_set_signer(s, NULL);
}

void odo_store_set_signer(odo_store *s, EVP_PKEY *key) {
  if (key) EVP_PKEY_up_ref(key);
  EVP_PKEY_free(s->signer);
  s->signer = key;
}

static int check_node_id(const char *id, size_t len) {
  return len > 0 && len <= ODO_MAX_NODE_ID && !memchr(id, '/', len) &&
         valid_name_bytes(id, len);
}

/***
 * Opens or creates a store.
 * @function store_open
 * @tparam string path LevelDB directory
 * @tparam[opt] table opts `node_id` (required to create), `sync` (default
 *   true: appends return once durable), `create` (default true),
 *   `cache_mb` (default 8), `worker_nice` (0..19: the nice value of the
 *   store's worker threads and of LevelDB's background thread, which is
 *   the process's; never lowered; default: leave them at their
 *   creator's; see thread_prio.c)
 * @return store, or nil, message, name
 */
int odo_store_l_store_open(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  const char *node_id = NULL;
  int create = 1, sync = 1;
  size_t node_len = 0, cache_mb = 8;
  int worker_nice = -1;
  odo_store *s;
  odo_err e = {0};
  char *err = NULL;
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_getfield(L, 2, "node_id");
    if (!lua_isnil(L, -1)) {
      if (lua_type(L, -1) != LUA_TSTRING)
        return luaL_error(L, "opts.node_id must be a string");
      node_id = lua_tolstring(L, -1, &node_len);
      if (!check_node_id(node_id, node_len))
        return luaL_error(L,
                          "opts.node_id must be 1 to %d bytes, without '/' or "
                          "control characters",
                          ODO_MAX_NODE_ID);
    }
    lua_pop(L, 1); /* the string stays referenced by the options table */
    create = odo_fieldbool(L, 2, "create", 1);
    sync = odo_fieldbool(L, 2, "sync", 1);
    cache_mb = (size_t)odo_fieldu64(L, 2, "cache_mb", 8);
    lua_getfield(L, 2, "worker_nice");
    if (!lua_isnil(L, -1)) {
      uint64_t n = odo_checku64(L, -1, "opts.worker_nice");
      if (n > 19) return luaL_error(L, "opts.worker_nice must be 0 to 19");
      worker_nice = (int)n;
    }
    lua_pop(L, 1);
  }
  s = lua_newuserdatauv(L, sizeof *s, 0);
  memset(s, 0, sizeof *s);
  luaL_setmetatable(L, ODO_STORE_CLASS);
  s->sync_default = sync;
  s->worker_nice = worker_nice;
  s->next_num = 1;
  s->path = strdup(path);
  s->batch = leveldb_writebatch_create();
  s->options = leveldb_options_create();
  s->cache = leveldb_cache_create_lru((cache_mb ? cache_mb : 1) << 20);
  s->filter = odo_store_filter();
  s->ropts = leveldb_readoptions_create();
  s->ropts_bulk = leveldb_readoptions_create();
  s->wsync = leveldb_writeoptions_create();
  s->wnosync = leveldb_writeoptions_create();
  if (!s->path || !s->ropts || !s->ropts_bulk || !odo_hasher_init(&s->hasher)) {
    store_release(s);
    return luaL_error(L, "out of memory opening a store");
  }
  leveldb_options_set_create_if_missing(s->options,
                                        (unsigned char)(create && node_id));
  leveldb_options_set_paranoid_checks(s->options, 1);
  leveldb_options_set_cache(s->options, s->cache);
  leveldb_options_set_filter_policy(s->options, s->filter);
  leveldb_options_set_write_buffer_size(s->options, 8u << 20);
  /* tables of 16 KiB blocks (LevelDB's default: 4 KiB): a journal is
   * written in order and read in ranges; a quarter of the blocks to
   * compress, checksum and index when a catch-up's memtables are flushed,
   * and to read back when they are served (docs/STORAGE.md) */
  leveldb_options_set_block_size(s->options, ODO_BLOCK_SIZE);
  leveldb_options_set_max_open_files(s->options, 256);
  leveldb_readoptions_set_verify_checksums(s->ropts, 1);
  leveldb_readoptions_set_verify_checksums(s->ropts_bulk, 1);
  leveldb_readoptions_set_fill_cache(s->ropts_bulk, 0);
  leveldb_writeoptions_set_sync(s->wsync, 1);
  leveldb_writeoptions_set_sync(s->wnosync, 0);
  s->db = odo_prio_open_db(s->options, path, worker_nice, &err, &e);
  if (s->db == NULL && err == NULL) {
    /* a thread or its priority (e says which) */
  } else if (err) {
    odo_store_dberr(&e, err, "opening the store");
    if (strcmp(e.name, "ENOENT") == 0)
      odo_err_set(&e, "ENOENT", "no store at %s%s", path,
                  node_id ? "" : " (start the node with `odo run` first)");
  } else if (init_meta(s, node_id, &e) && load_catalogue(s, &e)) {
    return 1;
  }
  store_release(s);
  return odo_err_push(L, &e);
}

/***
 * Removes a closed store: its files, then its directory when nothing else
 * is left in it (LevelDB's DestroyDB). For a node that failed to start on
 * a store it had just created, so that no empty store is left behind.
 * @function store_destroy
 * @tparam string path LevelDB directory
 * @return true, or nil, message, name
 */
int odo_store_l_store_destroy(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  char *err = NULL;
  odo_err e = {0};
  leveldb_options_t *o = leveldb_options_create();
  leveldb_destroy_db(o, path, &err);
  leveldb_options_destroy(o);
  if (err) {
    odo_store_dberr(&e, err, "removing the store");
    return odo_err_push(L, &e);
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* ---- the Lua class ----------------------------------------------------- */

odo_store *odo_store_check(lua_State *L, int idx) {
  odo_store *s = luaL_checkudata(L, idx, ODO_STORE_CLASS);
  if (s->db == NULL) luaL_error(L, "attempt to use a closed store");
  /* A raise in the middle of a method may have left staged state. */
  if (s->txn_open) odo_txn_abort(s);
  return s;
}

int odo_store_l_close(lua_State *L) {
  odo_store *s = luaL_checkudata(L, 1, ODO_STORE_CLASS);
  store_release(s);
  return 0;
}

int odo_store_l_tostring(lua_State *L) {
  odo_store *s = luaL_checkudata(L, 1, ODO_STORE_CLASS);
  if (s->db)
    lua_pushfstring(L, "odo.store (%s, node %s)", s->path, s->node_id);
  else
    lua_pushliteral(L, "odo.store (closed)");
  return 1;
}

static void push_stream(lua_State *L, const odo_stream *st) {
  lua_createtable(L, 0, 8);
  lua_pushlstring(L, st->id, st->id_len);
  lua_setfield(L, -2, "id");
  lua_pushlstring(L, st->id, st->src_len);
  lua_setfield(L, -2, "source");
  odo_pushu64(L, st->cat.first);
  lua_setfield(L, -2, "first");
  odo_pushu64(L, st->cat.last);
  lua_setfield(L, -2, "last");
  odo_pushu64(L, st->cat.snap);
  lua_setfield(L, -2, "snapshot");
  lua_pushboolean(L, st->own);
  lua_setfield(L, -2, "own");
  lua_pushlstring(L, (const char *)st->cat.hash, ODO_HASH_LEN);
  lua_setfield(L, -2, "hash");
  odo_pushu64(L, st->cat.purged);
  lua_setfield(L, -2, "purged");
}

static int cmp_stream(const void *a, const void *b) {
  const odo_stream *x = *(odo_stream *const *)a, *y = *(odo_stream *const *)b;
  size_t n = x->id_len < y->id_len ? x->id_len : y->id_len;
  int c = memcmp(x->id, y->id, n);
  return c ? c : (x->id_len > y->id_len) - (x->id_len < y->id_len);
}

/***
 * The catalogue: every stream, sorted by id.
 * @function streams
 * @treturn table array of {id, source, first, last, snapshot, own, hash,
 *   purged}
 */
int odo_store_l_streams(lua_State *L) {
  odo_store *s = odo_store_check(L, 1);
  /* GC-owned, so a memory error while pushing leaks nothing */
  odo_stream **all = lua_newuserdatauv(L, (s->nstreams + 1) * sizeof *all, 0);
  size_t n = 0;
  for (size_t i = 0; i < s->nbuckets; i++)
    for (odo_stream *st = s->buckets[i]; st; st = st->next) all[n++] = st;
  qsort(all, n, sizeof *all, cmp_stream);
  lua_createtable(L, (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    push_stream(L, all[i]);
    lua_rawseti(L, -2, (int)i + 1);
  }
  return 1;
}

/* The stream named by argument 2 of a store method, or NULL. */
static odo_stream *stream_arg(lua_State *L) {
  odo_store *s = odo_store_check(L, 1);
  size_t len;
  const char *id = luaL_checklstring(L, 2, &len);
  return odo_store_find(s, id, len);
}

/***
 * One stream's catalogue entry, or nil when the store has none.
 * @function stream
 */
int odo_store_l_stream(lua_State *L) {
  odo_stream *st = stream_arg(L);
  if (st == NULL) return 0;
  push_stream(L, st);
  return 1;
}

/***
 * The few fields of a stream's catalogue entry a hot path needs, without
 * the table `stream` makes (for each of a fleet's thousands of streams):
 * its last revision, its newest source snapshot's revision (0: none) and
 * whether this node is its source; nothing when the store has no such
 * stream.
 * @function stream_state
 * @treturn integer last
 * @treturn integer snapshot
 * @treturn boolean own
 */
int odo_store_l_stream_state(lua_State *L) {
  odo_stream *st = stream_arg(L);
  if (st == NULL) return 0;
  odo_pushu64(L, st->cat.last);
  odo_pushu64(L, st->cat.snap);
  lua_pushboolean(L, st->own);
  return 3;
}

/***
 * Ids of the streams whose catalogue entry changed since the last call.
 * @function changes
 */
int odo_store_l_changes(lua_State *L) {
  odo_store *s = odo_store_check(L, 1);
  lua_createtable(L, (int)s->nchanged, 0);
  for (size_t i = 0; i < s->nchanged; i++) {
    lua_pushlstring(L, s->changed[i]->id, s->changed[i]->id_len);
    lua_rawseti(L, -2, (int)i + 1);
    s->changed[i]->changed = 0;
  }
  s->nchanged = 0;
  return 1;
}

/***
 * Node metadata: {node_id, created, format, path, streams}.
 * @function info
 */
int odo_store_l_info(lua_State *L) {
  odo_store *s = odo_store_check(L, 1);
  lua_createtable(L, 0, 5);
  lua_pushlstring(L, s->node_id, s->node_len);
  lua_setfield(L, -2, "node_id");
  odo_pushu64(L, s->created);
  lua_setfield(L, -2, "created");
  lua_pushinteger(L, ODO_STORE_FORMAT);
  lua_setfield(L, -2, "format");
  lua_pushstring(L, s->path);
  lua_setfield(L, -2, "path");
  odo_pushu64(L, s->nstreams);
  lua_setfield(L, -2, "streams");
  return 1;
}

int odo_store_l_is_open(lua_State *L) {
  odo_store *s = luaL_checkudata(L, 1, ODO_STORE_CLASS);
  lua_pushboolean(L, s->db != NULL);
  return 1;
}

/***
 * Makes every write so far durable (one synced write).
 * @function sync
 */
int odo_store_l_sync(lua_State *L) {
  odo_store *s = odo_store_check(L, 1);
  odo_err e = {0};
  odo_txn_begin(s);
  if (!odo_txn_commit(s, 1, &e)) return odo_err_push(L, &e);
  lua_pushboolean(L, 1);
  return 1;
}
