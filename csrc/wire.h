/* wire.h - frames and the session messages, byte by byte
 * (docs/PROTOCOL.md). Every decoder takes a length and checks it before
 * reading; nothing allocates what a peer claims.
 *
 *   frame   = u32be len | u8 type | payload      (len = 1 + payload bytes)
 *   HELLO   = u16be version | id[32] | u16be listen_port | u64be features
 *             | u64be instance
 *   PING    = u64be nonce
 *   PONG    = u64be nonce
 *   BYE     = u16be code | reason (UTF-8, at most 1024 bytes)
 */
#ifndef ODO_WIRE_H
#define ODO_WIRE_H

#include "odo.h"

#define ODO_PROTOCOL_VERSION 2
#define ODO_FRAME_HEADER 5
#define ODO_DEFAULT_MAX_FRAME (16u << 20)
#define ODO_MIN_MAX_FRAME 1024
#define ODO_MAX_REASON 1024

/* Message types. 0x10 and up belong to sync (sync.h). */
enum {
  ODO_MSG_HELLO = 0x01,
  ODO_MSG_PING = 0x02,
  ODO_MSG_PONG = 0x03,
  ODO_MSG_BYE = 0x04,
};

/* Feature bits announced in HELLO. */
#define ODO_FEATURE_SYNC 0x1u

/* BYE codes. */
enum {
  ODO_BYE_NORMAL = 0,     /* closing, nothing wrong */
  ODO_BYE_PROTOCOL = 1,   /* a malformed, oversize or unexpected frame */
  ODO_BYE_VERSION = 2,    /* protocol versions differ */
  ODO_BYE_IDENTITY = 3,   /* HELLO's id is not the certificate's */
  ODO_BYE_DUPLICATE = 4,  /* already connected to this peer */
  ODO_BYE_SELF = 5,       /* connected to ourselves */
  ODO_BYE_TIMEOUT = 6,    /* introductions or heartbeat timed out */
  ODO_BYE_SHUTDOWN = 7,   /* the node is stopping */
  ODO_BYE_VERIFY = 8,     /* received data failed verification */
  ODO_BYE_FULL = 9,       /* too many peers */
  ODO_BYE_SHARED_KEY = 10 /* another node uses this node's key */
};

typedef struct odo_hello {
  uint16_t version, port;
  uint8_t id[32];
  uint64_t features, instance;
} odo_hello;

#define ODO_HELLO_LEN (2 + 32 + 2 + 8 + 8)

/* Looks at the front of a byte buffer: 1 and the frame's parts when a
 * whole frame is there, 0 when more bytes are needed, -1 with a reason
 * when the frame is invalid (length 0, or over max_frame). */
int odo_frame_next(const uint8_t *p, size_t n, size_t max_frame,
                   uint8_t *type, const uint8_t **payload, size_t *plen,
                   size_t *consumed, odo_err *e);

/* Appends a whole frame; 0 on allocation failure. */
int odo_frame_put(odo_buf *b, uint8_t type, const void *payload, size_t plen);
/* Starts a frame whose payload is appended next; odo_frame_end fills in
 * its length. */
size_t odo_frame_begin(odo_buf *b, uint8_t type);
void odo_frame_end(odo_buf *b, size_t start);

int odo_hello_put(odo_buf *b, const odo_hello *h);
int odo_hello_decode(const uint8_t *p, size_t n, odo_hello *h);
int odo_u64_decode(const uint8_t *p, size_t n, uint64_t *v);
int odo_bye_put(odo_buf *b, uint16_t code, const char *reason, size_t len);
int odo_bye_decode(const uint8_t *p, size_t n, uint16_t *code,
                   const char **reason, size_t *rlen);

/* The name of a BYE code ("protocol", "duplicate", ...). */
const char *odo_bye_name(uint16_t code);

void odo_wire_open(lua_State *L);

#endif
