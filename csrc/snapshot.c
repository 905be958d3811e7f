/* snapshot.c - the snapshot builder: folds a stream's events from its
 * previous snapshot up to a revision with a built-in reducer, a slice at a
 * time, and stores the result in one write. Lua reducers fold in Lua
 * (lua/odo/snapshots.lua) and store through the same store call.
 *
 * Built-in reducers (docs/STORAGE.md, "Snapshot formats"):
 *   kv    events "put" (data: u32be key_len | key | value) and "del"
 *         (data: key); the snapshot is the latest value per key:
 *         u32be count | (u32be key_len | key | u32be value_len | value)*
 *         sorted by key bytes. Other event types are ignored.
 *   last  the snapshot is the last event, in the canonical encoding
 *         (event.h).
 *
 * Finishing on a worker thread writes the record through records.c and
 * refuses a snapshot older than the stored one, as the store does.
 * Over 600 lines, and one job: a builder's life (fold, encode, store,
 * possibly on a worker) with the kv map it folds into; the map is used
 * by nothing else, and kv_decode/event_decode for Lua read its formats. */

/***
 * @submodule odo.core
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "sign.h"
#include "store.h"
#include "thread_prio.h"

#define BUILDER_CLASS "odo.snapshot_builder"

enum { REDUCER_KV = 1, REDUCER_LAST = 2 };

/* ---- a byte-string map for the kv reducer -------------------------------- */

typedef struct kv_entry {
  char *key, *val; /* NULL key: empty slot; val == NULL: deleted */
  size_t klen, vlen;
  uint64_t hash;
} kv_entry;

typedef struct kv_map {
  kv_entry *slots;
  size_t cap, used, live; /* used counts deleted slots too */
} kv_map;

static uint64_t kv_hash(const char *p, size_t n) { return odo_fnv1a(p, n); }

static void kv_free(kv_map *m) {
  for (size_t i = 0; i < m->cap; i++) {
    free(m->slots[i].key);
    free(m->slots[i].val);
  }
  free(m->slots);
  memset(m, 0, sizeof *m);
}

static kv_entry *kv_slot(kv_map *m, const char *k, size_t kl, uint64_t h) {
  size_t i = h & (m->cap - 1);
  for (;; i = (i + 1) & (m->cap - 1)) {
    kv_entry *e = &m->slots[i];
    if (e->key == NULL || (e->hash == h && e->klen == kl &&
                           memcmp(e->key, k, kl) == 0))
      return e;
  }
}

static int kv_grow(kv_map *m) {
  kv_map n = {0};
  n.cap = m->cap ? m->cap * 2 : 1024;
  n.slots = calloc(n.cap, sizeof *n.slots);
  if (n.slots == NULL) return 0;
  for (size_t i = 0; i < m->cap; i++) {
    kv_entry *e = &m->slots[i];
    if (e->key == NULL) continue;
    if (e->val == NULL) { /* drop deleted entries while rehashing */
      free(e->key);
      continue;
    }
    *kv_slot(&n, e->key, e->klen, e->hash) = *e;
    n.used++;
    n.live++;
  }
  free(m->slots);
  *m = n;
  return 1;
}

static char *dup_bytes(const char *p, size_t n) {
  char *d = malloc(n ? n : 1);
  if (d && n) memcpy(d, p, n);
  return d;
}

/* Sets (val != NULL) or deletes a key; 0 on allocation failure. */
static int kv_set(kv_map *m, const char *k, size_t kl, const char *v,
                  size_t vl) {
  uint64_t h = kv_hash(k, kl);
  kv_entry *e;
  if ((m->used + 1) * 4 > m->cap * 3 && !kv_grow(m)) return 0;
  e = kv_slot(m, k, kl, h);
  if (e->key == NULL) {
    if (v == NULL) return 1;
    e->key = dup_bytes(k, kl);
    if (e->key == NULL) return 0;
    e->klen = kl;
    e->hash = h;
    m->used++;
  } else if (e->val != NULL) {
    m->live--;
  }
  free(e->val);
  e->val = NULL;
  e->vlen = 0;
  if (v) {
    e->val = dup_bytes(v, vl);
    if (e->val == NULL) return 0;
    e->vlen = vl;
    m->live++;
  }
  return 1;
}

