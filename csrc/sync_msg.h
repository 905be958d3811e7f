/* sync_msg.h - the sync protocol's seven messages (docs/PROTOCOL.md,
 * "Sync"), decoded into structs and encoded from them. A pure codec: no
 * store, no session, no Lua; every length is checked against the bytes
 * there are, and a decoder accepts a message only whole (no trailing
 * bytes), so encoding what it decoded gives the same bytes back (the
 * fuzzer checks that).
 *
 *   str8 = u8 len | bytes; str16 = u16be len | bytes; integers big-endian
 *   CATALOGUE   0x10  u8 flags (1: full) | u16 nkeys | str16 spki * nkeys
 *                     | u32 count | entry * count
 *               entry = str8 stream | u64 first | u64 last | u64 snapshot
 *                       | u64 fresh (newest signed head the sender holds)
 *                       | u8 flags (1: sender is the source, 2: sender's
 *                       upstream for it is the receiver) | u8 hops (to the
 *                       source; 255: no path) | u16 key index (0xffff: none)
 *   SUBSCRIBE   0x11  u8 flags (1: live, 2: snapshot first)
 *                     | u32 count | (str8 stream | u64 from) * count
 *   UNSUBSCRIBE 0x12  u32 count | str8 stream * count
 *   SNAPSHOT    0x13  str8 stream | u64 rev | hash[32] | str8 format | str16 sig
 *                     | u32 total | u32 offset | bytes
 *   EVENTS      0x14  str8 stream | u64 first | u32 count | event * count
 *                     | u64 head_rev | hash[32] | str16 sig
 *               event = u64 ts | str8 type | u32 len | data
 *   CAUGHT_UP   0x15  str8 stream | u64 rev
 *   REFUSED     0x16  str8 stream | u16 code | str16 reason
 *
 * Messages with a list (catalogue keys and entries, subscribe entries,
 * unsubscribe ids, events) carry it as one section of bytes: a decoder
 * checks every item of it and hands the section on; odo_msg_*_next reads
 * the items one at a time (from an odo_rd over the section), and the
 * odo_msg_*_put encoders build a section item by item. So neither side
 * allocates per item. Decoders fill pointers into the message.
 */
#ifndef ODO_SYNC_MSG_H
#define ODO_SYNC_MSG_H

#include "event.h"

enum {
  ODO_MSG_CATALOGUE = 0x10,
  ODO_MSG_SUBSCRIBE = 0x11,
  ODO_MSG_UNSUBSCRIBE = 0x12,
  ODO_MSG_SNAPSHOT = 0x13,
  ODO_MSG_EVENTS = 0x14,
  ODO_MSG_CAUGHT_UP = 0x15,
  ODO_MSG_REFUSED = 0x16,
};

/* Entries in one CATALOGUE or SUBSCRIBE frame, at most. */
#define ODO_MSG_FRAME_ENTRIES 4096
#define ODO_MAX_SNAPSHOT (1u << 30)
#define ODO_MSG_NO_KEY 0xffff

/* A section: the bytes of `count` items of a list. */
typedef struct odo_msg_list {
  const uint8_t *p;
  size_t len;
  uint32_t count;
} odo_msg_list;

typedef struct odo_msg_cat_entry {
  const char *id;
  size_t id_len;
  uint64_t first, last, snap, fresh;
  uint8_t flags, hops;
  uint16_t key;
} odo_msg_cat_entry;

/* Catalogue entry flags, and the hop count of a sender with no path. */
#define ODO_CAT_SOURCE 1
#define ODO_CAT_FOLLOWS_YOU 2
#define ODO_CAT_NO_PATH 255

typedef struct odo_msg_catalogue {
  uint8_t flags;
  odo_msg_list keys;    /* str16 DER each */
  odo_msg_list entries; /* odo_msg_cat_entry each */
} odo_msg_catalogue;

typedef struct odo_msg_sub_entry {
  const char *id;
  size_t id_len;
  uint64_t from;
} odo_msg_sub_entry;

typedef struct odo_msg_subscribe {
  uint8_t flags;
  odo_msg_list entries; /* odo_msg_sub_entry each */
} odo_msg_subscribe;

typedef struct odo_msg_unsubscribe {
  odo_msg_list ids; /* str8 each */
} odo_msg_unsubscribe;

typedef struct odo_msg_snapshot {
  const char *id, *format, *sig;
  size_t id_len, format_len, sig_len;
  uint64_t rev;
  const uint8_t *hash;
  uint32_t total, offset;
  const uint8_t *chunk;
  size_t chunk_len;
} odo_msg_snapshot;

