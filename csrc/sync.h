/* sync.h - the sync protocol's messages (docs/PROTOCOL.md, "Sync"):
 *
 *   str8 = u8 len | bytes; str16 = u16be len | bytes; integers big-endian
 *   CATALOGUE   0x10  u8 flags (1: full) | u16 nkeys | str16 spki * nkeys
 *                     | u32 count | entry * count
 *               entry = str8 stream | u64 first | u64 last | u64 snapshot
 *                       | u8 flags (1: sender is the source, 2: sender's
 *                       upstream is the source) | u16 key index (0xffff: none)
 *   SUBSCRIBE   0x11  u8 flags (1: live) | u32 count | (str8 stream | u64 from) * count
 *   UNSUBSCRIBE 0x12  u32 count | str8 stream * count
 *   SNAPSHOT    0x13  str8 stream | u64 rev | hash[32] | str8 format | str16 sig
 *                     | u32 total | u32 offset | bytes
 *   EVENTS      0x14  str8 stream | u64 first | u32 count | event * count
 *                     | u64 head_rev | hash[32] | str16 sig
 *               event = u64 ts | str8 type | u32 len | data
 *   CAUGHT_UP   0x15  str8 stream | u64 rev
 *   REFUSED     0x16  str8 stream | u16 code | str16 reason
 */
#ifndef ODO_SYNC_H
#define ODO_SYNC_H

#include "session.h"
#include "sign.h"
#include "store.h"

enum {
  ODO_MSG_CATALOGUE = 0x10,
  ODO_MSG_SUBSCRIBE = 0x11,
  ODO_MSG_UNSUBSCRIBE = 0x12,
  ODO_MSG_SNAPSHOT = 0x13,
  ODO_MSG_EVENTS = 0x14,
  ODO_MSG_CAUGHT_UP = 0x15,
  ODO_MSG_REFUSED = 0x16,
};

/* A head is signed at least every HEAD_EVENTS revisions and HEAD_BYTES of
 * event data, and at the end of every live batch, so every batch a
 * replica verifies is bounded. */
#define ODO_HEAD_EVENTS 1000
#define ODO_HEAD_BYTES (4u << 20)
#define ODO_SNAPSHOT_CHUNK (1u << 20)
#define ODO_MAX_SNAPSHOT (1u << 30)

enum {
  ODO_REFUSED_UNKNOWN = 1,
  ODO_REFUSED_GONE = 2,
  ODO_REFUSED_TOO_BIG = 3,
  ODO_REFUSED_UNAVAILABLE = 4 /* the server cannot read what it holds */
};

void odo_sync_open(lua_State *L);

#endif
