/* store.h - the event store's in-memory state and the C interface that
 * other parts of the core (snapshot builder, sync engine) use directly.
 *
 * A store is one LevelDB database bound to one node id. Every stream it
 * knows has a catalogue entry kept in memory and on disk; changes are
 * staged in a transaction (a LevelDB WriteBatch plus staged copies of the
 * catalogue entries it touches) and become visible in memory only after
 * the write succeeded, so a failed write changes nothing. The key and
 * value layout is in docs/STORAGE.md.
 */
#ifndef ODO_STORE_H
#define ODO_STORE_H

#include <leveldb/c.h>

#include "records.h"

#define ODO_STORE_CLASS "odo.store"
#define ODO_ITER_CLASS "odo.store.iterator"
#define ODO_STORE_FORMAT 2 /* 2: segments in the log (format 1 stores are upgraded at open) */

/* Snapshot origins. */
#define ODO_ORIGIN_SOURCE 1 /* made (and later signed) by the stream's source */
#define ODO_ORIGIN_LOCAL 2  /* built by this replica for its own use */

/* One stream's catalogue entry. */
typedef struct odo_cat {
  uint64_t first;  /* first revision held (last + 1 when none are) */
  uint64_t last;   /* last revision, 0 for an empty stream */
  uint64_t snap;   /* revision of the newest source snapshot, 0 if none */
  uint64_t purged; /* events up to here are deleted from disk */
  uint8_t base[ODO_HASH_LEN]; /* h(first - 1) */
  uint8_t hash[ODO_HASH_LEN]; /* h(last) */
} odo_cat;

typedef struct odo_stream {
  char *id;
  size_t id_len, src_len; /* the source id is id[0 .. src_len) */
  uint64_t num;           /* key prefix of this stream's records */
  int own;                /* this node is the stream's source */
  odo_cat cat;            /* committed state */
  odo_cat staged;         /* state inside the open transaction */
  int in_txn, is_new, changed;
  /* group commits written on the commit queue's worker (commit_queue.c):
   * how many are in flight, and the entry after the newest of them */
  unsigned inflight;
  unsigned urgent_inflight; /* of them, received batches queued as urgent
                             * (sync_recv.c: live, ahead of bulk) */
  odo_cat tip;
  uint64_t head;  /* newest signed head's revision, once head_known */
  int head_known; /* (kept by the sync engine, which writes heads) */
  uint64_t head_staged; /* newest head handed to the writer (0: none) */
  uint64_t packed; /* store_pack.c: ranges up to here need no packing */
  uint64_t packed_saved; /* ... as stored ('m' "packed/" num), once loaded */
  int packed_loaded;
  struct odo_stream *next; /* hash bucket chain */
} odo_stream;

/* Something that holds LevelDB resources of a store (a snapshot builder
 * with its iterator and perhaps a worker thread). When the store closes it
 * calls release(), which must free those resources and call
 * odo_store_remove_dependent. */
typedef struct odo_dependent {
  void (*release)(struct odo_dependent *d);
  struct odo_dependent *next;
} odo_dependent;

/* A received batch whose chain hashes the writer's thread computes: n
 * events of stream `num` from revision first, as they travelled (u64be
 * ts | str8 type | u32be len | data, back to back: `len` bytes the chain
 * owns, allocated with it in one block, with ODO_SEG_ROOM bytes of its
 * own before them), chained from prev; they go into the write (one
 * segment record, its header written into that room: no copy of them),
 * and the last hash must equal head, else nothing of the write is
 * stored (EVERIFY). With a key, the writer's thread also checks the
 * head's signature (head_rev, sig) with it, and refuses the batch the same
 * way when it fails: a fleet's many small batches carry a signature each,
 * checked there instead of on the loop. */
#define ODO_SEG_ROOM (4 + ODO_SEG_FIXED) /* a segment record's checksum and header */
typedef struct odo_chain {
  uint8_t *events; /* n events, len bytes, validated by the sender's decoder */
  size_t len, n;
  uint64_t first, num;
  uint8_t prev[ODO_HASH_LEN], head[ODO_HASH_LEN];
  uint8_t last[ODO_HASH_LEN]; /* h(first + n - 1), computed by the check */
  size_t bytes; /* the block's size, counted against the in-flight bound */
  char stream[ODO_MAX_STREAM_ID + 1];
  size_t stream_len;
  EVP_PKEY *key; /* the source's key (a reference the chain holds), or NULL */
  uint64_t head_rev;
  uint8_t sig[ODO_MAX_SIG];
  size_t sig_len;
  int urgent; /* a small (live) batch of a stream with nothing in flight:
               * the writer queues it ahead of the bulk ones */
} odo_chain;
#define ODO_SEG_MIN_EVENTS 2
/* A source's own append of this many events or more is stored as
 * segments (fewer: one record per event, each read back on its own).
 * They are cut after every revision that is a multiple of
 * ODO_SEG_CUT_EVENTS (where the signer puts a head: sync.h's
 * ODO_HEAD_EVENTS) and before their data would pass ODO_SEG_MAX_BYTES,
 * so no signed head ever falls inside one. */
