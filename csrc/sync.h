/* sync.h - the sync engine's state, shared by its files (the messages
 * themselves are sync_msg.h's):
 *
 *   sync_peers.c  bookkeeping: peers, their subscriptions and wants,
 *                 source keys, the output buffer, notes for Lua
 *   sync_serve.c  serving: pump, batches, snapshot chunks, catalogues,
 *                 signing heads
 *   sync_recv.c   receiving: decode, verify, store
 *   sync.c        the Lua class odo.sync over them
 *
 * Calls run one way: sync.c -> sync_recv.c -> sync_serve.c ->
 * sync_peers.c, all over the store, the session and the codec. */
#ifndef ODO_SYNC_H
#define ODO_SYNC_H

#include "session.h"
#include "sign.h"
#include "store.h"
#include "sync_msg.h"

/* A head is signed at every revision that is a multiple of HEAD_EVENTS,
 * after HEAD_BYTES of event data, and at the end of every live batch, so
 * every batch a replica verifies is bounded; always at the end of a
 * stored record (a source's segments are cut at those multiples). */
#define ODO_HEAD_EVENTS ODO_SEG_CUT_EVENTS
#define ODO_HEAD_BYTES (4u << 20)
#define ODO_SNAPSHOT_CHUNK (1u << 20)
/* A catch-up's batch goes on to the last head within this many bytes
 * (the engine's `bulk_batch`): fewer frames and signatures to check. */
#define ODO_BULK_BATCH (512u << 10)
/* Bulk catch-ups stop while a session holds this much queued (the
 * engine's `bulk_queue`; 0: the session's low watermark, 1 MiB). */
#define ODO_BULK_QUEUE 0

enum {
  ODO_REFUSED_UNKNOWN = 1,
  ODO_REFUSED_GONE = 2,
  ODO_REFUSED_TOO_BIG = 3,
  ODO_REFUSED_UNAVAILABLE = 4 /* the server cannot read what it holds */
};

#define ODO_SYNC_CLASS "odo.sync"
/* Parsed events kept between EVENTS frames (larger arrays are freed). */
#define ODO_SYNC_KEEP_EVENTS 65536
/* received batches on their way to the disk from which the loop checks a
 * batch's head signature itself instead of the writer's thread, when the
 * writer has at most one verifier (a machine with no core to spare: with
 * more, the loop, the one thread a catch-up cannot spread, leaves them
 * every signature) */
#define ODO_SYNC_LOOP_VERIFY 64

/* A stream a peer asked us for. */
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
  struct sync_sub *next_sub; /* in the order they came (the pump's) */
  struct sync_sub *prev_sub;
  struct sync_sub *hnext;    /* in its chain of the peer's index */
  /* its stream in the store, found once (good while st_freed equals the
   * store's streams_freed): the pump looks at it on every visit */
  odo_stream *st;
  uint64_t st_freed;
  /* on its peer's ready list: it may have something to send (the pump
   * visits only those; one found with nothing leaves the list until a
   * new head of its stream, or a change to it, wakes it) */
  int ready;
  struct sync_sub *ready_next, *ready_prev;
} sync_sub;

/* A stream this node asked a peer for (so stale batches are dropped);
 * kept in a hash table of chains, as a replica may ask for thousands (the
 * subscriptions a peer asks of us, too). */
#define ODO_SYNC_WANT_BUCKETS 1024
typedef struct sync_want {
  char stream[ODO_MAX_STREAM_ID + 1];
  size_t len;
  struct sync_want *next;
} sync_want;

typedef struct sync_peer {
  odo_session *s;
  int ref; /* registry reference keeping the session alive */
  char id[ODO_NODE_ID_HEX + 1];
  sync_sub *subs, *subs_last; /* changed by odo_sync_add_sub, _remove_sub */
  sync_sub *sub_index[ODO_SYNC_WANT_BUCKETS]; /* chains, by odo_sync_bucket(id) */
  sync_want *wants[ODO_SYNC_WANT_BUCKETS];    /* chains, by odo_sync_bucket(id) */
  /* a snapshot being received */
  odo_buf snap;
  char snap_stream[ODO_MAX_STREAM_ID + 1];
  size_t snap_len;
  uint64_t snap_rev;
  uint32_t snap_total;
  /* a violation of its waits behind its batches on their way to the disk
   * (they may hold an earlier one): nothing more of it is taken */
  int halted;
  struct sync_peer *next;
  /* its subscriptions that may have something to send, in the order the
   * pump serves them (odo_sync_wake_sub, _park_sub) */
  sync_sub *ready, *ready_last;
  size_t nready;
  /* the subscription whose snapshot is going out, when one is (a hint:
   * good while its snap_raw is set) */
  sync_sub *snap_sub;
} sync_peer;

