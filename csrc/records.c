/* records.c - one encoder and one decoder per on-disk record, keys and
 * CRC framing (records.h has the layouts; docs/STORAGE.md explains
 * them). Calls only the bottom layer (util.c). */
#include "records.h"

void odo_numkey(uint8_t key[ODO_NUMKEY_LEN], char tag, uint64_t num,
                uint64_t rev) {
  key[0] = (uint8_t)tag;
  odo_put_be64(key + 1, num);
  odo_put_be64(key + 9, rev);
}

void odo_headkey(uint8_t key[ODO_HEADKEY_LEN], uint64_t num, uint64_t rev) {
  odo_numkey(key, ODO_K_EVENT, num, rev);
  key[ODO_NUMKEY_LEN] = 1;
}

void odo_segkey(uint8_t key[ODO_SEGKEY_LEN], uint64_t num, uint64_t last) {
  odo_numkey(key, ODO_K_EVENT, num, last);
  key[ODO_NUMKEY_LEN] = ODO_SEG_TAG;
}

int odo_logkey_kind(const uint8_t *k, size_t klen, uint64_t num, uint64_t *rev) {
  if (klen < ODO_NUMKEY_LEN || k[0] != ODO_K_EVENT || odo_get_be64(k + 1) != num)
    return ODO_LOG_OTHER;
  *rev = odo_get_be64(k + 9);
  if (klen == ODO_NUMKEY_LEN) return ODO_LOG_EVENT;
  if (klen != ODO_HEADKEY_LEN) return ODO_LOG_OTHER;
  return k[ODO_NUMKEY_LEN] == ODO_HEAD_TAG  ? ODO_LOG_HEAD
         : k[ODO_NUMKEY_LEN] == ODO_SEG_TAG ? ODO_LOG_SEGMENT
                                            : ODO_LOG_OTHER;
}

/* ---- framing ---------------------------------------------------------- */

static uint32_t value_crc(const uint8_t *key, size_t klen, const uint8_t *p,
                          size_t n) {
  return odo_crc32c(odo_crc32c(0, key, klen), p, n);
}

void odo_rec_begin(odo_buf *b) {
  b->len = 0;
  b->failed = 0;
  odo_buf_add_be32(b, 0);
}

int odo_rec_seal(odo_buf *b, const uint8_t *key, size_t klen) {
  if (b->failed || b->len < 4 || key == NULL) return 0;
  odo_put_be32(b->p, value_crc(key, klen, b->p + 4, b->len - 4));
  return 1;
}

const uint8_t *odo_rec_open(const uint8_t *key, size_t klen, const char *val,
                            size_t vlen, size_t *plen) {
  const uint8_t *v = (const uint8_t *)val;
  if (vlen < 4) return NULL;
  if (odo_get_be32(v) != value_crc(key, klen, v + 4, vlen - 4)) return NULL;
  *plen = vlen - 4;
  return v + 4;
}

/* ---- catalogue -------------------------------------------------------- */

#define CAT_LEN (1 + 4 * 8 + ODO_HASH_LEN)

int odo_rec_cat_encode(odo_buf *b, const odo_cat_rec *c) {
  return odo_buf_add_u8(b, ODO_CAT_VERSION) && odo_buf_add_be64(b, c->num) &&
         odo_buf_add_be64(b, c->first) && odo_buf_add_be64(b, c->snap) &&
         odo_buf_add_be64(b, c->purged) &&
         odo_buf_add(b, c->base, ODO_HASH_LEN);
}

int odo_rec_cat_decode(const uint8_t *p, size_t n, odo_cat_rec *c) {
  odo_rd r;
  const uint8_t *base;
  odo_rd_init(&r, p, n);
  if (n != CAT_LEN || odo_rd_u8(&r) != ODO_CAT_VERSION) return 0;
  c->num = odo_rd_be64(&r);
  c->first = odo_rd_be64(&r);
  c->snap = odo_rd_be64(&r);
  c->purged = odo_rd_be64(&r);
  base = odo_rd_bytes(&r, ODO_HASH_LEN);
  if (r.bad || c->first < 1) return 0;
  memcpy(c->base, base, ODO_HASH_LEN);
  return 1;
}

/* ---- event ------------------------------------------------------------ */

int odo_rec_event_encode(odo_buf *b, const odo_event *ev) {
  return odo_buf_reserve(b, ODO_HASH_LEN + 8 + 1 + ev->type_len + ev->data_len) &&
         odo_buf_add(b, ev->hash, ODO_HASH_LEN) && odo_buf_add_be64(b, ev->ts) &&
         odo_buf_add_str8(b, ev->type, ev->type_len) &&
         odo_buf_add(b, ev->data, ev->data_len);
}

int odo_rec_event_decode(const uint8_t *key, const char *val, size_t vlen,
                         odo_event *ev) {
  size_t plen;
  const uint8_t *p = odo_rec_open(key, ODO_NUMKEY_LEN, val, vlen, &plen);
  odo_rd r;
  const uint8_t *h;
  if (p == NULL) return 0;
  odo_rd_init(&r, p, plen);
  h = odo_rd_bytes(&r, ODO_HASH_LEN);
  if (h == NULL) return 0;
  memcpy(ev->hash, h, ODO_HASH_LEN);
  ev->ts = odo_rd_be64(&r);
  ev->type = odo_rd_str8(&r, &ev->type_len);
  if (r.bad || ev->type_len == 0) return 0;
  ev->data = (const char *)p + r.pos;
  ev->data_len = odo_rd_left(&r);
  ev->rev = odo_get_be64(key + 9);
  return 1;
}