#define ODO_SEG_MIN_OWN 16
#define ODO_SEG_CUT_EVENTS 1000
#define ODO_SEG_MAX_BYTES (1u << 20)
/* Frees a chain and its reference to the key (NULL: nothing). */
void odo_chain_free(odo_chain *c);
/* Computes the chain on any thread (h its own) into c->last and checks
 * that it ends at the signed head; 0 with e set (EVERIFY: not what the
 * source signed; EIO). */
int odo_chain_check(odo_hasher *h, odo_chain *c, odo_err *e);
/* Puts the checked events into b (val the caller's scratch, for a lone
 * event's record): one segment, framed in place; 0 with e set (ENOMEM)
 * before anything is put. */
int odo_chain_put(odo_buf *val, const odo_chain *c, leveldb_writebatch_t *b,
                  odo_err *e);

/* A core writer's word that its write is done: fn runs on the loop thread
 * as the write is collected (after the catalogue took it), ok or e saying
 * why nothing of it was stored. It must not call into the writer. */
typedef struct odo_write_done {
  void (*fn)(struct odo_write_done *d, int ok, const odo_err *e);
} odo_write_done;

/* A writer off the loop thread (the commit queue): settle() waits until
 * every write it has in flight is done and applies their catalogue
 * entries. The store calls it before a transaction of its own touches a
 * stream with writes in flight, so writes to one stream stay in order.
 * submit() queues the open transaction (staged with staging_async set, so
 * it stages after the writes in flight) as one write, with a chain to
 * compute into it (NULL: none; the writer takes and frees it) and done
 * to call; it returns the write's id, which the queue's collect() reports,
 * or 0 with e set (the transaction aborted, done not called). For the
 * core's own writers (received batches, sync_recv.c). */
typedef struct odo_writer {
  void (*settle)(struct odo_writer *w);
  long long (*submit)(struct odo_writer *w, int sync, odo_chain *chain,
                      odo_write_done *done, odo_err *e);
  /* whether any write is queued, being written or not yet collected
   * (loop thread): a write of the loop's own then waits for none */
  int (*busy)(struct odo_writer *w);
  int verifiers; /* threads that check received batches ahead of it */
} odo_writer;

/* The store's LevelDB filter policy (store_filter.c): bloom filters
 * over every key but the log's. */
leveldb_filterpolicy_t *odo_store_filter(void);

typedef struct odo_store {
  leveldb_t *db;
  leveldb_options_t *options;
  leveldb_cache_t *cache;
  leveldb_filterpolicy_t *filter;
  leveldb_readoptions_t *ropts;
  leveldb_readoptions_t *ropts_bulk; /* long forward scans: no cache fill */
  leveldb_writeoptions_t *wsync, *wnosync;
  leveldb_writebatch_t *batch;
  char *path;
  char node_id[ODO_MAX_NODE_ID + 1];
  size_t node_len;
  uint64_t created;
  int sync_default;
  int worker_nice; /* its worker threads' nice value, -1: their creator's */
  odo_hasher hasher;
  odo_stream **buckets;
  size_t nbuckets, nstreams;
  /* counts streams taken out of the map (freed): a pointer to a stream
   * kept since it last moved is still good (the sync engine's
   * subscriptions keep theirs) */
  uint64_t streams_freed;
  uint64_t next_num;
  /* the open transaction */
  int txn_open;
  int txn_failed; /* a record or the touched list could not be allocated */
  odo_cat scratch; /* what odo_txn_touch hands out when it cannot track */
  odo_stream **touched;
  size_t ntouched, captouched;
  /* streams advanced since Lua last asked (store:changes()) */
  odo_stream **changed;
  size_t nchanged, capchanged;
  odo_dependent *dependents; /* released before the store closes */
  odo_buf val;     /* scratch for encoding values */
  /* the node's key, once a sync engine has it: source snapshots of own
   * streams are signed as they are stored, never written unsigned */
  EVP_PKEY *signer;
  odo_writer *writer; /* the commit queue, once one is made */
  int staging_async;  /* the open transaction goes to the writer */
} odo_store;