typedef struct src_key {
  char id[ODO_NODE_ID_HEX + 1];
  EVP_PKEY *key;
  struct src_key *next;
} src_key;

/* A received batch on its way to the disk through the store's writer
 * (the commit queue), or what Lua is to hear once it got there: the
 * "events" note, the batch's refusal or failure, or a CAUGHT_UP held
 * back until the stream's writes before it are done. */
typedef struct sync_written {
  odo_write_done done; /* first: the writer calls it */
  struct odo_sync *y;
  const char *kind; /* "events", "caught_up", or NULL: failed (e) */
  int heads;        /* own heads signed (sync_serve.c), not a batch */
  const char *code; /* failed: the violation's code when the loop found it */
  char peer[ODO_NODE_ID_HEX + 1];
  char stream[ODO_MAX_STREAM_ID + 1];
  size_t len;
  uint64_t rev; /* the batch's head, or where CAUGHT_UP said */
  uint32_t count;
  size_t bytes;
  int urgent; /* queued ahead of bulk batches (counted in urgent_inflight) */
  odo_err e;
  struct sync_written *next;
} sync_written;

typedef struct odo_sync {
  odo_store *store;
  sync_peer *peers;
  src_key *keys;
  int verify;         /* check signatures on what arrives */
  int replica_sync;   /* fsync replica writes */
  size_t max_batch;   /* bytes of one EVENTS frame we build */
  size_t bulk_batch;  /* a catch-up's batch ends at its last head within this */
  odo_buf out;        /* frames being built */
  odo_buf section;    /* a list section being built */
  odo_event *evs;     /* scratch for decoding a batch */
  size_t cap_evs;
  uint64_t events_sent;  /* events in the batches sent to every peer */
  uint64_t batches_sent; /* those batches */
  /* received batches handed to the store's writer (sync_recv.c) */
  size_t writes, write_bytes;   /* in flight, and the memory they hold */
  sync_written *done, *done_tail; /* done, for Lua (sync:written) */
  /* CAUGHT_UPs and refusals waiting for their stream's writes, by
   * odo_sync_bucket(stream), each chain in arrival order (sync_recv.c hold) */
  sync_written *held[ODO_SYNC_WANT_BUCKETS];
  uint64_t pump_visits; /* subscriptions the pump looked at */
  /* bulk goes out while a session holds less than this queued (0, or
   * more than its low watermark: the low watermark) */
  size_t bulk_queue;
} odo_sync;

/* ---- sync_peers.c ---- */
sync_peer *odo_sync_find_peer(odo_sync *y, const odo_session *s);
void odo_sync_sub_free(sync_sub *sub);
/* Frees p (and its registry reference when L is given). */
void odo_sync_peer_free(lua_State *L, sync_peer *p);
/* The link in its chain that holds stream id, or the empty link at the
 * end of the chain where it belongs (set it to add one). */
/* A stream id's bucket in the engine's tables of ODO_SYNC_WANT_BUCKETS
 * chains (a peer's wants and subscriptions, the held notes). */
size_t odo_sync_bucket(const char *id, size_t len);
sync_want **odo_sync_find_want(sync_peer *p, const char *id, size_t len);
/* The subscription of p to stream id, or NULL; found, it is put on the
 * pump's ready list (the caller is about to change or end it). */
sync_sub *odo_sync_find_sub(sync_peer *p, const char *id, size_t len);
/* A new subscription of p to stream id (not held yet), last in the
 * pump's order; NULL when out of memory. */
