/* store_snapshots.c - snapshots, compaction and signed heads.
 *
 * A stream keeps at most one snapshot per origin (source, local), each
 * stored with h(rev) so the chain continues after it. Compaction is two
 * steps: compact() moves the first held revision forward in one atomic
 * write, purge() then deletes the old records in bounded slices. A replica
 * installing a received source snapshot does both moves in one write.
 *
 * The snapshot and head records' layouts are records.c's.
 */

/***
 * @submodule odo.core
 */
#include <stdlib.h>

#include "sign.h"
#include "store.h"

static int check_origin(lua_State *L, const char *name) {
  if (strcmp(name, "source") == 0) return ODO_ORIGIN_SOURCE;
  if (strcmp(name, "local") == 0) return ODO_ORIGIN_LOCAL;
  return luaL_error(L, "origin must be 'source' or 'local', got '%s'", name);
}

static odo_stream *check_stream(lua_State *L, odo_store *s, int idx) {
  size_t len;
  const char *id = luaL_checklstring(L, idx, &len);
  return odo_store_find(s, id, len);
}

static void snap_stage(odo_store *s, odo_stream *st, int origin, uint64_t rev,
                       const uint8_t *hash, const odo_snapshot_in *in) {
  uint8_t key[ODO_NUMKEY_LEN];
  odo_snap_rec r;
  r.rev = rev;
  r.hash = hash;
  r.format = in->format;
  r.format_len = in->format_len;
  r.sig = in->sig;
  r.sig_len = in->sig_len;
  r.data = in->data;
  r.data_len = in->data_len;
  odo_numkey(key, ODO_K_SNAP, st->num, (uint64_t)origin);
  odo_rec_begin(&s->val);
  odo_rec_snapshot_encode(&s->val, &r);
  odo_store_put(s, key, sizeof key, &s->val);
}

/* Optional string field of the table at idx, limited to max bytes. */
static const char *opt_str(lua_State *L, int idx, const char *k, size_t *len,
                           size_t max) {
  const char *v;
  *len = 0;
  if (!lua_istable(L, idx)) return "";
  lua_getfield(L, idx, k);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    return "";
  }
  if (lua_type(L, -1) != LUA_TSTRING)
    luaL_error(L, "%s must be a string", k);
  v = lua_tolstring(L, -1, len);
  if (*len > max) luaL_error(L, "%s is longer than %d bytes", k, (int)max);
  lua_pop(L, 1); /* still referenced by the table */
  return v;
}

int odo_snapshot_check_newer(odo_store *s, odo_stream *st, int origin,
                             uint64_t rev, odo_err *e) {
  uint8_t old_hash[ODO_HASH_LEN];
  uint64_t old_rev;
  int rc = odo_snapshot_meta(s, st, origin, &old_rev, old_hash, e);
  if (rc < 0) return 0;
  if (rc == 1 && old_rev > rev)
    return odo_err_set(e, "ESTALE",
                       "stream %s already has a %s snapshot at %llu, newer "
                       "than %llu",
                       st->id, odo_origin_name(origin),
                       (unsigned long long)old_rev, (unsigned long long)rev);
  return 1;
}

int odo_snapshot_store(odo_store *s, odo_stream *st, int origin, uint64_t rev,
                       const odo_snapshot_in *in, int sync, odo_err *e) {
  uint8_t hash[ODO_HASH_LEN], sig[ODO_MAX_SIG];
  odo_snapshot_in signed_in;
  size_t sl = sizeof sig;
  int rc;
  if (rev == 0)
    return odo_err_set(e, "EINVAL", "a snapshot covers revision 1 or later");
  rc = odo_store_hash_at(s, st, rev, hash, e);
  if (rc < 0) return 0;
  if (rc == 0)
    return odo_err_set(e, "ERANGE",
                       "stream %s holds revisions %llu to %llu; no snapshot "
                       "at %llu",
                       st->id, (unsigned long long)st->cat.first,
                       (unsigned long long)st->cat.last,
                       (unsigned long long)rev);
  if (!odo_snapshot_check_newer(s, st, origin, rev, e)) return 0;
  if (origin == ODO_ORIGIN_SOURCE && st->own && in->sig_len == 0 && s->signer) {
    if (!odo_sign_snapshot(s->signer, st->id, st->id_len, rev, hash, in->data,
                           in->data_len, in->format, in->format_len, sig, &sl, e))
      return 0;
    signed_in = *in;
    signed_in.sig = (const char *)sig;
    signed_in.sig_len = sl;
    in = &signed_in;
  }
  odo_txn_begin(s);
  snap_stage(s, st, origin, rev, hash, in);
  if (origin == ODO_ORIGIN_SOURCE) odo_txn_touch(s, st)->snap = rev;
  return odo_txn_commit(s, sync, e);
}