static int kv_cmp(const void *a, const void *b) {
  const kv_entry *x = *(kv_entry *const *)a, *y = *(kv_entry *const *)b;
  size_t n = x->klen < y->klen ? x->klen : y->klen;
  int c = memcmp(x->key, y->key, n);
  return c ? c : (x->klen > y->klen) - (x->klen < y->klen);
}

static int kv_encode(kv_map *m, odo_buf *out) {
  kv_entry **all = malloc((m->live ? m->live : 1) * sizeof *all);
  size_t n = 0;
  int ok = 1;
  if (all == NULL) return 0;
  for (size_t i = 0; i < m->cap; i++)
    if (m->slots[i].key && m->slots[i].val) all[n++] = &m->slots[i];
  qsort(all, n, sizeof *all, kv_cmp);
  ok = odo_buf_add_be32(out, (uint32_t)n);
  for (size_t i = 0; ok && i < n; i++)
    ok = odo_buf_add_be32(out, (uint32_t)all[i]->klen) &&
         odo_buf_add(out, all[i]->key, all[i]->klen) &&
         odo_buf_add_be32(out, (uint32_t)all[i]->vlen) &&
         odo_buf_add(out, all[i]->val, all[i]->vlen);
  free(all);
  return ok;
}

/* Calls fn for each key and value of an encoded kv snapshot; 0 if the
 * bytes are not a valid kv snapshot. */
static int kv_walk(const char *p, size_t n,
                   int (*fn)(void *ud, const char *k, size_t kl,
                             const char *v, size_t vl),
                   void *ud) {
  odo_rd r;
  uint32_t count;
  odo_rd_init(&r, p, n);
  count = odo_rd_be32(&r);
  for (uint32_t i = 0; i < count && !r.bad; i++) {
    uint32_t kl = odo_rd_be32(&r);
    const uint8_t *k = odo_rd_bytes(&r, kl);
    uint32_t vl = odo_rd_be32(&r);
    const uint8_t *v = odo_rd_bytes(&r, vl);
    if (r.bad) break;
    if (!fn(ud, (const char *)k, kl, (const char *)v, vl)) return 0;
  }
  return !r.bad && odo_rd_left(&r) == 0;
}

static int kv_load_one(void *ud, const char *k, size_t kl, const char *v,
                       size_t vl) {
  return kv_set((kv_map *)ud, k, kl, v, vl);
}

/* Applies one kv event; other types are ignored. 0 on a malformed put. */
static int kv_apply(kv_map *m, const odo_event *ev, int *nomem) {
  *nomem = 0;
  if (ev->type_len == 3 && memcmp(ev->type, "put", 3) == 0) {
    uint32_t kl;
    if (ev->data_len < 4) return 0;
    kl = odo_get_be32((const uint8_t *)ev->data);
    if (kl > ev->data_len - 4) return 0;
    if (!kv_set(m, ev->data + 4, kl, ev->data + 4 + kl,
                ev->data_len - 4 - kl))
      *nomem = 1;
  } else if (ev->type_len == 3 && memcmp(ev->type, "del", 3) == 0) {
    if (!kv_set(m, ev->data, ev->data_len, NULL, 0)) *nomem = 1;
  }
  return 1;
}

/* ---- the builder --------------------------------------------------------- */

typedef struct builder {
  odo_store *store;
  char stream_id[ODO_MAX_STREAM_ID + 1];
  size_t id_len;
  int reducer, origin, folded, skipped_bad;
  uint64_t base, upto, events;
  odo_reader r;
  kv_map kv;
  odo_buf last; /* the last event's encoding */
  odo_dependent dep; /* released if the store closes first */
  /* finish_async: a thread encodes and writes the snapshot record */
  pthread_t thread;
  int running, efd;
  uint8_t hash[ODO_HASH_LEN], worker_key[ODO_NUMKEY_LEN];
  odo_stream *worker_stream; /* streams live as long as their store */
  EVP_PKEY *sign_key; /* signs a source snapshot before it is written */
  int wfailed;        /* the worker wrote nothing, because of wfail */
  odo_err wfail;
} builder;