sync_sub *odo_sync_add_sub(sync_peer *p, const char *id, size_t len);
/* Ends and frees subscription sub of p. */
void odo_sync_remove_sub(sync_peer *p, sync_sub *sub);
/* Puts sub last on p's ready list (nothing when it is on it). */
void odo_sync_wake_sub(sync_peer *p, sync_sub *sub);
/* Puts sub first on p's ready list (nothing when it is on it). */
void odo_sync_wake_sub_first(sync_peer *p, sync_sub *sub);
/* Takes sub off p's ready list (nothing when it is not on it). */
void odo_sync_park_sub(sync_peer *p, sync_sub *sub);
/* Wakes every peer's subscription to stream id: it has a new head, a
 * new first revision or a snapshot. */
void odo_sync_wake_stream(odo_sync *y, const char *id, size_t len);
/* The public key of a stream's source: ours, cached, or from the store. */
EVP_PKEY *odo_sync_source_key(odo_sync *y, const char *src, size_t len,
                              odo_err *e);
/* The length of the source id at the start of a stream id. */
size_t odo_sync_source_len(const char *id, size_t len);
/* A signed head of stream id (st: its stream, or NULL when it left the
 * store) was written: the stream's newest-head revision follows, and the
 * peers' subscriptions to it are woken (they may have a batch to send). */
void odo_sync_head_stored(odo_sync *y, odo_stream *st, const char *id, size_t len,
                          uint64_t rev);
/* Appends w to the writes done, for Lua's next sync:written. */
void odo_sync_done_push(odo_sync *y, sync_written *w);
/* Empties y->out: every builder starts with it, so a frame left half
 * built by an argument error is never sent. */
void odo_sync_out_reset(odo_sync *y);
/* Sends the `frames` frames built in y->out, or nothing when the buffer
 * could not grow (a truncated frame would end the session). */
int odo_sync_send_out(odo_sync *y, sync_peer *p, unsigned frames);
/* y->section holds a list being built (sync_msg.h): empties it, and
 * hands it on as a list of count items (a section that could not grow
 * fails y->out, so nothing half built is sent). */
void odo_sync_section_reset(odo_sync *y);
void odo_sync_section_list(odo_sync *y, uint32_t count, odo_msg_list *l);
/* Notes for Lua: a table {event = kind, stream = ...} appended to the
 * array at ev when note_end is called (fields go between). */
void odo_sync_note(lua_State *L, const char *kind, const char *stream,
                   size_t len);
void odo_sync_note_end(lua_State *L, int ev);

/* ---- sync_serve.c ---- */
void odo_sync_send_refused(odo_sync *y, sync_peer *p, const char *id,
                           size_t len, uint16_t code, const char *why);
/* Sends what subscriptions are owed, at most `budget` frames, looking
 * only at those on their peer's ready list: first one frame at a time to
 * every subscription owing at most one batch (live traffic, while the
 * session is writable), then bulk catch-ups (while the session holds
 * less than bulk_queue, at most its low watermark),
 * those for at most max_ns nanoseconds (0: no limit; none with
 * tails_only); notes serving errors at ev. Returns whether work is left (a session that waits to
 * drain reports it through `written`). */
int odo_sync_pump(lua_State *L, odo_sync *y, int64_t budget, uint64_t max_ns,
                  int tails_only, int ev);
/* Builds the CATALOGUE frames of list[0..n) into y->out; each replica's
 * hop count is the integer at its id in the table at hops_idx (none, or
 * no table: no path), and the streams true in the table at yours_idx
 * are marked as followed from the receiver (0: no table).
 * Returns the number of frames. */
unsigned odo_sync_catalogue(lua_State *L, odo_sync *y, odo_stream **list,
                            size_t n, int full, int hops_idx, int yours_idx);
/* Signs heads of an own stream's unsigned events, walking at most
 * `budget` events; heads signed, or -1 with e set. */
int odo_sync_sign_stream(odo_sync *y, odo_stream *st, uint64_t budget,
                         int *more, odo_err *e);

/* ---- sync_recv.c ---- */
/* Handles one received message; notes what happened at ev. */
void odo_sync_handle(lua_State *L, int ev, odo_sync *y, sync_peer *p,
                     int type, const uint8_t *m, size_t n);
/* Notes at ev what the writer finished since the last call (the "events"
 * of written batches, a refused batch's violation, held CAUGHT_UPs). */
void odo_sync_written(lua_State *L, int ev, odo_sync *y);
/* Waits for the batches in flight and frees every record (closing). */
void odo_sync_written_release(odo_sync *y);

void odo_sync_open(lua_State *L);

#endif
