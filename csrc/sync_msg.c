/* sync_msg.c - the sync messages' codec (sync_msg.h has the layouts):
 * decoders that check every length and refuse trailing bytes, and the
 * encoders that write the same bytes back. Calls only the bottom layer
 * and the event encoder. */
#include "sync_msg.h"

static int malformed(odo_err *e, const char *what) {
  return odo_err_set(e, "EPROTO", "a malformed %s", what);
}

/* ---- items ----------------------------------------------------------------- */

int odo_msg_key_next(odo_rd *r, const uint8_t **der, size_t *len) {
  *der = (const uint8_t *)odo_rd_str16(r, len);
  return !r->bad;
}

int odo_msg_cat_entry_next(odo_rd *r, odo_msg_cat_entry *c) {
  c->id = odo_rd_str8(r, &c->id_len);
  c->first = odo_rd_be64(r);
  c->last = odo_rd_be64(r);
  c->snap = odo_rd_be64(r);
  c->fresh = odo_rd_be64(r);
  c->flags = odo_rd_u8(r);
  c->hops = odo_rd_u8(r);
  c->key = odo_rd_be16(r);
  return !r->bad && c->id_len != 0;
}

int odo_msg_sub_entry_next(odo_rd *r, odo_msg_sub_entry *s) {
  s->id = odo_rd_str8(r, &s->id_len);
  s->from = odo_rd_be64(r);
  return !r->bad && s->id_len != 0;
}

int odo_msg_id_next(odo_rd *r, const char **id, size_t *len) {
  *id = odo_rd_str8(r, len);
  return !r->bad && *len != 0;
}

int odo_msg_event_next(odo_rd *r, odo_event *ev) {
  return odo_event_decode(r, ev, 0) && ev->type_len != 0 &&
         ev->data_len <= ODO_MAX_DATA;
}

int odo_msg_key_put(odo_buf *b, const uint8_t *der, size_t len) {
  return odo_buf_add_str16(b, der, len);
}

int odo_msg_cat_entry_put(odo_buf *b, const odo_msg_cat_entry *c) {
  return odo_buf_add_str8(b, c->id, c->id_len) && odo_buf_add_be64(b, c->first) &&
         odo_buf_add_be64(b, c->last) && odo_buf_add_be64(b, c->snap) &&
         odo_buf_add_be64(b, c->fresh) && odo_buf_add_u8(b, c->flags) &&
         odo_buf_add_u8(b, c->hops) && odo_buf_add_be16(b, c->key);
}

int odo_msg_sub_entry_put(odo_buf *b, const odo_msg_sub_entry *s) {
  return odo_buf_add_str8(b, s->id, s->id_len) && odo_buf_add_be64(b, s->from);
}

int odo_msg_id_put(odo_buf *b, const char *id, size_t len) {
  return odo_buf_add_str8(b, id, len);
}

/* ---- sections -------------------------------------------------------------- */

/* Each reads one item of its list and checks it, for rd_section. */
static int check_key(odo_rd *r) {
  const uint8_t *der;
  size_t len;
  return odo_msg_key_next(r, &der, &len);
}
static int check_cat_entry(odo_rd *r) {
  odo_msg_cat_entry c;
  return odo_msg_cat_entry_next(r, &c);
}
static int check_sub_entry(odo_rd *r) {
  odo_msg_sub_entry s;
  return odo_msg_sub_entry_next(r, &s);
}
static int check_id(odo_rd *r) {
  const char *id;
  size_t len;
  return odo_msg_id_next(r, &id, &len);
}
static int check_event(odo_rd *r) {
  odo_event ev;
  return odo_msg_event_next(r, &ev);
}

/* Reads `count` items of a list, each checked by `check`, as the section
 * l; 0 (r failed) when one is malformed. */
static int rd_section(odo_rd *r, uint32_t count, int (*check)(odo_rd *r),
                      odo_msg_list *l) {
  size_t at = r->pos;
  for (uint32_t i = 0; i < count && !r->bad; i++)
    if (!check(r)) r->bad = 1;
  l->p = r->p + at;
  l->len = r->pos - at;
  l->count = count;
  return !r->bad;
}

/* Whether r read its bytes to the end and no further. */
static int rd_whole(const odo_rd *r) { return !r->bad && odo_rd_left(r) == 0; }

/* ---- decoders -------------------------------------------------------------- */