/***
 * Stores a snapshot of a stream at revision rev, with h(rev).
 * @function snapshot_put
 * @tparam string stream
 * @tparam integer rev between the first held revision - 1 and the last
 * @tparam string data the snapshot's bytes
 * @tparam[opt] table opts `origin` ("source" on own streams, "local" by
 *   default on replicas), `format` (e.g. "kv"), `sig`, `sync`
 */
int odo_store_l_snapshot_put(lua_State *L) {
  odo_store *s = odo_store_check(L, 1);
  odo_stream *st = check_stream(L, s, 2);
  uint64_t rev = odo_checku64(L, 3, "rev");
  odo_snapshot_in in;
  int origin;
  odo_err e = {0};
  in.data = luaL_checklstring(L, 4, &in.data_len);
  in.format = opt_str(L, 5, "format", &in.format_len, 255);
  in.sig = opt_str(L, 5, "sig", &in.sig_len, ODO_MAX_SIG);
  if (st == NULL)
    return odo_fail(L, "ENOENT", "no stream %s", lua_tostring(L, 2));
  origin = st->own ? ODO_ORIGIN_SOURCE : ODO_ORIGIN_LOCAL;
  if (lua_istable(L, 5)) {
    lua_getfield(L, 5, "origin");
    if (!lua_isnil(L, -1)) origin = check_origin(L, luaL_checkstring(L, -1));
    lua_pop(L, 1);
  }
  if (st->own && origin != ODO_ORIGIN_SOURCE)
    return luaL_error(L, "snapshots of an own stream have origin 'source'");
  /* a replica's source snapshots come signed, through snapshot_install */
  if (!st->own && origin == ODO_ORIGIN_SOURCE)
    return luaL_error(L, "stream %s is a replica: its source snapshots are "
                         "installed with snapshot_install", st->id);
  if (!odo_snapshot_store(s, st, origin, rev, &in,
                          lua_istable(L, 5)
                              ? odo_fieldbool(L, 5, "sync", s->sync_default)
                              : s->sync_default,
                          &e))
    return odo_err_push(L, &e);
  lua_pushboolean(L, 1);
  return 1;
}

static void push_snap(lua_State *L, const odo_snap_rec *sr, int origin) {
  lua_createtable(L, 0, 6);
  odo_pushu64(L, sr->rev);
  lua_setfield(L, -2, "rev");
  lua_pushlstring(L, (const char *)sr->hash, ODO_HASH_LEN);
  lua_setfield(L, -2, "hash");
  lua_pushstring(L, odo_origin_name(origin));
  lua_setfield(L, -2, "origin");
  lua_pushlstring(L, (const char *)sr->format, sr->format_len);
  lua_setfield(L, -2, "format");
  lua_pushlstring(L, (const char *)sr->sig, sr->sig_len);
  lua_setfield(L, -2, "sig");
  lua_pushlstring(L, (const char *)sr->data, sr->data_len);
  lua_setfield(L, -2, "data");
}

/***
 * The latest snapshot of a stream (of one origin, or of either: the newest,
 * the source's on a tie), or nil when there is none.
 * @function snapshot_get
 * @tparam string stream
 * @tparam[opt] string origin "source" or "local"
 * @treturn table {rev, hash, origin, format, sig, data}
 */
