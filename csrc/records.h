/* records.h - the store's on-disk records (docs/STORAGE.md): their keys,
 * their framing, and one encoder and one decoder for each kind. The store
 * (store*.c) and the snapshot worker (snapshot.c) write records only
 * through these, so each layout is written down once, here and in
 * docs/STORAGE.md.
 *
 * Every value is framed: u32be CRC-32C(key | payload) | payload. A record
 * is built in an odo_buf: odo_rec_begin, then one encoder (which appends
 * the payload), then odo_rec_seal with the key it goes under. A decoder
 * takes the payload odo_rec_open returned, checks every length against
 * what is there, and returns 0 for anything malformed; the pointers it
 * fills point into the payload.
 *
 *   catalogue  u8 version (1) | u64be num | u64be first | u64be snap
 *              | u64be purged | base[32]
 *   event      hash[32] | u64be ts | u8 type_len | type | data
 *   head       hash[32] | u16be sig_len | sig
 *   segment    u8 version (1) | u32be count | prev[32] | last[32]
 *              | (u64be ts | str8 type | u32be data_len | data) * count
 *   snapshot   u64be rev | hash[32] | u8 format_len | format
 *              | u16be sig_len | sig | data
 *   peer       u16be port | u64be last_seen_ms | u8 host_len | host
 *              | u16be reason_len | reason
 *
 * Pure functions of their arguments: safe on a worker thread. */
#ifndef ODO_RECORDS_H
#define ODO_RECORDS_H

#include "event.h"

/* Key tags. The log (events, and each signed head right after its event)
 * has the highest prefix: appends then add keys past every other key, so
 * LevelDB's tables never overlap and it moves them down without
 * rewriting them. */
#define ODO_K_CAT 'c'
#define ODO_K_KEY 'k'
#define ODO_K_META 'm'
#define ODO_K_PEER 'p'
#define ODO_K_SNAP 's'
#define ODO_K_EVENT 'z'
#define ODO_NUMKEY_LEN 17  /* tag, u64be stream number, u64be revision */
#define ODO_HEADKEY_LEN 18 /* an event's key, then 0x01: its signed head */
#define ODO_SEGKEY_LEN 18  /* its last event's key, then 0x00: a segment */
#define ODO_SEG_TAG 0
#define ODO_HEAD_TAG 1

/* What a key of the log is, for stream num: a single event, a segment
 * (a run of events stored as one record, keyed by its last revision), a
 * signed head, or not the stream's (ODO_LOG_OTHER). *rev is the
 * revision in the key. */
enum { ODO_LOG_OTHER, ODO_LOG_EVENT, ODO_LOG_SEGMENT, ODO_LOG_HEAD };
int odo_logkey_kind(const uint8_t *k, size_t klen, uint64_t num, uint64_t *rev);

void odo_numkey(uint8_t key[ODO_NUMKEY_LEN], char tag, uint64_t num,
                uint64_t rev);
void odo_headkey(uint8_t key[ODO_HEADKEY_LEN], uint64_t num, uint64_t rev);
void odo_segkey(uint8_t key[ODO_SEGKEY_LEN], uint64_t num, uint64_t last);

/* ---- framing ---- */

/* Empties b (and its failure flag) and reserves the checksum's 4 bytes. */
void odo_rec_begin(odo_buf *b);
/* Fills in the checksum of the record built in b for key; 0 when b
 * failed (a record not built in full must not be written). */
int odo_rec_seal(odo_buf *b, const uint8_t *key, size_t klen);
/* The payload of a value read under key, or NULL when its checksum
 * does not match. */
const uint8_t *odo_rec_open(const uint8_t *key, size_t klen, const char *val,
                            size_t vlen, size_t *plen);

/* ---- the records ---- */

#define ODO_CAT_VERSION 1
typedef struct odo_cat_rec {
  uint64_t num, first, snap, purged;
  uint8_t base[ODO_HASH_LEN];
} odo_cat_rec;
int odo_rec_cat_encode(odo_buf *b, const odo_cat_rec *c);
int odo_rec_cat_decode(const uint8_t *p, size_t n, odo_cat_rec *c);

/* The event's hash, ts, type and data; its revision is in the key. */
int odo_rec_event_encode(odo_buf *b, const odo_event *ev);
/* Opens and decodes a whole event value read under its key (rev from the
 * key); 0 when the checksum or the layout is wrong. */
int odo_rec_event_decode(const uint8_t *key, const char *val, size_t vlen,
                         odo_event *ev);

/* A segment: count events ending at the revision in its key, stored as
 * they travel in an EVENTS message (docs/PROTOCOL.md), with the chain
 * hash before the first (prev) and of the last (last). A replica writes
 * a received batch as one. */
#define ODO_SEG_VERSION 1
#define ODO_SEG_FIXED (1 + 4 + 2 * ODO_HASH_LEN)
typedef struct odo_seg_rec {
  uint32_t count;
  const uint8_t *prev, *last;
  const uint8_t *events; /* count events, len bytes */
  size_t len;
} odo_seg_rec;
int odo_rec_segment_encode(odo_buf *b, const odo_seg_rec *r);
/* The same, its events added by the caller (each as odo_event_encode
 * without its revision writes it) between begin and end, which fills in
 * their count and the last one's hash. */
int odo_rec_segment_begin(odo_buf *b, const uint8_t prev[ODO_HASH_LEN]);
void odo_rec_segment_end(odo_buf *b, uint32_t count, const uint8_t last[ODO_HASH_LEN]);
/* Frames a segment whose events are already in memory: writes its
 * checksum and header into the 4 + ODO_SEG_FIXED bytes right before
 * r->events (which the caller owns) for key; the record is those bytes
 * and the events. */
void odo_rec_segment_frame(const odo_seg_rec *r, const uint8_t *key, size_t klen);
/* Checks the framing and the header (not each event: the reader decodes
 * them as it goes, each bounds-checked). */
int odo_rec_segment_decode(const uint8_t *p, size_t n, odo_seg_rec *r);

/* A signed head. */
typedef struct odo_head {
  uint64_t rev;
  uint8_t hash[ODO_HASH_LEN];
  uint8_t sig[ODO_MAX_SIG];
  size_t sig_len;
} odo_head;
int odo_rec_head_encode(odo_buf *b, const uint8_t hash[ODO_HASH_LEN],
                        const uint8_t *sig, size_t sig_len);
/* Fills h's hash and signature (not its revision, which is in the key). */
int odo_rec_head_decode(const uint8_t *p, size_t n, odo_head *h);

typedef struct odo_snap_rec {
  uint64_t rev;
  const uint8_t *hash; /* h(rev) */
  const char *format, *sig, *data;
  size_t format_len, sig_len, data_len;
} odo_snap_rec;
int odo_rec_snapshot_encode(odo_buf *b, const odo_snap_rec *r);
int odo_rec_snapshot_decode(const uint8_t *p, size_t n, odo_snap_rec *r);

typedef struct odo_peer_rec {
  uint16_t port;
  uint64_t last_seen;
  const char *host, *reason;
  size_t host_len, reason_len;
} odo_peer_rec;
int odo_rec_peer_encode(odo_buf *b, const odo_peer_rec *r);
int odo_rec_peer_decode(const uint8_t *p, size_t n, odo_peer_rec *r);

#endif