static const char *reducer_name(int r) {
  return r == REDUCER_KV ? "kv" : "last";
}

static void worker_join(builder *b);
static void builder_dep_release(odo_dependent *d);

static void builder_release(builder *b) {
  worker_join(b);
  if (b->store) odo_store_remove_dependent(b->store, &b->dep);
  if (b->efd >= 0) close(b->efd);
  b->efd = -1;
  odo_reader_close(&b->r);
  kv_free(&b->kv);
  odo_buf_free(&b->last);
  EVP_PKEY_free(b->sign_key);
  b->sign_key = NULL;
  b->store = NULL;
}

static int l_builder_gc(lua_State *L) {
  builder_release(luaL_checkudata(L, 1, BUILDER_CLASS));
  return 0;
}

static int l_builder_tostring(lua_State *L) {
  builder *b = luaL_checkudata(L, 1, BUILDER_CLASS);
  lua_pushfstring(L, "odo.snapshot_builder (%s, %s)", b->stream_id,
                  reducer_name(b->reducer));
  return 1;
}

static builder *check_builder(lua_State *L) {
  builder *b = luaL_checkudata(L, 1, BUILDER_CLASS);
  if (b->store == NULL || b->store->db == NULL)
    luaL_error(L, "attempt to use a closed snapshot builder");
  return b;
}

static odo_stream *builder_stream(builder *b, odo_err *e) {
  odo_stream *st = odo_store_find(b->store, b->stream_id, b->id_len);
  if (st == NULL) odo_err_set(e, "ENOENT", "no stream %s", b->stream_id);
  return st;
}

static int encode_last(odo_buf *out, const odo_event *ev) {
  out->len = 0;
  return odo_event_encode(out, ev, 1);
}

/* Starts from the previous snapshot of this origin and format, if it is
 * usable; otherwise from the first held event (which must be 1). */
static int builder_base(builder *b, odo_stream *st, odo_err *e) {
  char *raw = NULL;
  uint64_t rev = 0;
  odo_snapshot_in prev;
  int rc = odo_snapshot_read(b->store, st, b->origin, &raw, &rev, &prev, e);
  const char *want = reducer_name(b->reducer);
  if (rc < 0) return 0;
  b->base = 0;
  if (rc == 1 && rev <= b->upto && prev.format_len == strlen(want) &&
      memcmp(prev.format, want, prev.format_len) == 0 &&
      rev + 1 >= st->cat.first) {
    int ok = 1;
    if (b->reducer == REDUCER_KV)
      ok = kv_walk(prev.data, prev.data_len, kv_load_one, &b->kv);
    else
      ok = odo_buf_add(&b->last, prev.data, prev.data_len);
    leveldb_free(raw);
    if (!ok)
      return odo_err_set(e, "ECORRUPT",
                         "the previous %s snapshot of stream %s is not valid",
                         want, st->id);
    b->base = rev;
    return 1;
  }
  leveldb_free(raw);
  if (b->reducer == REDUCER_KV && st->cat.first > 1)
    return odo_err_set(e, "ESTALE",
                       "events of stream %s before %llu are compacted and no "
                       "%s snapshot covers them",
                       st->id, (unsigned long long)st->cat.first, want);
  return 1;
}

/***
 * A snapshot builder for a stream with a built-in reducer.
 * @function snapshot_builder
 * @tparam odo.store store
 * @tparam string stream
 * @tparam string reducer "kv" or "last"
 * @tparam[opt] table opts `upto` (default: the last revision), `origin`
 *   (default: "source" on own streams, "local" on replicas)
 * @return builder with `step(n)`, `finish()`, `result()`
 */