int odo_store_l_snapshot_get(lua_State *L) {
  odo_store *s = odo_store_check(L, 1);
  odo_stream *st = check_stream(L, s, 2);
  int lo = ODO_ORIGIN_SOURCE, hi = ODO_ORIGIN_LOCAL, best = 0;
  char *raw[3] = {NULL, NULL, NULL};
  odo_snap_rec sr[3];
  odo_err e = {0};
  if (!lua_isnoneornil(L, 3)) lo = hi = check_origin(L, luaL_checkstring(L, 3));
  if (st == NULL) return 0;
  for (int o = lo; o <= hi; o++) {
    int rc = odo_snapshot_rec_read(s, st, o, &raw[o], &sr[o], &e);
    if (rc < 0) {
      for (int i = 1; i <= 2; i++) leveldb_free(raw[i]);
      return odo_err_push(L, &e);
    }
    if (rc == 1 && (best == 0 || sr[o].rev > sr[best].rev)) best = o;
  }
  if (best) push_snap(L, &sr[best], best);
  for (int i = 1; i <= 2; i++) leveldb_free(raw[i]);
  return best ? 1 : 0;
}

int odo_snapshot_install(odo_store *s, const char *id, size_t len,
                         uint64_t rev, const uint8_t hash[ODO_HASH_LEN],
                         const odo_snapshot_in *in, odo_err *e) {
  uint8_t held[ODO_HASH_LEN];
  odo_stream *st;
  odo_cat *c;
  int rc;
  if (rev == 0) return odo_err_set(e, "EINVAL", "a snapshot covers revision 1 or later");
  if (rev > ODO_MAX_REV)
    return odo_err_set(e, "ETOOBIG", "a snapshot at %llu is past revision 2^53",
                       (unsigned long long)rev);
  odo_txn_begin(s);
  st = odo_store_stream(s, id, len, 1, e);
  if (st == NULL) {
    odo_txn_abort(s);
    return 0;
  }
  if (st->own) {
    odo_txn_abort(s);
    return odo_err_set(e, "ESOURCE",
                       "this node is the source of stream %s; it installs no "
                       "snapshot from elsewhere",
                       st->id);
  }
  c = odo_txn_touch(s, st);
  if (rev + 1 < c->first) {
    odo_txn_abort(s);
    return odo_err_set(e, "ESTALE",
                       "stream %s is held from %llu; a snapshot at %llu is older",
                       st->id, (unsigned long long)c->first,
                       (unsigned long long)rev);
  }
  if (rev <= c->last) {
    rc = odo_store_hash_at(s, st, rev, held, e);
    if (rc < 0) {
      odo_txn_abort(s);
      return 0;
    }
    if (rc == 1 && memcmp(held, hash, ODO_HASH_LEN) != 0) {
      odo_txn_abort(s);
      return odo_err_set(e, "ECHAIN",
                         "the snapshot at %llu of stream %s does not match "
                         "the events held",
                         (unsigned long long)rev, st->id);
    }
  } else {
    c->last = rev;
    memcpy(c->hash, hash, ODO_HASH_LEN);
  }
  c->first = rev + 1;
  memcpy(c->base, hash, ODO_HASH_LEN);
  c->snap = rev;
  snap_stage(s, st, ODO_ORIGIN_SOURCE, rev, hash, in);
  return odo_txn_commit(s, 1, e);
}

/***
 * Installs a snapshot received from the stream's source (on a replica):
 * stores it and moves the first held revision past it in one write.
 * @function snapshot_install
 * @tparam string stream
 * @tparam table snap {rev=, hash=, data=, format=, sig=}
 * @treturn integer the stream's first held revision afterwards
 */