/* The checked argument at idx; raises if it is not an open store. */
odo_store *odo_store_check(lua_State *L, int idx);

odo_stream *odo_store_find(odo_store *s, const char *id, size_t len);
/* Whether id names a stream this node is the source of. */
int odo_store_own_id(const odo_store *s, const char *id, size_t len);
/* Finds or, when create is set, makes the stream (in the open
 * transaction); NULL with e set when the id is not valid. */
odo_stream *odo_store_stream(odo_store *s, const char *id, size_t len,
                             int create, odo_err *e);

/* Transactions: begin, stage changes, commit (one atomic write) or abort.
 * odo_store_touch makes st part of the transaction and returns its staged
 * entry to modify. */
void odo_txn_begin(odo_store *s);
odo_cat *odo_txn_touch(odo_store *s, odo_stream *st);
int odo_txn_commit(odo_store *s, int sync, odo_err *e);
void odo_txn_abort(odo_store *s);

/* A transaction handed to another thread to write: its batch (with the
 * catalogue records) and the entries it stages, per stream. */
typedef struct odo_detached {
  leveldb_writebatch_t *batch;
  odo_stream **streams;
  odo_cat *cats;
  size_t n;
} odo_detached;
/* Ends the open transaction without writing it: fills d (the caller
 * writes d->batch, then calls odo_txn_settle) and marks its streams in
 * flight, so the next transaction stages after them. 0 with e set (and
 * the transaction aborted) when it cannot. */
int odo_txn_detach(odo_store *s, odo_detached *d, odo_err *e);
/* After a detached batch's write: ok makes its entries the catalogue's
 * (in memory); a failure drops them (and a stream it would have created).
 * Frees d's arrays, not its batch. */
void odo_txn_settle(odo_store *s, odo_detached *d, int ok);
/* The entry a new transaction starts from: staged, in flight, or
 * committed. */
const odo_cat *odo_stream_tip(const odo_stream *st);
/* Waits for the writer when st has writes in flight and the caller's
 * transaction is not one for the writer itself. */
void odo_store_settle(odo_store *s, odo_stream *st);

/* Adds a record built in b (records.h: odo_rec_begin, an encoder) under
 * key to the open transaction; a record not built in full fails the
 * transaction instead. */
int odo_store_put(odo_store *s, const uint8_t *key, size_t klen, odo_buf *b);
void odo_store_del(odo_store *s, const uint8_t *key, size_t klen);
/* leveldb_get of one framed value into out (malloc'd payload, caller
 * frees *raw). 1 found, 0 absent, -1 failure with e set. */
int odo_store_get(odo_store *s, const uint8_t *key, size_t klen,
                  char **raw, const uint8_t **payload, size_t *plen,
                  odo_err *e);
/* Maps a LevelDB error string to a NAME and a message; frees it. */
int odo_store_dberr(odo_err *e, char *dberr, const char *doing);
/* 1 when the iterator met no error; else 0 with LevelDB's text in e. An
 * iterator steps over a block that fails its checksum, so every scan that
 * ends (or finds nothing) must ask. */
int odo_iter_ok(leveldb_iterator_t *it, odo_err *e, const char *doing);

/* Event records. */
int odo_stage_own(odo_store *s, odo_stream *st, odo_event *evs, size_t n,
                  odo_err *e);
int odo_stage_replica(odo_store *s, odo_stream *st, odo_event *evs,
                      size_t n, odo_err *e);
/* Like odo_stage_replica, but computes each event's hash instead of
 * checking a given one (the caller checks the last against a head).
 * packed: the events lie back to back as they travelled, and from
 * ODO_SEG_MIN_EVENTS on are stored as one segment. */
int odo_stage_chain(odo_store *s, odo_stream *st, odo_event *evs, size_t n,
                    int packed, odo_err *e);
/* One group of an append (store:append_many, the commit queue), read
 * from Lua before the transaction opens, so a programmer error raises
 * with nothing staged. */
typedef struct odo_group {
  const char *id;
  size_t len, n;
  odo_event *evs; /* NULL when the group broke a limit (e set) */
  int has_expected;
  uint64_t expected;
  uint64_t last; /* the stream's last revision once staged */
  odo_err e;
} odo_group;
/* Reads the array of {stream=, events=, expected=} at idx; raises on
 * wrong types. Pushes the groups' userdata and a table anchoring their
 * events: both must stay on the stack while the groups are used. */