static int l_snapshot_builder(lua_State *L) {
  odo_store *s = odo_store_check(L, 1);
  size_t len;
  const char *id = luaL_checklstring(L, 2, &len);
  const char *red = luaL_checkstring(L, 3);
  odo_stream *st = odo_store_find(s, id, len);
  builder *b;
  odo_err e = {0};
  uint64_t upto;
  if (st == NULL) return odo_fail(L, "ENOENT", "no stream %s", id);
  upto = lua_istable(L, 4) ? odo_fieldu64(L, 4, "upto", st->cat.last)
                           : st->cat.last;
  b = lua_newuserdatauv(L, sizeof *b, 1);
  memset(b, 0, sizeof *b);
  b->efd = -1;
  luaL_setmetatable(L, BUILDER_CLASS);
  lua_pushvalue(L, 1); /* keeps the store alive */
  odo_setuservalue(L, -2);
  b->store = s;
  b->dep.release = builder_dep_release;
  odo_store_add_dependent(s, &b->dep);
  memcpy(b->stream_id, id, len + 1);
  b->id_len = len;
  if (strcmp(red, "kv") == 0) b->reducer = REDUCER_KV;
  else if (strcmp(red, "last") == 0) b->reducer = REDUCER_LAST;
  else return luaL_error(L, "unknown reducer '%s' (kv or last)", red);
  b->origin = st->own ? ODO_ORIGIN_SOURCE : ODO_ORIGIN_LOCAL;
  if (lua_istable(L, 4)) {
    lua_getfield(L, 4, "origin");
    if (lua_isstring(L, -1))
      b->origin = strcmp(lua_tostring(L, -1), "local") == 0
                      ? ODO_ORIGIN_LOCAL
                      : ODO_ORIGIN_SOURCE;
    lua_pop(L, 1);
  }
  if (st->own) b->origin = ODO_ORIGIN_SOURCE;
  if (upto == 0 || upto > st->cat.last)
    return odo_fail(L, "ERANGE", "stream %s has no revision %llu to snapshot",
                    id, (unsigned long long)upto);
  b->upto = upto;
  if (!builder_base(b, st, &e)) {
    builder_release(b);
    return odo_err_push(L, &e);
  }
  /* `last` needs only the event at upto. */
  if (b->reducer == REDUCER_LAST && b->base < upto) b->base = upto - 1;
  if (b->base < upto &&
      !odo_reader_open(s, st, b->base + 1, upto, &b->r, &e)) {
    builder_release(b);
    return odo_err_push(L, &e);
  }
  b->folded = b->base >= upto;
  return 1;
}

/***
 * Folds at most n more events (default 10000).
 * @function builder:step
 * @treturn boolean true when every event up to `upto` is folded
 * @treturn[2] nil
 * @treturn[2] string "ECORRUPT: ..." or "ENOMEM: ..."
 */
static int l_builder_step(lua_State *L) {
  builder *b = check_builder(L);
  uint64_t n = odo_optu64(L, 2, 10000, "n");
  odo_err e = {0};
  odo_event ev;
  while (!b->folded && n-- > 0) {
    int rc = odo_reader_next(&b->r, &ev, &e), nomem = 0;
    if (rc < 0) return odo_err_push(L, &e);
    if (rc == 0) {
      b->folded = 1;
      break;
    }
    b->events++;
    if (b->reducer == REDUCER_KV) {
      if (!kv_apply(&b->kv, &ev, &nomem)) b->skipped_bad++;
    } else {
      nomem = !encode_last(&b->last, &ev);
    }
    if (nomem) return odo_fail(L, "ENOMEM", "out of memory building a snapshot");
  }
  if (!b->folded && b->r.next > b->upto) b->folded = 1;
  if (b->folded) odo_reader_close(&b->r);
  lua_pushboolean(L, b->folded);
  return 1;
}

static int builder_bytes(builder *b, odo_buf *out) {
  if (b->reducer == REDUCER_KV) return kv_encode(&b->kv, out);
  return odo_buf_add(out, b->last.p, b->last.len);
}

/***
 * The snapshot's bytes, once every event is folded.
 * @function builder:result
 */
static int l_builder_result(lua_State *L) {
  builder *b = check_builder(L);
  odo_buf out;
  if (!b->folded) return luaL_error(L, "the snapshot is not folded yet: call step()");
  if (b->efd >= 0) return luaL_error(L, "the snapshot is being finished by a worker");
  odo_buf_init(&out);
  if (!builder_bytes(b, &out)) {
    odo_buf_free(&out);
    return odo_fail(L, "ENOMEM", "out of memory encoding a snapshot");
  }
  lua_pushlstring(L, out.len ? (const char *)out.p : "", out.len);
  odo_buf_free(&out);
  return 1;
}

