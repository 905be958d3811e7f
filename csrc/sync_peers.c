/* sync_peers.c - the sync engine's bookkeeping: the peers attached, what
 * each asks of us (subscriptions) and what we ask of it (wants), the
 * sources' public keys, the shared output buffer, and the notes handed
 * to Lua. Both halves of the engine (sync_serve.c, sync_recv.c) build on
 * it; it calls neither. */
#include <stdlib.h>

#include "sync.h"

sync_peer *odo_sync_find_peer(odo_sync *y, const odo_session *s) {
  for (sync_peer *p = y->peers; p; p = p->next)
    if (p->s == s) return p;
  return NULL;
}

void odo_sync_sub_free(sync_sub *sub) {
  if (sub->snap_raw) leveldb_free(sub->snap_raw);
  free(sub);
}

void odo_sync_peer_free(lua_State *L, sync_peer *p) {
  while (p->subs) {
    sync_sub *n = p->subs->next_sub;
    odo_sync_sub_free(p->subs);
    p->subs = n;
  }
  for (size_t i = 0; i < ODO_SYNC_WANT_BUCKETS; i++)
    while (p->wants[i]) {
      sync_want *n = p->wants[i]->next;
      free(p->wants[i]);
      p->wants[i] = n;
    }
  odo_buf_free(&p->snap);
  if (L) luaL_unref(L, LUA_REGISTRYINDEX, p->ref);
  free(p);
}

sync_want **odo_sync_find_want(sync_peer *p, const char *id, size_t len) {
  sync_want **w = &p->wants[odo_sync_bucket(id, len)];
  for (; *w; w = &(*w)->next)
    if ((*w)->len == len && memcmp((*w)->stream, id, len) == 0) break;
  return w;
}

size_t odo_sync_bucket(const char *id, size_t len) {
  return (size_t)(odo_fnv1a(id, len) % ODO_SYNC_WANT_BUCKETS);
}

static sync_sub *lookup_sub(sync_peer *p, const char *id, size_t len) {
  for (sync_sub *s = p->sub_index[odo_sync_bucket(id, len)]; s; s = s->hnext)
    if (s->len == len && memcmp(s->stream, id, len) == 0) return s;
  return NULL;
}

sync_sub *odo_sync_find_sub(sync_peer *p, const char *id, size_t len) {
  sync_sub *sub = lookup_sub(p, id, len);
  if (sub) odo_sync_wake_sub(p, sub);
  return sub;
}

void odo_sync_wake_sub(sync_peer *p, sync_sub *sub) {
  if (sub->ready) return;
  sub->ready = 1;
  sub->ready_next = NULL;
  sub->ready_prev = p->ready_last;
  if (p->ready_last) p->ready_last->ready_next = sub;
  else p->ready = sub;
  p->ready_last = sub;
  p->nready++;
}

void odo_sync_wake_sub_first(sync_peer *p, sync_sub *sub) {
  if (sub->ready) return;
  sub->ready = 1;
  sub->ready_prev = NULL;
  sub->ready_next = p->ready;
  if (p->ready) p->ready->ready_prev = sub;
  else p->ready_last = sub;
  p->ready = sub;
  p->nready++;
}

void odo_sync_park_sub(sync_peer *p, sync_sub *sub) {
  if (!sub->ready) return;
  if (sub->ready_prev) sub->ready_prev->ready_next = sub->ready_next;
  else p->ready = sub->ready_next;
  if (sub->ready_next) sub->ready_next->ready_prev = sub->ready_prev;
  else p->ready_last = sub->ready_prev;
  sub->ready = 0;
  sub->ready_next = sub->ready_prev = NULL;
  p->nready--;
}

void odo_sync_wake_stream(odo_sync *y, const char *id, size_t len) {
  for (sync_peer *p = y->peers; p; p = p->next) {
    sync_sub *sub = lookup_sub(p, id, len);
    if (sub) odo_sync_wake_sub(p, sub);
  }
}

sync_sub *odo_sync_add_sub(sync_peer *p, const char *id, size_t len) {
  sync_sub *sub = calloc(1, sizeof *sub);
  size_t b = odo_sync_bucket(id, len);
  if (sub == NULL) return NULL;
  memcpy(sub->stream, id, len);
  sub->len = len;
  sub->hnext = p->sub_index[b];
  p->sub_index[b] = sub;
  sub->prev_sub = p->subs_last;
  if (p->subs_last) p->subs_last->next_sub = sub;
  else p->subs = sub;
  p->subs_last = sub;
  odo_sync_wake_sub(p, sub);
  return sub;
}

void odo_sync_remove_sub(sync_peer *p, sync_sub *sub) {
  odo_sync_park_sub(p, sub);
  if (p->snap_sub == sub) p->snap_sub = NULL;
  sync_sub **h = &p->sub_index[odo_sync_bucket(sub->stream, sub->len)];
  while (*h && *h != sub) h = &(*h)->hnext;
  if (*h) *h = sub->hnext;
  if (sub->prev_sub) sub->prev_sub->next_sub = sub->next_sub;
  else p->subs = sub->next_sub;
  if (sub->next_sub) sub->next_sub->prev_sub = sub->prev_sub;
  else p->subs_last = sub->prev_sub;
  odo_sync_sub_free(sub);
}

EVP_PKEY *odo_sync_source_key(odo_sync *y, const char *src, size_t len,
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

size_t odo_sync_source_len(const char *id, size_t len) {
  const char *slash = memchr(id, '/', len);
  return slash ? (size_t)(slash - id) : len;
}

void odo_sync_head_stored(odo_sync *y, odo_stream *st, const char *id, size_t len,
                          uint64_t rev) {
  if (st && st->head_known && rev > st->head) st->head = rev;
  odo_sync_wake_stream(y, id, len);
}

void odo_sync_done_push(odo_sync *y, sync_written *w) {
  w->next = NULL;
  if (y->done_tail) y->done_tail->next = w;
  else y->done = w;
  y->done_tail = w;
}

void odo_sync_out_reset(odo_sync *y) {
  y->out.len = 0;
  y->out.failed = 0;
}

int odo_sync_send_out(odo_sync *y, sync_peer *p, unsigned frames) {
  int ok = !y->out.failed &&
           odo_session_write_frames(p->s, y->out.p, y->out.len, frames);
  odo_sync_out_reset(y);
  return ok;
}

void odo_sync_section_reset(odo_sync *y) {
  y->section.len = 0;
  y->section.failed = 0;
}

void odo_sync_section_list(odo_sync *y, uint32_t count, odo_msg_list *l) {
  if (y->section.failed) y->out.failed = 1;
  l->p = y->section.p;
  l->len = y->section.len;
  l->count = count;
}

void odo_sync_note(lua_State *L, const char *kind, const char *stream,
                   size_t len) {
  lua_createtable(L, 0, 5);
  lua_pushstring(L, kind);
  lua_setfield(L, -2, "event");
  if (stream) {
    lua_pushlstring(L, stream, len);
    lua_setfield(L, -2, "stream");
  }
}

void odo_sync_note_end(lua_State *L, int ev) {
  lua_rawseti(L, ev, (lua_Integer)lua_rawlen(L, ev) + 1);
}