int odo_store_l_snapshot_install(lua_State *L) {
  odo_store *s = odo_store_check(L, 1);
  size_t len, hl;
  const char *id = luaL_checklstring(L, 2, &len), *hash;
  odo_snapshot_in in;
  uint64_t rev;
  odo_err e = {0};
  luaL_checktype(L, 3, LUA_TTABLE);
  rev = odo_fieldu64(L, 3, "rev", 0);
  lua_getfield(L, 3, "hash");
  hash = lua_tolstring(L, -1, &hl);
  if (hash == NULL || hl != ODO_HASH_LEN)
    return luaL_error(L, "snap.hash must be 32 bytes");
  lua_getfield(L, 3, "data");
  in.data = luaL_checklstring(L, -1, &in.data_len);
  lua_pop(L, 2);
  in.format = opt_str(L, 3, "format", &in.format_len, 255);
  in.sig = opt_str(L, 3, "sig", &in.sig_len, ODO_MAX_SIG);
  if (rev == 0) return luaL_error(L, "snap.rev must be 1 or more");
  if (!odo_snapshot_install(s, id, len, rev, (const uint8_t *)hash, &in, &e))
    return odo_err_push(L, &e);
  odo_pushu64(L, odo_store_find(s, id, len)->cat.first);
  return 1;
}

/***
 * Moves the first held revision to upto + 1 (at most the source snapshot's
 * revision + 1) in one atomic write; purge() then deletes the records.
 * @function compact
 * @tparam string stream
 * @tparam[opt] integer upto default: the source snapshot's revision
 * @treturn integer the first held revision afterwards
 */
int odo_store_l_compact(lua_State *L) {
  odo_store *s = odo_store_check(L, 1);
  odo_stream *st = check_stream(L, s, 2);
  uint64_t upto;
  uint8_t hash[ODO_HASH_LEN];
  odo_err e = {0};
  int rc;
  if (st == NULL)
    return odo_fail(L, "ENOENT", "no stream %s", lua_tostring(L, 2));
  upto = odo_optu64(L, 3, st->cat.snap, "upto");
  if (upto > st->cat.snap)
    return odo_fail(L, "ERANGE",
                    "stream %s can be compacted up to its source snapshot at "
                    "%llu, not %llu",
                    st->id, (unsigned long long)st->cat.snap,
                    (unsigned long long)upto);
  if (upto + 1 > st->cat.first) {
    rc = odo_store_hash_at(s, st, upto, hash, &e);
    if (rc <= 0)
      return rc < 0 ? odo_err_push(L, &e)
                    : odo_fail(L, "ECORRUPT", "no hash held for %llu",
                               (unsigned long long)upto);
    odo_txn_begin(s);
    {
      odo_cat *c = odo_txn_touch(s, st);
      c->first = upto + 1;
      memcpy(c->base, hash, ODO_HASH_LEN);
    }
    if (!odo_txn_commit(s, 1, &e)) return odo_err_push(L, &e);
  }
  odo_pushu64(L, st->cat.first);
  return 1;
}

/* A segment under it that reaches past upto: when it holds events at or
 * below upto, it is rewritten under its key without them, its chain
 * continuing from h(upto) (computed over the events dropped). */
static int segment_cut(odo_store *s, odo_stream *st, leveldb_iterator_t *it,
                       uint64_t upto, odo_err *e) {
  size_t kl, vl, pl;
  const uint8_t *k = (const uint8_t *)leveldb_iter_key(it, &kl);
  const char *v = leveldb_iter_value(it, &vl);
  const uint8_t *p = odo_rec_open(k, kl, v, vl, &pl);
  uint64_t last = odo_get_be64(k + 9), rev;
  uint8_t h[ODO_HASH_LEN];
  odo_seg_rec sr;
  odo_event ev;
  odo_rd r;
  if (p == NULL || !odo_rec_segment_decode(p, pl, &sr) || sr.count > last)
    return odo_err_set(e, "ECORRUPT", "a segment of stream %s is damaged (at %llu)",
                       st->id, (unsigned long long)last);
  rev = last - sr.count + 1;
  if (rev > upto) return 1;
  memcpy(h, sr.prev, ODO_HASH_LEN);
  odo_rd_init(&r, sr.events, sr.len);
  for (; rev <= upto; rev++) {
    ev.rev = rev;
    if (!odo_event_decode(&r, &ev, 0))
      return odo_err_set(e, "ECORRUPT", "a segment of stream %s is damaged (at %llu)",
                         st->id, (unsigned long long)last);
    if (!odo_chain_next(&s->hasher, h, &ev, h)) return odo_err_set(e, "EIO", "SHA-256 failed");
  }
  sr.count = (uint32_t)(last - upto);
  sr.prev = h;
  sr.events += r.pos;
  sr.len -= r.pos;
  odo_rec_begin(&s->val);
  odo_rec_segment_encode(&s->val, &sr);
  if (!odo_store_put(s, k, kl, &s->val))
    return odo_err_set(e, "ENOMEM", "out of memory cutting a segment");
  return 1;
}