int odo_msg_catalogue_decode(const uint8_t *p, size_t n, odo_msg_catalogue *m,
                             odo_err *e) {
  odo_rd r;
  uint16_t nkeys;
  uint32_t count;
  odo_rd_init(&r, p, n);
  m->flags = odo_rd_u8(&r);
  nkeys = odo_rd_be16(&r);
  if (r.bad || nkeys == ODO_MSG_NO_KEY) return malformed(e, "CATALOGUE");
  rd_section(&r, nkeys, check_key, &m->keys);
  count = odo_rd_be32(&r);
  if (r.bad || count > odo_rd_left(&r) / (1 + 8 + 8 + 8 + 1 + 2 + 1))
    return malformed(e, "CATALOGUE");
  if (!rd_section(&r, count, check_cat_entry, &m->entries) || !rd_whole(&r))
    return malformed(e, "CATALOGUE entry");
  return 1;
}

int odo_msg_subscribe_decode(const uint8_t *p, size_t n, odo_msg_subscribe *m,
                             odo_err *e) {
  odo_rd r;
  uint32_t count;
  odo_rd_init(&r, p, n);
  m->flags = odo_rd_u8(&r);
  count = odo_rd_be32(&r);
  if (r.bad || count > ODO_MSG_FRAME_ENTRIES)
    return odo_err_set(e, "EPROTO",
                       "a malformed SUBSCRIBE (at most %d streams a frame)",
                       ODO_MSG_FRAME_ENTRIES);
  if (!rd_section(&r, count, check_sub_entry, &m->entries) || !rd_whole(&r))
    return malformed(e, "SUBSCRIBE entry");
  return 1;
}

int odo_msg_unsubscribe_decode(const uint8_t *p, size_t n,
                               odo_msg_unsubscribe *m, odo_err *e) {
  odo_rd r;
  uint32_t count;
  odo_rd_init(&r, p, n);
  count = odo_rd_be32(&r);
  if (r.bad || count > odo_rd_left(&r) / 2) return malformed(e, "UNSUBSCRIBE");
  if (!rd_section(&r, count, check_id, &m->ids) || !rd_whole(&r))
    return malformed(e, "UNSUBSCRIBE");
  return 1;
}

int odo_msg_snapshot_decode(const uint8_t *p, size_t n, odo_msg_snapshot *m,
                            odo_err *e) {
  odo_rd r;
  odo_rd_init(&r, p, n);
  m->id = odo_rd_str8(&r, &m->id_len);
  m->rev = odo_rd_be64(&r);
  m->hash = odo_rd_bytes(&r, ODO_HASH_LEN);
  m->format = odo_rd_str8(&r, &m->format_len);
  m->sig = odo_rd_str16(&r, &m->sig_len);
  m->total = odo_rd_be32(&r);
  m->offset = odo_rd_be32(&r);
  m->chunk_len = odo_rd_left(&r);
  m->chunk = odo_rd_bytes(&r, m->chunk_len);
  if (r.bad || m->id_len == 0 || m->rev == 0 || m->total > ODO_MAX_SNAPSHOT ||
      m->sig_len > ODO_MAX_SIG)
    return malformed(e, "SNAPSHOT");
  return 1;
}

int odo_msg_events_decode(const uint8_t *p, size_t n, odo_msg_events *m,
                          odo_err *e) {
  odo_rd r;
  const char *id;
  size_t id_len;
  uint32_t count;
  odo_rd_init(&r, p, n);
  m->id = NULL;
  m->id_len = 0;
  id = odo_rd_str8(&r, &id_len);
  m->first = odo_rd_be64(&r);
  count = odo_rd_be32(&r);
  if (r.bad || id_len == 0 || count == 0 || count > odo_rd_left(&r) / 14)
    return malformed(e, "EVENTS");
  m->id = id;
  m->id_len = id_len;
  if (!rd_section(&r, count, check_event, &m->events))
    return malformed(e, "event in EVENTS");
  m->head_rev = odo_rd_be64(&r);
  m->head_hash = odo_rd_bytes(&r, ODO_HASH_LEN);
  m->sig = (const uint8_t *)odo_rd_str16(&r, &m->sig_len);
  if (!rd_whole(&r) || m->sig_len > ODO_MAX_SIG)
    return malformed(e, "EVENTS head");
  return 1;
}

int odo_msg_caught_up_decode(const uint8_t *p, size_t n, odo_msg_caught_up *m,
                             odo_err *e) {
  odo_rd r;
  odo_rd_init(&r, p, n);
  if (!odo_msg_id_next(&r, &m->id, &m->id_len)) return malformed(e, "frame");
  m->rev = odo_rd_be64(&r);
  return rd_whole(&r) ? 1 : malformed(e, "CAUGHT_UP");
}

