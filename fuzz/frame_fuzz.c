/* frame_fuzz.c - libFuzzer target for the frame reader and the session
 * message decoders (csrc/wire.c).
 *
 * Input: u32be max_frame (clamped to [1024, 2^24]) | bytes. The bytes are
 * walked frame by frame with odo_frame_next, as a session's receive buffer
 * is, until it asks for more or refuses a frame. Each frame's payload goes
 * through the decoder of its type, and every HELLO, PING, PONG and BYE that
 * decodes must encode back to exactly the frame it came from. Any broken
 * promise of wire.h aborts: a bug found is a crash.
 */
#include <stdio.h>
#include <stdlib.h>

#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_FRAME_LO ((size_t)ODO_MIN_MAX_FRAME)
#define MAX_FRAME_HI ((size_t)1 << 24)

static void fail(const char *what, size_t off) {
  fprintf(stderr, "frame_fuzz: %s (frame at input offset %zu)\n", what, off);
  abort();
}

/* The frame at p (n bytes of whole frame) must be what `b` holds. */
static void same_bytes(odo_buf *b, const uint8_t *p, size_t n,
                       const char *kind, size_t off) {
  char msg[96];
  if (b->len != n || memcmp(b->p, p, n) != 0) {
    snprintf(msg, sizeof msg, "%s re-encodes to %zu different bytes", kind,
             b->len);
    fail(msg, off);
  }
  b->len = 0;
}

static void decoders(const uint8_t *frame, size_t flen, uint8_t type,
                     const uint8_t *payload, size_t plen, odo_buf *b,
                     size_t off) {
  odo_hello h;
  uint64_t v;
  uint16_t code;
  const char *reason = NULL;
  size_t rlen = 0;
  int hok = odo_hello_decode(payload, plen, &h);
  int uok = odo_u64_decode(payload, plen, &v);
  int bok = odo_bye_decode(payload, plen, &code, &reason, &rlen);

  /* every decoder accepts exactly the sizes wire.h gives */
  if (hok != (plen == ODO_HELLO_LEN)) fail("HELLO decoder and size disagree", off);
  if (uok != (plen == 8)) fail("u64 decoder and size disagree", off);
  if (bok != (plen >= 2 && plen - 2 <= ODO_MAX_REASON))
    fail("BYE decoder and size disagree", off);
  if (bok && (reason != (const char *)payload + 2 || rlen != plen - 2))
    fail("BYE reason is not the rest of the payload", off);

  switch (type) {
  case ODO_MSG_HELLO:
    if (!hok) return;
    if (!odo_hello_put(b, &h)) fail("odo_hello_put failed", off);
    same_bytes(b, frame, flen, "HELLO", off);
    break;
  case ODO_MSG_PING:
  case ODO_MSG_PONG: {
    uint8_t n[8];
    if (!uok) return;
    odo_put_be64(n, v);
    if (!odo_frame_put(b, type, n, sizeof n)) fail("odo_frame_put failed", off);
    same_bytes(b, frame, flen, type == ODO_MSG_PING ? "PING" : "PONG", off);
    break;
  }
  case ODO_MSG_BYE:
    if (!bok) return;
    if (!odo_bye_put(b, code, reason, rlen)) fail("odo_bye_put failed", off);
    same_bytes(b, frame, flen, "BYE", off);
    break;
  default:
    /* any other frame is carried as it is */
    if (!odo_frame_put(b, type, payload, plen)) fail("odo_frame_put failed", off);
    same_bytes(b, frame, flen, "a frame", off);
    break;
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  size_t max_frame, off = 4;
  odo_buf b;
  if (size < 4) return 0;
  max_frame = odo_get_be32(data);
  if (max_frame < MAX_FRAME_LO) max_frame = MAX_FRAME_LO;
  if (max_frame > MAX_FRAME_HI) max_frame = MAX_FRAME_HI;
  odo_buf_init(&b);
  for (;;) {
    const uint8_t *p = data + off, *payload = NULL;
    size_t n = size - off, plen = 0, used = 0, k;
    uint8_t type = 0;
    odo_err e = {0};
    int rc = odo_frame_next(p, n, max_frame, &type, &payload, &plen, &used, &e);
    if (rc < 0) {
      if (n < 4) fail("refused a partial header", off);
      if (odo_get_be32(p) != 0 && odo_get_be32(p) <= max_frame)
        fail("refused a valid length", off);
      if (e.name == NULL || e.msg[0] == '\0' ||
          memchr(e.msg, '\0', sizeof e.msg) == NULL)
        fail("refused without a reason", off);
      break;
    }
    if (rc == 0) {
      if (n >= 4) {
        uint32_t len = odo_get_be32(p);
        if (len == 0 || len > max_frame) fail("waits on an invalid length", off);
        if (n - 4 >= len) fail("waits although the frame is whole", off);
      }
      break;
    }
    if (rc != 1) fail("odo_frame_next returned neither -1, 0 nor 1", off);
    if (used < ODO_FRAME_HEADER || used > n || used - 4 > max_frame ||
        used != 4 + (size_t)odo_get_be32(p) || type != p[4] ||
        payload != p + ODO_FRAME_HEADER || plen != used - ODO_FRAME_HEADER)
      fail("odo_frame_next reports parts that are not the frame's", off);
    /* a frame cut short anywhere is "more bytes needed" */
    for (k = 0; k < 4; k++)
      if (odo_frame_next(p, k, max_frame, &type, &payload, &plen, &used, &e) != 0)
        fail("a partial header is not 'more bytes needed'", off);
    k = used - 1;
    if (odo_frame_next(p, k, max_frame, &type, &payload, &plen, &used, &e) != 0)
      fail("a frame missing its last byte is not 'more bytes needed'", off);
    used = k + 1;
    decoders(p, used, p[4], p + ODO_FRAME_HEADER, used - ODO_FRAME_HEADER, &b,
             off);
    off += used;
  }
  odo_buf_free(&b);
  return 0;
}