odo_group *odo_read_groups(lua_State *L, odo_store *s, int idx, size_t *n);
/* Opens a transaction and stages every group; a group that fails its
 * expected revision or a limit is skipped with its e set. */
void odo_stage_groups(odo_store *s, odo_group *gs, size_t n);
/* Pushes an array: per group its new last revision or "NAME: message". */
void odo_push_group_results(lua_State *L, const odo_group *gs, size_t n);
static inline const char *odo_origin_name(int origin) {
  return origin == ODO_ORIGIN_SOURCE ? "source" : "local";
}
/* The decoded snapshot record of one origin: 1 found (*raw to
 * leveldb_free; sr points into it), 0 none, -1 failure with e set. */
int odo_snapshot_rec_read(odo_store *s, odo_stream *st, int origin,
                          char **raw, odo_snap_rec *sr, odo_err *e);
/* The source (or local) snapshot's revision and h(rev); 1 found, 0 none,
 * -1 failure with e set. */
int odo_snapshot_meta(odo_store *s, odo_stream *st, int origin, uint64_t *rev,
                      uint8_t hash[ODO_HASH_LEN], odo_err *e);
/* 1 when a snapshot at rev may be stored for origin (none newer is);
 * else 0 with e set (ESTALE, or why the stored one cannot be read).
 * Reads only: safe on a worker thread. */
int odo_snapshot_check_newer(odo_store *s, odo_stream *st, int origin,
                             uint64_t rev, odo_err *e);
/* A snapshot to store: its bytes, format name and signature. */
typedef struct odo_snapshot_in {
  const char *data, *format, *sig;
  size_t data_len, format_len, sig_len;
} odo_snapshot_in;

/* The key that signs source snapshots of own streams from now on (the
 * store takes a reference); NULL stops signing. */
void odo_store_set_signer(odo_store *s, EVP_PKEY *key);
/* Stores a snapshot at rev (with h(rev) as held) in one write; a source
 * snapshot also sets the catalogue's snapshot revision, and is signed
 * here when it is unsigned, of an own stream, and the store has a signer. */
int odo_snapshot_store(odo_store *s, odo_stream *st, int origin, uint64_t rev,
                       const odo_snapshot_in *in, int sync, odo_err *e);
/* The snapshot record of one origin: 1 found (*raw to leveldb_free; the
 * pointers point into it), 0 none, -1 failure. */
int odo_snapshot_read(odo_store *s, odo_stream *st, int origin, char **raw,
                      uint64_t *rev, odo_snapshot_in *out, odo_err *e);
/* Installs a source snapshot on a replica: stores it and moves the first
 * held revision past it, in one write. */
int odo_snapshot_install(odo_store *s, const char *id, size_t len,
                         uint64_t rev, const uint8_t hash[ODO_HASH_LEN],
                         const odo_snapshot_in *in, odo_err *e);

/* Adds a head record to the open transaction. */
void odo_stage_head(odo_store *s, odo_stream *st, uint64_t rev,
                    const uint8_t hash[ODO_HASH_LEN], const uint8_t *sig,
                    size_t sig_len);
/* The first head at or after rev (or, with last, the newest): 1 found,
 * 0 none, -1 failure. */
int odo_head_read(odo_store *s, odo_stream *st, uint64_t rev, int last,
                  odo_head *h, odo_err *e);

/* Source public keys (SubjectPublicKeyInfo DER) by source id: staged in
 * the open transaction, or put in a write of their own. */
void odo_stage_key(odo_store *s, const char *id, size_t len,
                   const uint8_t *der, size_t n);
int odo_store_key_put(odo_store *s, const char *id, size_t len,
                      const uint8_t *der, size_t n, odo_err *e);
/* 1 found (*raw to leveldb_free; der points into it), 0 none, -1 bad. */
int odo_store_key_get(odo_store *s, const char *id, size_t len, char **raw,
                      const uint8_t **der, size_t *n, odo_err *e);

/* Hash of revision rev as held (event, or h(first-1)); 0 if not held. */
int odo_store_hash_at(odo_store *s, odo_stream *st, uint64_t rev,
                      uint8_t out[ODO_HASH_LEN], odo_err *e);

