/* event.h - an event as the core sees it, its canonical encoding and the
 * chain hash that links it to the events before it.
 *
 *   encoded event = u64be rev | u64be ts_ms | u8 type_len | type
 *                   | u32be data_len | data
 *   h(0) = SHA-256("odo-journal chain v1" 0x00 stream_id)
 *   h(n) = SHA-256(h(n-1) | encoded event n)
 *
 * The same encoding is what the wire protocol carries, so a replica
 * recomputes h(n) from exactly the bytes it received (docs/PROTOCOL.md).
 */
#ifndef ODO_EVENT_H
#define ODO_EVENT_H

#include <openssl/evp.h>

#include "odo.h"

typedef struct odo_event {
  uint64_t rev, ts;
  const char *type;
  size_t type_len;
  const char *data;
  size_t data_len;
  uint8_t hash[ODO_HASH_LEN];
} odo_event;

/* A reusable SHA-256 context (one per store or session, never global). */
typedef struct odo_hasher {
  EVP_MD *md;
  EVP_MD_CTX *ctx;
} odo_hasher;

/* Returns 0 with an OpenSSL error queued on failure. */
int odo_hasher_init(odo_hasher *h);
void odo_hasher_free(odo_hasher *h);

/* h(0) for a stream. */
int odo_chain_genesis(odo_hasher *h, const char *stream_id, size_t len,
                      uint8_t out[ODO_HASH_LEN]);
/* h(n) from h(n-1) and event n (its rev, ts, type and data). */
int odo_chain_next(odo_hasher *h, const uint8_t prev[ODO_HASH_LEN],
                   const odo_event *ev, uint8_t out[ODO_HASH_LEN]);
/* Plain SHA-256 of one buffer. */
int odo_sha256(odo_hasher *h, const void *p, size_t n,
               uint8_t out[ODO_HASH_LEN]);

/* Size of the header that precedes type and data in the encoding. */
#define ODO_EVENT_FIXED (8 + 8 + 1 + 4)

/* Appends the canonical encoding of ev to b; without with_rev it starts
 * at ts (as events travel in an EVENTS message, after its first
 * revision). The one place this layout is written (chain hashes hash the
 * same pieces). 0 when b failed (a type over 255 bytes fails it). */
int odo_event_encode(odo_buf *b, const odo_event *ev, int with_rev);
/* Reads what odo_event_encode wrote (with or without the revision; without,
 * ev->rev is left alone): type and data point into r's bytes. 0 when r
 * failed. The limits on type and data are the caller's to check. */
int odo_event_decode(odo_rd *r, odo_event *ev, int with_rev);

/* Pushes {rev=, ts=, type=, data=, hash=} (hash as 32 raw bytes when
 * with_hash is true) onto the Lua stack. */
void odo_push_event(lua_State *L, const odo_event *ev, int with_hash);

/* Reads type, data and ts from the event table at idx (ts defaults to
 * def_ts). Raises on wrong types; for an event that breaks a limit (a
 * runtime failure, not misuse) returns 0 with e set, else 1. */
int odo_check_event(lua_State *L, int idx, odo_event *ev, uint64_t def_ts,
                    odo_err *e);

#endif