/***
 * Deletes at most max compacted records of a stream (events below the
 * first held revision, and signed heads below it).
 * @function purge
 * @tparam string stream
 * @tparam[opt] integer max default 10000
 * @treturn integer how many compacted events are still on disk
 */
int odo_store_l_purge(lua_State *L) {
  odo_store *s = odo_store_check(L, 1);
  odo_stream *st = check_stream(L, s, 2);
  uint64_t max = odo_optu64(L, 3, 10000, "max"), end, upto;
  uint8_t key[ODO_NUMKEY_LEN];
  odo_err e = {0};
  if (st == NULL) {
    lua_pushinteger(L, 0);
    return 1;
  }
  end = st->cat.first - 1;
  if (st->cat.purged >= end) {
    lua_pushinteger(L, 0);
    return 1;
  }
  upto = end - st->cat.purged > max ? st->cat.purged + max : end;
  odo_txn_begin(s);
  {
    /* events and their signed heads, in key order */
    leveldb_iterator_t *it = leveldb_create_iterator(s->db, s->ropts);
    odo_numkey(key, ODO_K_EVENT, st->num, st->cat.purged + 1);
    for (leveldb_iter_seek(it, (const char *)key, sizeof key);
         leveldb_iter_valid(it); leveldb_iter_next(it)) {
      size_t kl;
      uint64_t rev;
      const uint8_t *k = (const uint8_t *)leveldb_iter_key(it, &kl);
      int kind = odo_logkey_kind(k, kl, st->num, &rev);
      if (kind == ODO_LOG_OTHER) break;
      if (rev > upto) {
        if (kind == ODO_LOG_SEGMENT && !segment_cut(s, st, it, upto, &e)) {
          leveldb_iter_destroy(it);
          odo_txn_abort(s);
          return odo_err_push(L, &e);
        }
        break;
      }
      odo_store_del(s, k, kl);
    }
    /* records stepped over unread stay on disk: record no progress */
    if (!odo_iter_ok(it, &e, "purging compacted events")) {
      leveldb_iter_destroy(it);
      odo_txn_abort(s);
      return odo_err_push(L, &e);
    }
    leveldb_iter_destroy(it);
  }
  odo_txn_touch(s, st)->purged = upto;
  if (!odo_txn_commit(s, 0, &e)) return odo_err_push(L, &e);
  odo_pushu64(L, end - upto);
  return 1;
}

void odo_stage_head(odo_store *s, odo_stream *st, uint64_t rev,
                    const uint8_t hash[ODO_HASH_LEN], const uint8_t *sig,
                    size_t sig_len) {
  uint8_t key[ODO_HEADKEY_LEN];
  odo_headkey(key, st->num, rev);
  odo_rec_begin(&s->val);
  odo_rec_head_encode(&s->val, hash, sig, sig_len);
  odo_store_put(s, key, sizeof key, &s->val);
}