/* A forward reader over one stream's events from a revision on, used by
 * Lua iterators, the snapshot builder and the sync engine (store_reader.c).
 * Events are stored one record each, or many in a segment (a received
 * batch): the reader walks both, and computes the chain hash of each
 * event it reads out of a segment (from the segment's first), checking
 * the segment's last hash when it reaches it. */
typedef struct odo_reader {
  leveldb_iterator_t *it;
  uint64_t num, next, to;
  char stream_id[ODO_MAX_STREAM_ID + 1];
  int started;
  int no_hashes; /* set by a reader that never looks at ev->hash (a
                  * sender): events out of segments are not hashed */
  /* the segment the iterator stands on, while its events are read */
  uint64_t seg_first, seg_at, seg_last; /* seg_last 0: not in one */
  odo_rd seg;                /* its events not read yet */
  const uint8_t *seg_hash;   /* its last event's hash, as stored */
  uint8_t hash[ODO_HASH_LEN]; /* h(seg_at - 1) while hashing */
  odo_hasher hasher;          /* made when a segment is first hashed */
} odo_reader;

int odo_reader_open(odo_store *s, odo_stream *st, uint64_t from, uint64_t to,
                    odo_reader *r, odo_err *e);
/* The same for a long forward scan read once (serving a catch-up): the
 * blocks it reads do not go into the block cache, so they neither evict
 * what live readers use nor cost a cache entry each. */
int odo_reader_open_bulk(odo_store *s, odo_stream *st, uint64_t from, uint64_t to,
                         odo_reader *r, odo_err *e);
/* 1 and ev filled (pointers valid until the next call), 0 at the end,
 * -1 on corruption with e set. */
int odo_reader_next(odo_reader *r, odo_event *ev, odo_err *e);
/* When the next event to read starts a stored segment that ends by the
 * reader's end and holds at most max bytes of events: 1, with its
 * events as they travel in an EVENTS message (pointers valid until the
 * reader moves) and the reader past them. Else 0, and odo_reader_next
 * reads on as before. */
int odo_reader_segment(odo_reader *r, size_t max, const uint8_t **events,
                       size_t *len, uint32_t *count);
/* When the next event to read is the last of a stored segment: 1, with
 * its hash as stored (its record's checksum checked, no event hashed)
 * and the reader past it. Else 0, and odo_reader_next reads on. */
int odo_reader_segment_end_hash(odo_reader *r, uint8_t out[ODO_HASH_LEN]);
/* After the reader returned event rev (alone, or a segment's last):
 * whether the stored signed head at rev follows it. 1 with h filled, 0
 * not (the reader reads on from where it stands), -1 with e set. */
int odo_reader_head_after(odo_reader *r, uint64_t rev, odo_head *h, odo_err *e);
void odo_reader_close(odo_reader *r);

void odo_store_add_dependent(odo_store *s, odo_dependent *d);
void odo_store_remove_dependent(odo_store *s, odo_dependent *d);

/* Lua methods, put together in one class by store_class.c. */
int odo_store_l_store_open(lua_State *L);
int odo_store_l_store_destroy(lua_State *L);
int odo_store_l_close(lua_State *L);
int odo_store_l_is_open(lua_State *L);
int odo_store_l_info(lua_State *L);
int odo_store_l_streams(lua_State *L);
int odo_store_l_stream(lua_State *L);
int odo_store_l_stream_state(lua_State *L);
int odo_store_l_changes(lua_State *L);
int odo_store_l_sync(lua_State *L);
int odo_store_l_tostring(lua_State *L);
int odo_store_l_append(lua_State *L);
int odo_store_l_append_many(lua_State *L);
int odo_store_l_append_replica(lua_State *L);
int odo_store_l_read(lua_State *L);
int odo_store_l_iter(lua_State *L);
int odo_store_l_verify(lua_State *L);
int odo_store_l_snapshot_put(lua_State *L);
int odo_store_l_snapshot_get(lua_State *L);
int odo_store_l_snapshot_install(lua_State *L);
int odo_store_l_compact(lua_State *L);
int odo_store_l_purge(lua_State *L);
int odo_store_l_pack(lua_State *L);
int odo_store_l_compact_packed(lua_State *L);
int odo_store_l_head_put(lua_State *L);
int odo_store_l_head_find(lua_State *L);
int odo_store_l_peer_put(lua_State *L);
int odo_store_l_peers(lua_State *L);
int odo_store_l_peer_delete(lua_State *L);
int odo_store_l_key_put(lua_State *L);
int odo_store_l_key_get(lua_State *L);
void odo_iter_register(lua_State *L);

#endif