/***
 * Stores the snapshot (one write) and releases the builder's state.
 * @function builder:finish
 * @treturn integer the snapshot's revision
 */
static int l_builder_finish(lua_State *L) {
  builder *b = check_builder(L);
  odo_buf out;
  odo_snapshot_in in;
  odo_err e = {0};
  odo_stream *st;
  uint64_t rev = b->upto;
  int ok;
  if (!b->folded) return luaL_error(L, "the snapshot is not folded yet: call step()");
  if (b->efd >= 0) return luaL_error(L, "the snapshot is being finished by a worker");
  st = builder_stream(b, &e);
  if (st == NULL) return odo_err_push(L, &e);
  odo_buf_init(&out);
  if (!builder_bytes(b, &out)) {
    odo_buf_free(&out);
    return odo_fail(L, "ENOMEM", "out of memory encoding a snapshot");
  }
  in.data = out.len ? (const char *)out.p : "";
  in.data_len = out.len;
  in.format = reducer_name(b->reducer);
  in.format_len = strlen(in.format);
  in.sig = "";
  in.sig_len = 0;
  ok = b->base == rev && b->events == 0
           ? 1 /* nothing new since the previous snapshot */
           : odo_snapshot_store(b->store, st, b->origin, rev, &in, 1, &e);
  odo_buf_free(&out);
  builder_release(b);
  if (!ok) return odo_err_push(L, &e);
  odo_pushu64(L, rev);
  return 1;
}

/* ---- finishing on a worker thread ------------------------------------- */

/* Encodes, signs (a source snapshot of an own stream) and writes the
 * snapshot record, through the same record encoder and the same staleness
 * check as the store's own snapshot writes. Touches no Lua state and no
 * mutable store state: LevelDB reads and writes are thread-safe. Named
 * "odo-snapshot"; takes the store's worker_nice first (thread_prio.c). */
static void *finish_worker(void *arg) {
  builder *b = arg;
  odo_store *s = b->store;
  const char *fmt = reducer_name(b->reducer);
  uint8_t sig[ODO_MAX_SIG];
  size_t sl = 0;
  uint64_t one = 1;
  odo_buf data, val;
  odo_snap_rec r;
  odo_buf_init(&data);
  odo_buf_init(&val);
  odo_thread_name("odo-snapshot");
  if (!odo_thread_nice(s->worker_nice, "snapshot worker", &b->wfail)) {
    b->wfailed = 1; /* nothing written: the store's policy says not at this priority */
  } else if (!builder_bytes(b, &data)) {
    b->wfailed = !odo_err_set(&b->wfail, "ENOMEM", "out of memory encoding a snapshot");
  } else if (b->sign_key &&
             (sl = sizeof sig,
              !odo_sign_snapshot(b->sign_key, b->stream_id, b->id_len, b->upto,
                                 b->hash, data.p, data.len, fmt, strlen(fmt),
                                 sig, &sl, &b->wfail))) {
    b->wfailed = 1;
  } else if (!odo_snapshot_check_newer(s, b->worker_stream, b->origin, b->upto,
                                       &b->wfail)) {
    b->wfailed = 1;
  } else {
    r.rev = b->upto;
    r.hash = b->hash;
    r.format = fmt;
    r.format_len = strlen(fmt);
    r.sig = (const char *)sig;
    r.sig_len = sl;
    r.data = data.len ? (const char *)data.p : "";
    r.data_len = data.len;
    odo_rec_begin(&val);
    if (!odo_rec_snapshot_encode(&val, &r) ||
        !odo_rec_seal(&val, b->worker_key, ODO_NUMKEY_LEN)) {
      b->wfailed = !odo_err_set(&b->wfail, "ENOMEM", "out of memory encoding a snapshot");
    } else {
      char *err = NULL;
      leveldb_writebatch_t *batch = leveldb_writebatch_create();
      leveldb_writebatch_put(batch, (const char *)b->worker_key, ODO_NUMKEY_LEN,
                             (const char *)val.p, val.len);
      leveldb_write(s->db, s->wsync, batch, &err);
      leveldb_writebatch_destroy(batch);
      if (err) b->wfailed = !odo_store_dberr(&b->wfail, err, "writing a snapshot");
    }
  }
  odo_buf_free(&data);
  odo_buf_free(&val);
  kv_free(&b->kv); /* written: free the state here, off the loop too */
  if (write(b->efd, &one, sizeof one) < 0) {
    /* nothing to do: collect() joins the thread either way */
  }
  return NULL;
}

