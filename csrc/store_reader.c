/* store_reader.c - the forward reader over one stream's log: events
 * stored one record each, segments (runs of events stored as one record,
 * as a received batch travelled) and the signed heads among them, walked
 * in revision order. Every other part of the core reads events through
 * it; the layouts are records.c's (docs/STORAGE.md, "The log"). */
#include <stdlib.h>

#include "store.h"

static int compacted(odo_stream *st, uint64_t from, odo_err *e) {
  return odo_err_set(e, "ECOMPACTED",
                     "revision %llu of stream %s is compacted; events are "
                     "held from %llu, and the snapshot at %llu covers the "
                     "rest",
                     (unsigned long long)from, st->id,
                     (unsigned long long)st->cat.first,
                     (unsigned long long)st->cat.snap);
}

static int reader_open(odo_store *s, const leveldb_readoptions_t *ro, odo_stream *st,
                       uint64_t from, uint64_t to, odo_reader *r, odo_err *e) {
  uint8_t key[ODO_NUMKEY_LEN];
  memset(r, 0, sizeof *r);
  if (from == 0) from = 1;
  if (from < st->cat.first) return compacted(st, from, e);
  r->num = st->num;
  r->next = from;
  r->to = to < st->cat.last ? to : st->cat.last;
  memcpy(r->stream_id, st->id, st->id_len + 1);
  if (r->next > r->to) return 1; /* nothing to read; no iterator needed */
  r->it = leveldb_create_iterator(s->db, ro);
  /* lands on event `from`, or on the segment holding it (keyed by its
   * last revision, so at or after `from`) */
  odo_numkey(key, ODO_K_EVENT, r->num, from);
  leveldb_iter_seek(r->it, (const char *)key, sizeof key);
  return 1;
}

int odo_reader_open(odo_store *s, odo_stream *st, uint64_t from, uint64_t to,
                    odo_reader *r, odo_err *e) {
  return reader_open(s, s->ropts, st, from, to, r, e);
}

int odo_reader_open_bulk(odo_store *s, odo_stream *st, uint64_t from, uint64_t to,
                         odo_reader *r, odo_err *e) {
  return reader_open(s, s->ropts_bulk, st, from, to, r, e);
}

void odo_reader_close(odo_reader *r) {
  if (r->it) leveldb_iter_destroy(r->it);
  r->it = NULL;
  odo_hasher_free(&r->hasher);
}

static int damaged(odo_reader *r, uint64_t rev, odo_err *e) {
  if (r->seg_last)
    return odo_err_set(e, "ECORRUPT",
                       "events %llu to %llu of stream %s, stored as one segment, "
                       "do not decode or do not chain to its stored hash: one "
                       "of them was altered",
                       (unsigned long long)r->seg_first,
                       (unsigned long long)r->seg_last, r->stream_id);
  return odo_err_set(e, "ECORRUPT",
                     "event %llu of stream %s is damaged (checksum mismatch)",
                     (unsigned long long)rev, r->stream_id);
}

/* The next record of the stream that is not a signed head: its kind
 * (ODO_LOG_OTHER when the stream's log ends there) and key revision. */
static int next_record(odo_reader *r, uint64_t *rev) {
  for (;;) {
    size_t kl;
    const uint8_t *k;
    int kind;
    if (r->started) leveldb_iter_next(r->it);
    r->started = 1;
    if (!leveldb_iter_valid(r->it)) return ODO_LOG_OTHER;
    k = (const uint8_t *)leveldb_iter_key(r->it, &kl);
    kind = odo_logkey_kind(k, kl, r->num, rev);
    if (kind != ODO_LOG_HEAD) return kind;
  }
}

/* The segment under the iterator, checksum and header checked. */
static int segment_here(odo_reader *r, odo_seg_rec *sr) {
  size_t kl, vl, pl;
  const uint8_t *k = (const uint8_t *)leveldb_iter_key(r->it, &kl);
  const char *v = leveldb_iter_value(r->it, &vl);
  const uint8_t *p = odo_rec_open(k, kl, v, vl, &pl);
  return p != NULL && odo_rec_segment_decode(p, pl, sr);
}

/* The segment's next event (revision r->seg_at), hashed unless the
 * reader never looks at hashes; at its last, the hash is checked
 * against the stored one and the reader leaves the segment. */
static int segment_step(odo_reader *r, odo_event *ev, odo_err *e) {
  ev->rev = r->seg_at;
  if (!odo_event_decode(&r->seg, ev, 0) || ev->type_len == 0 ||
      ev->data_len > ODO_MAX_DATA)
    return damaged(r, ev->rev, e);
  if (!r->no_hashes) {
    if (!odo_chain_next(&r->hasher, r->hash, ev, ev->hash))
      return odo_err_set(e, "EIO", "SHA-256 failed");
    memcpy(r->hash, ev->hash, ODO_HASH_LEN);
  }
  if (r->seg_at++ < r->seg_last) return 1;
  if (odo_rd_left(&r->seg) != 0 ||
      (!r->no_hashes && memcmp(r->hash, r->seg_hash, ODO_HASH_LEN) != 0))
    return damaged(r, ev->rev, e);
  if (r->no_hashes) memcpy(ev->hash, r->seg_hash, ODO_HASH_LEN);
  r->seg_last = 0;
  return 1;
}