typedef struct odo_msg_events {
  const char *id;
  size_t id_len;
  uint64_t first;
  odo_msg_list events; /* odo_event each, without revisions */
  uint64_t head_rev;
  const uint8_t *head_hash;
  const uint8_t *sig;
  size_t sig_len;
} odo_msg_events;

typedef struct odo_msg_caught_up {
  const char *id;
  size_t id_len;
  uint64_t rev;
} odo_msg_caught_up;

typedef struct odo_msg_refused {
  const char *id, *reason;
  size_t id_len, reason_len;
  uint16_t code;
} odo_msg_refused;

/* Decoders: 1 and m filled, or 0 with e set (EPROTO, and the message a
 * peer that sent it is told). A failed EVENTS decode leaves m->id set
 * when the stream id could be read (id_len 0 when not): the receiver
 * drops a malformed batch of a stream it no longer asks for. */
int odo_msg_catalogue_decode(const uint8_t *p, size_t n, odo_msg_catalogue *m,
                             odo_err *e);
int odo_msg_subscribe_decode(const uint8_t *p, size_t n, odo_msg_subscribe *m,
                             odo_err *e);
int odo_msg_unsubscribe_decode(const uint8_t *p, size_t n,
                               odo_msg_unsubscribe *m, odo_err *e);
int odo_msg_snapshot_decode(const uint8_t *p, size_t n, odo_msg_snapshot *m,
                            odo_err *e);
int odo_msg_events_decode(const uint8_t *p, size_t n, odo_msg_events *m,
                          odo_err *e);
int odo_msg_caught_up_decode(const uint8_t *p, size_t n, odo_msg_caught_up *m,
                             odo_err *e);
int odo_msg_refused_decode(const uint8_t *p, size_t n, odo_msg_refused *m,
                           odo_err *e);

/* The items of a decoded (or built) section, one at a time: odo_rd_init
 * r over the section, then call count times. 0 when malformed (never on
 * a section a decoder accepted). */
int odo_msg_key_next(odo_rd *r, const uint8_t **der, size_t *len);
int odo_msg_cat_entry_next(odo_rd *r, odo_msg_cat_entry *c);
int odo_msg_sub_entry_next(odo_rd *r, odo_msg_sub_entry *s);
int odo_msg_id_next(odo_rd *r, const char **id, size_t *len);
/* An event of an EVENTS section (ev->rev is left alone). */
int odo_msg_event_next(odo_rd *r, odo_event *ev);

/* Item encoders, appending to a section being built (its count is the
 * caller's). 0 when b failed. */
int odo_msg_key_put(odo_buf *b, const uint8_t *der, size_t len);
int odo_msg_cat_entry_put(odo_buf *b, const odo_msg_cat_entry *c);
int odo_msg_sub_entry_put(odo_buf *b, const odo_msg_sub_entry *s);
int odo_msg_id_put(odo_buf *b, const char *id, size_t len);
/* (An event of an EVENTS section is odo_event_encode(b, ev, 0).) */

/* Message encoders: append the payload (no frame header) to b. 0 when b
 * failed: a field too long for its length fails it. */
int odo_msg_catalogue_encode(odo_buf *b, const odo_msg_catalogue *m);
int odo_msg_subscribe_encode(odo_buf *b, const odo_msg_subscribe *m);
int odo_msg_unsubscribe_encode(odo_buf *b, const odo_msg_unsubscribe *m);
int odo_msg_snapshot_encode(odo_buf *b, const odo_msg_snapshot *m);
int odo_msg_events_encode(odo_buf *b, const odo_msg_events *m);
int odo_msg_caught_up_encode(odo_buf *b, const odo_msg_caught_up *m);
int odo_msg_refused_encode(odo_buf *b, const odo_msg_refused *m);

/* An EVENTS message built in place, its events appended one by one
 * (odo_event_encode(b, ev, 0)) with no section of their own, so a large
 * batch is copied once: _open writes the stream id and first revision and
 * returns where the count goes; _close writes the count and the head.
 * The bytes are odo_msg_events_encode's. */
size_t odo_msg_events_open(odo_buf *b, const char *id, size_t id_len,
                           uint64_t first);
int odo_msg_events_close(odo_buf *b, size_t count_at, uint32_t count,
                         uint64_t head_rev, const uint8_t *head_hash,
                         const uint8_t *sig, size_t sig_len);

/* The message's name ("CATALOGUE"), or NULL for a type that is none. */
const char *odo_msg_name(int type);

#endif