static void worker_join(builder *b) {
  if (!b->running) return;
  pthread_join(b->thread, NULL);
  b->running = 0;
}

static void builder_dep_release(odo_dependent *d) {
  builder_release((builder *)((char *)d - offsetof(builder, dep)));
}

/***
 * Encodes and stores the snapshot on a worker thread, so a large one never
 * stalls the loop. Returns a file descriptor that becomes readable when
 * the write is done; then call `collect()`.
 * @function builder:finish_async
 * @treturn integer fd
 */
static int l_builder_finish_async(lua_State *L) {
  builder *b = check_builder(L);
  odo_err e = {0};
  odo_stream *st;
  int rc;
  if (!b->folded) return luaL_error(L, "the snapshot is not folded yet: call step()");
  if (b->running || b->efd >= 0) return luaL_error(L, "finish_async was already called");
  st = builder_stream(b, &e);
  if (st == NULL) return odo_err_push(L, &e);
  rc = odo_store_hash_at(b->store, st, b->upto, b->hash, &e);
  if (rc <= 0)
    return rc < 0 ? odo_err_push(L, &e)
                  : odo_fail(L, "ERANGE", "revision %llu of %s is not held",
                             (unsigned long long)b->upto, st->id);
  /* a snapshot older than the one stored is refused here, and again by
   * the worker just before it writes */
  if (!odo_snapshot_check_newer(b->store, st, b->origin, b->upto, &e))
    return odo_err_push(L, &e);
  odo_numkey(b->worker_key, ODO_K_SNAP, st->num, (uint64_t)b->origin);
  b->worker_stream = st;
  if (b->origin == ODO_ORIGIN_SOURCE && st->own && b->store->signer &&
      b->sign_key == NULL) {
    EVP_PKEY_up_ref(b->store->signer);
    b->sign_key = b->store->signer;
  }
  b->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (b->efd < 0) return odo_fail(L, "EIO", "eventfd: %s", strerror(errno));
  rc = pthread_create(&b->thread, NULL, finish_worker, b);
  if (rc != 0) {
    close(b->efd);
    b->efd = -1;
    return odo_fail(L, "EAGAIN", "cannot start a worker thread: %s", strerror(rc));
  }
  b->running = 1;
  lua_pushinteger(L, b->efd);
  return 1;
}

/***
 * After `finish_async`'s descriptor became readable (or to wait for it):
 * joins the worker and records the snapshot in the catalogue.
 * @function builder:collect
 * @treturn integer the snapshot's revision
 * @treturn[2] nil
 * @treturn[2] string "ENOSPC: ...", "EIO: ..."
 */
static int l_builder_collect(lua_State *L) {
  builder *b = check_builder(L);
  odo_store *s = b->store;
  odo_stream *st;
  odo_err e = {0};
  uint64_t rev = b->upto, stored = 0;
  uint8_t hash[ODO_HASH_LEN];
  int failed, rc;
  if (b->efd < 0) return luaL_error(L, "collect() follows finish_async()");
  worker_join(b);
  failed = b->wfailed;
  if (failed) e = b->wfail;
  builder_release(b);
  if (failed) return odo_err_push(L, &e);
  st = odo_store_find(s, b->stream_id, b->id_len);
  if (st == NULL) return odo_fail(L, "ENOENT", "no stream %s", b->stream_id);
  if (b->origin == ODO_ORIGIN_SOURCE) {
    rc = odo_snapshot_meta(s, st, ODO_ORIGIN_SOURCE, &stored, hash, &e);
    if (rc < 0) return odo_err_push(L, &e);
    if (rc == 1 && stored != st->cat.snap && stored <= st->cat.last) {
      odo_txn_begin(s);
      odo_txn_touch(s, st)->snap = stored;
      if (!odo_txn_commit(s, 0, &e)) return odo_err_push(L, &e);
    }
  }
  odo_pushu64(L, rev);
  return 1;
}