int odo_head_read(odo_store *s, odo_stream *st, uint64_t rev, int last,
                  odo_head *h, odo_err *e) {
  uint8_t key[ODO_HEADKEY_LEN];
  leveldb_iterator_t *it = leveldb_create_iterator(s->db, s->ropts);
  int found = 0;
  /* heads sit among the events: walk to the nearest one (they are at most
   * 1000 events apart on streams signed by this project) */
  if (last) {
    odo_numkey(key, ODO_K_EVENT, st->num + 1, 0);
    leveldb_iter_seek(it, (const char *)key, ODO_NUMKEY_LEN);
    if (leveldb_iter_valid(it)) leveldb_iter_prev(it);
    else leveldb_iter_seek_to_last(it);
  } else {
    odo_headkey(key, st->num, rev);
    leveldb_iter_seek(it, (const char *)key, sizeof key);
  }
  for (; leveldb_iter_valid(it); last ? leveldb_iter_prev(it) : leveldb_iter_next(it)) {
    size_t kl, vl, pl;
    const uint8_t *k = (const uint8_t *)leveldb_iter_key(it, &kl);
    const char *v;
    const uint8_t *p;
    uint64_t at;
    int kind = odo_logkey_kind(k, kl, st->num, &at);
    if (kind == ODO_LOG_OTHER) break;
    if (kind != ODO_LOG_HEAD) continue;
    v = leveldb_iter_value(it, &vl);
    p = odo_rec_open(k, kl, v, vl, &pl);
    if (p == NULL || !odo_rec_head_decode(p, pl, h)) {
      leveldb_iter_destroy(it);
      return odo_err_set(e, "ECORRUPT", "a signed head of stream %s is damaged", st->id), -1;
    }
    h->rev = odo_get_be64(k + 9);
    found = 1;
    break;
  }
  if (!found && !odo_iter_ok(it, e, "reading signed heads")) found = -1;
  leveldb_iter_destroy(it);
  return found;
}

/***
 * Stores a signed head {rev, hash, sig}; hash must be h(rev) as held.
 * @function head_put
 */
int odo_store_l_head_put(lua_State *L) {
  odo_store *s = odo_store_check(L, 1);
  odo_stream *st = check_stream(L, s, 2);
  uint64_t rev = odo_checku64(L, 3, "rev");
  size_t hl, sl;
  const char *hash = luaL_checklstring(L, 4, &hl);
  const char *sig = luaL_optlstring(L, 5, "", &sl);
  uint8_t held[ODO_HASH_LEN];
  odo_err e = {0};
  int rc;
  if (hl != ODO_HASH_LEN) return luaL_argerror(L, 4, "a hash is 32 bytes");
  if (sl > ODO_MAX_SIG) return luaL_argerror(L, 5, "signature too long");
  if (st == NULL)
    return odo_fail(L, "ENOENT", "no stream %s", lua_tostring(L, 2));
  rc = odo_store_hash_at(s, st, rev, held, &e);
  if (rc < 0) return odo_err_push(L, &e);
  if (rc == 0 || memcmp(held, hash, ODO_HASH_LEN) != 0)
    return odo_fail(L, "ECHAIN",
                    "the head at %llu of stream %s does not match the events "
                    "held",
                    (unsigned long long)rev, st->id);
  odo_txn_begin(s);
  odo_stage_head(s, st, rev, (const uint8_t *)hash, (const uint8_t *)sig, sl);
  if (!odo_txn_commit(s, 0, &e)) return odo_err_push(L, &e);
  lua_pushboolean(L, 1);
  return 1;
}

/***
 * The first signed head at or after rev, or (with `last` true) the newest
 * one; nil when there is none.
 * @function head_find
 * @treturn table {rev, hash, sig}
 */
int odo_store_l_head_find(lua_State *L) {
  odo_store *s = odo_store_check(L, 1);
  odo_stream *st = check_stream(L, s, 2);
  int last = lua_toboolean(L, 4);
  uint64_t rev = last ? 0 : odo_checku64(L, 3, "rev");
  odo_head h;
  odo_err e = {0};
  int rc;
  if (st == NULL) return 0;
  rc = odo_head_read(s, st, rev, last, &h, &e);
  if (rc < 0) return odo_err_push(L, &e);
  if (rc == 0) return 0;
  lua_createtable(L, 0, 3);
  odo_pushu64(L, h.rev);
  lua_setfield(L, -2, "rev");
  lua_pushlstring(L, (const char *)h.hash, ODO_HASH_LEN);
  lua_setfield(L, -2, "hash");
  lua_pushlstring(L, (const char *)h.sig, h.sig_len);
  lua_setfield(L, -2, "sig");
  return 1;
}