/* ---- segment ---------------------------------------------------------- */

/* The header at h: version, count, prev, last. */
static void segment_header(uint8_t *h, uint32_t count, const uint8_t *prev,
                           const uint8_t *last) {
  h[0] = ODO_SEG_VERSION;
  odo_put_be32(h + 1, count);
  if (prev != h + 5) memcpy(h + 5, prev, ODO_HASH_LEN);
  memcpy(h + 5 + ODO_HASH_LEN, last, ODO_HASH_LEN);
}

int odo_rec_segment_begin(odo_buf *b, const uint8_t prev[ODO_HASH_LEN]) {
  uint8_t h[ODO_SEG_FIXED];
  segment_header(h, 0, prev, prev); /* count and last: odo_rec_segment_end */
  return odo_buf_add(b, h, sizeof h);
}

void odo_rec_segment_end(odo_buf *b, uint32_t count, const uint8_t last[ODO_HASH_LEN]) {
  if (b->failed || b->len < 4 + ODO_SEG_FIXED) return;
  segment_header(b->p + 4, count, b->p + 4 + 5, last);
}

int odo_rec_segment_encode(odo_buf *b, const odo_seg_rec *r) {
  if (!odo_buf_reserve(b, ODO_SEG_FIXED + r->len) || !odo_rec_segment_begin(b, r->prev) ||
      !odo_buf_add(b, r->events, r->len))
    return 0;
  odo_rec_segment_end(b, r->count, r->last);
  return 1;
}

void odo_rec_segment_frame(const odo_seg_rec *r, const uint8_t *key, size_t klen) {
  uint8_t *h = (uint8_t *)(uintptr_t)r->events - ODO_SEG_FIXED;
  segment_header(h, r->count, r->prev, r->last);
  odo_put_be32(h - 4, value_crc(key, klen, h, ODO_SEG_FIXED + r->len));
}

int odo_rec_segment_decode(const uint8_t *p, size_t n, odo_seg_rec *sr) {
  odo_rd r;
  odo_rd_init(&r, p, n);
  if (odo_rd_u8(&r) != ODO_SEG_VERSION) return 0;
  sr->count = odo_rd_be32(&r);
  sr->prev = odo_rd_bytes(&r, ODO_HASH_LEN);
  sr->last = odo_rd_bytes(&r, ODO_HASH_LEN);
  if (r.bad || sr->count == 0) return 0;
  sr->events = p + r.pos;
  sr->len = odo_rd_left(&r);
  return 1;
}

/* ---- signed head ------------------------------------------------------ */

int odo_rec_head_encode(odo_buf *b, const uint8_t hash[ODO_HASH_LEN],
                        const uint8_t *sig, size_t sig_len) {
  return odo_buf_add(b, hash, ODO_HASH_LEN) &&
         odo_buf_add_str16(b, sig, sig_len);
}

int odo_rec_head_decode(const uint8_t *p, size_t n, odo_head *h) {
  odo_rd r;
  const uint8_t *hash, *sig;
  odo_rd_init(&r, p, n);
  hash = odo_rd_bytes(&r, ODO_HASH_LEN);
  sig = (const uint8_t *)odo_rd_str16(&r, &h->sig_len);
  if (p == NULL || r.bad || h->sig_len > ODO_MAX_SIG) return 0;
  memcpy(h->hash, hash, ODO_HASH_LEN);
  memcpy(h->sig, sig, h->sig_len);
  return 1;
}

/* ---- snapshot --------------------------------------------------------- */

int odo_rec_snapshot_encode(odo_buf *b, const odo_snap_rec *r) {
  return odo_buf_reserve(b, 8 + ODO_HASH_LEN + 1 + r->format_len + 2 +
                                r->sig_len + r->data_len) &&
         odo_buf_add_be64(b, r->rev) && odo_buf_add(b, r->hash, ODO_HASH_LEN) &&
         odo_buf_add_str8(b, r->format, r->format_len) &&
         odo_buf_add_str16(b, r->sig, r->sig_len) &&
         odo_buf_add(b, r->data, r->data_len);
}

int odo_rec_snapshot_decode(const uint8_t *p, size_t n, odo_snap_rec *sr) {
  odo_rd r;
  odo_rd_init(&r, p, n);
  sr->rev = odo_rd_be64(&r);
  sr->hash = odo_rd_bytes(&r, ODO_HASH_LEN);
  sr->format = odo_rd_str8(&r, &sr->format_len);
  sr->sig = odo_rd_str16(&r, &sr->sig_len);
  if (r.bad) return 0;
  sr->data = (const char *)p + r.pos;
  sr->data_len = odo_rd_left(&r);
  return 1;
}

/* ---- peer ------------------------------------------------------------- */

int odo_rec_peer_encode(odo_buf *b, const odo_peer_rec *r) {
  return odo_buf_add_be16(b, r->port) && odo_buf_add_be64(b, r->last_seen) &&
         odo_buf_add_str8(b, r->host, r->host_len) &&
         odo_buf_add_str16(b, r->reason, r->reason_len);
}

int odo_rec_peer_decode(const uint8_t *p, size_t n, odo_peer_rec *r) {
  odo_rd rd;
  odo_rd_init(&rd, p, n);
  r->port = odo_rd_be16(&rd);
  r->last_seen = odo_rd_be64(&rd);
  r->host = odo_rd_str8(&rd, &r->host_len);
  r->reason = odo_rd_str16(&rd, &r->reason_len);
  return p != NULL && !rd.bad;
}