/* Enters the segment under the iterator (ending at last) and steps over
 * its events before r->next. */
static int segment_enter(odo_reader *r, uint64_t last, odo_event *ev, odo_err *e) {
  odo_seg_rec sr;
  r->seg_last = last;
  r->seg_first = r->next;
  if (!segment_here(r, &sr) || sr.count > last) return damaged(r, r->next, e);
  r->seg_at = r->seg_first = last - sr.count + 1;
  if (r->seg_at > r->next) return 0; /* the events before it are missing */
  odo_rd_init(&r->seg, sr.events, sr.len);
  r->seg_hash = sr.last;
  memcpy(r->hash, sr.prev, ODO_HASH_LEN);
  if (!r->no_hashes && r->hasher.ctx == NULL && !odo_hasher_init(&r->hasher))
    return odo_err_set(e, "ENOMEM", "cannot make a SHA-256 context");
  while (r->seg_at < r->next)
    if (!segment_step(r, ev, e)) return -1;
  return 1;
}

int odo_reader_next(odo_reader *r, odo_event *ev, odo_err *e) {
  uint64_t rev = 0;
  int kind, rc;
  if (r->next > r->to || r->it == NULL) return 0;
  if (r->seg_last) goto step;
  kind = next_record(r, &rev);
  if (kind == ODO_LOG_EVENT && rev == r->next) {
    size_t klen, vlen;
    const char *k = leveldb_iter_key(r->it, &klen);
    const char *v = leveldb_iter_value(r->it, &vlen);
    if (!odo_rec_event_decode((const uint8_t *)k, v, vlen, ev)) return damaged(r, r->next, e), -1;
    r->next++;
    return 1;
  }
  if (kind != ODO_LOG_SEGMENT || rev < r->next) goto missing;
  rc = segment_enter(r, rev, ev, e);
  if (rc < 0) return -1;
  if (rc == 0) {
    r->seg_last = 0;
    goto missing;
  }
step:
  if (!segment_step(r, ev, e)) return -1;
  r->next++;
  return 1;
missing:
  if (!odo_iter_ok(r->it, e, "reading events")) return -1;
  odo_err_set(e, "ECORRUPT", "event %llu of stream %s is missing",
              (unsigned long long)r->next, r->stream_id);
  return -1;
}

int odo_reader_segment(odo_reader *r, size_t max, const uint8_t **events,
                       size_t *len, uint32_t *count) {
  odo_seg_rec sr;
  uint64_t last = 0;
  if (r->seg_last || r->it == NULL || r->next > r->to) return 0;
  if (next_record(r, &last) != ODO_LOG_SEGMENT || last > r->to ||
      !segment_here(r, &sr) || sr.count > last || last - sr.count + 1 != r->next ||
      sr.len > max) {
    r->started = 0; /* odo_reader_next reads this record itself */
    return 0;
  }
  *events = sr.events;
  *len = sr.len;
  *count = sr.count;
  r->next = last + 1;
  return 1;
}

int odo_reader_segment_end_hash(odo_reader *r, uint8_t out[ODO_HASH_LEN]) {
  odo_seg_rec sr;
  uint64_t last = 0;
  if (r->seg_last || r->it == NULL || r->next > r->to) return 0;
  if (next_record(r, &last) != ODO_LOG_SEGMENT || last != r->next || !segment_here(r, &sr) ||
      sr.count > last) {
    r->started = 0; /* odo_reader_next reads this record itself */
    return 0;
  }
  memcpy(out, sr.last, ODO_HASH_LEN);
  r->next = last + 1;
  return 1;
}

int odo_reader_head_after(odo_reader *r, uint64_t rev, odo_head *h, odo_err *e) {
  size_t kl, vl, pl;
  const uint8_t *k, *p;
  const char *v;
  uint64_t at;
  if (r->seg_last) return 0; /* inside a segment: its head follows its last */
  leveldb_iter_next(r->it);
  r->started = 0; /* its next call reads where the iterator stands */
  if (!leveldb_iter_valid(r->it)) return 0;
  k = (const uint8_t *)leveldb_iter_key(r->it, &kl);
  if (odo_logkey_kind(k, kl, r->num, &at) != ODO_LOG_HEAD || at != rev) return 0;
  v = leveldb_iter_value(r->it, &vl);
  p = odo_rec_open(k, kl, v, vl, &pl);
  if (p == NULL || !odo_rec_head_decode(p, pl, h))
    return odo_err_set(e, "ECORRUPT", "a signed head of stream %s is damaged", r->stream_id), -1;
  h->rev = rev;
  return 1;
}