/***
 * How far the builder is: {base=, upto=, events=, folded=, skipped=}.
 * @function builder:progress
 */
static int l_builder_progress(lua_State *L) {
  builder *b = luaL_checkudata(L, 1, BUILDER_CLASS);
  lua_createtable(L, 0, 5);
  odo_pushu64(L, b->base);
  lua_setfield(L, -2, "base");
  odo_pushu64(L, b->upto);
  lua_setfield(L, -2, "upto");
  odo_pushu64(L, b->events);
  lua_setfield(L, -2, "events");
  lua_pushboolean(L, b->folded);
  lua_setfield(L, -2, "folded");
  lua_pushinteger(L, b->skipped_bad);
  lua_setfield(L, -2, "skipped");
  return 1;
}

/* ---- kv helpers for Lua -------------------------------------------------- */

static int kv_push_one(void *ud, const char *k, size_t kl, const char *v,
                       size_t vl) {
  lua_State *L = ud;
  lua_pushlstring(L, k, kl);
  lua_pushlstring(L, v, vl);
  lua_rawset(L, -3);
  return 1;
}

/***
 * Decodes a kv snapshot into a table key -> value.
 * @function kv_decode
 * @treturn table
 * @treturn[2] nil
 * @treturn[2] string "EINVAL: ..."
 */
static int l_kv_decode(lua_State *L) {
  size_t n;
  const char *p = luaL_checklstring(L, 1, &n);
  lua_newtable(L);
  if (!kv_walk(p, n, kv_push_one, L))
    return odo_fail(L, "EINVAL", "not a kv snapshot (%zu bytes)", n);
  return 1;
}

/***
 * The data of a kv "put" event: u32be key_len | key | value.
 * @function kv_put_data
 */
static int l_kv_put_data(lua_State *L) {
  size_t kl, vl;
  const char *k = luaL_checklstring(L, 1, &kl);
  const char *v = luaL_checklstring(L, 2, &vl);
  luaL_Buffer b;
  uint8_t len[4];
  if (kl > ODO_MAX_DATA) return luaL_argerror(L, 1, "key too long");
  odo_put_be32(len, (uint32_t)kl);
  luaL_buffinit(L, &b);
  luaL_addlstring(&b, (const char *)len, 4);
  luaL_addlstring(&b, k, kl);
  luaL_addlstring(&b, v, vl);
  luaL_pushresult(&b);
  return 1;
}

/***
 * Decodes a canonical event encoding (a `last` snapshot) into
 * {rev, ts, type, data}.
 * @function event_decode
 */
static int l_event_decode(lua_State *L) {
  size_t n;
  const char *p = luaL_checklstring(L, 1, &n);
  odo_rd r;
  odo_event ev;
  odo_rd_init(&r, p, n);
  if (!odo_event_decode(&r, &ev, 1) || odo_rd_left(&r) != 0)
    return odo_fail(L, "EINVAL", "not an encoded event (%zu bytes)", n);
  odo_push_event(L, &ev, 0);
  return 1;
}

void odo_snapshot_open(lua_State *L) {
  static const luaL_Reg methods[] = {{"step", l_builder_step},
                                     {"result", l_builder_result},
                                     {"finish", l_builder_finish},
                                     {"finish_async", l_builder_finish_async},
                                     {"collect", l_builder_collect},
                                     {"progress", l_builder_progress},
                                     {NULL, NULL}};
  static const luaL_Reg fns[] = {{"snapshot_builder", l_snapshot_builder},
                                 {"kv_decode", l_kv_decode},
                                 {"kv_put_data", l_kv_put_data},
                                 {"event_decode", l_event_decode},
                                 {NULL, NULL}};
  odo_newclass(L, BUILDER_CLASS, methods, l_builder_gc, l_builder_tostring);
  luaL_setfuncs(L, fns, 0);
}