int odo_msg_refused_decode(const uint8_t *p, size_t n, odo_msg_refused *m,
                           odo_err *e) {
  odo_rd r;
  odo_rd_init(&r, p, n);
  if (!odo_msg_id_next(&r, &m->id, &m->id_len)) return malformed(e, "frame");
  m->code = odo_rd_be16(&r);
  m->reason = odo_rd_str16(&r, &m->reason_len);
  return rd_whole(&r) ? 1 : malformed(e, "REFUSED");
}

/* ---- encoders -------------------------------------------------------------- */

static int add_list(odo_buf *b, const odo_msg_list *l) {
  return odo_buf_add(b, l->p, l->len);
}

int odo_msg_catalogue_encode(odo_buf *b, const odo_msg_catalogue *m) {
  if (m->keys.count >= ODO_MSG_NO_KEY) return (b->failed = 1), 0;
  return odo_buf_add_u8(b, m->flags) &&
         odo_buf_add_be16(b, (uint16_t)m->keys.count) && add_list(b, &m->keys) &&
         odo_buf_add_be32(b, m->entries.count) && add_list(b, &m->entries);
}

int odo_msg_subscribe_encode(odo_buf *b, const odo_msg_subscribe *m) {
  return odo_buf_add_u8(b, m->flags) && odo_buf_add_be32(b, m->entries.count) &&
         add_list(b, &m->entries);
}

int odo_msg_unsubscribe_encode(odo_buf *b, const odo_msg_unsubscribe *m) {
  return odo_buf_add_be32(b, m->ids.count) && add_list(b, &m->ids);
}

int odo_msg_snapshot_encode(odo_buf *b, const odo_msg_snapshot *m) {
  return odo_buf_add_str8(b, m->id, m->id_len) && odo_buf_add_be64(b, m->rev) &&
         odo_buf_add(b, m->hash, ODO_HASH_LEN) &&
         odo_buf_add_str8(b, m->format, m->format_len) &&
         odo_buf_add_str16(b, m->sig, m->sig_len) &&
         odo_buf_add_be32(b, m->total) && odo_buf_add_be32(b, m->offset) &&
         odo_buf_add(b, m->chunk, m->chunk_len);
}

size_t odo_msg_events_open(odo_buf *b, const char *id, size_t id_len,
                           uint64_t first) {
  odo_buf_add_str8(b, id, id_len);
  odo_buf_add_be64(b, first);
  odo_buf_add_be32(b, 0); /* the count, once known */
  return b->len - 4;
}

int odo_msg_events_close(odo_buf *b, size_t count_at, uint32_t count,
                         uint64_t head_rev, const uint8_t *head_hash,
                         const uint8_t *sig, size_t sig_len) {
  if (b->failed || count_at + 4 > b->len) return (b->failed = 1), 0;
  odo_put_be32(b->p + count_at, count);
  return odo_buf_add_be64(b, head_rev) && odo_buf_add(b, head_hash, ODO_HASH_LEN) &&
         odo_buf_add_str16(b, sig, sig_len);
}

int odo_msg_events_encode(odo_buf *b, const odo_msg_events *m) {
  size_t at = odo_msg_events_open(b, m->id, m->id_len, m->first);
  return add_list(b, &m->events) &&
         odo_msg_events_close(b, at, m->events.count, m->head_rev, m->head_hash,
                              m->sig, m->sig_len);
}

int odo_msg_caught_up_encode(odo_buf *b, const odo_msg_caught_up *m) {
  return odo_buf_add_str8(b, m->id, m->id_len) && odo_buf_add_be64(b, m->rev);
}

int odo_msg_refused_encode(odo_buf *b, const odo_msg_refused *m) {
  return odo_buf_add_str8(b, m->id, m->id_len) && odo_buf_add_be16(b, m->code) &&
         odo_buf_add_str16(b, m->reason, m->reason_len);
}

const char *odo_msg_name(int type) {
  static const char *const names[] = {"CATALOGUE", "SUBSCRIBE", "UNSUBSCRIBE",
                                      "SNAPSHOT",  "EVENTS",    "CAUGHT_UP",
                                      "REFUSED"};
  return type >= ODO_MSG_CATALOGUE && type <= ODO_MSG_REFUSED
             ? names[type - ODO_MSG_CATALOGUE]
             : NULL;
}
