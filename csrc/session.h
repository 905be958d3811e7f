/* session.h - one peer session (see session.c): the state the sync engine
 * reaches from C to queue frames without a Lua call per event. */
#ifndef ODO_SESSION_H
#define ODO_SESSION_H

#include "tls.h"
#include "wire.h"

#define ODO_SESSION_CLASS "odo.session"

enum {
  ODO_SESSION_HANDSHAKE = 0,
  ODO_SESSION_INTRO = 1, /* TLS done, HELLO not yet received */
  ODO_SESSION_OPEN = 2,
  ODO_SESSION_CLOSED = 3
};

/* Close codes that never travel in a BYE. */
#define ODO_CLOSE_TLS 100 /* the TLS handshake or a record failed */
#define ODO_CLOSE_EOF 101 /* the connection ended without a BYE */

/* A session's queue of ciphertext to send (session_out.c): the TLS
 * engine's write BIO appends to buf; output takes from off. */
typedef struct odo_outq {
  BIO_METHOD *meth; /* this session's own: freed after its BIO */
  odo_buf buf;
  size_t off;
} odo_outq;

/* Makes q (zeroed here; it must not move while the SSL lives) the write
 * BIO of ssl; 0 when out of memory (odo_outq_free still releases q). */
int odo_outq_attach(SSL *ssl, odo_outq *q);
size_t odo_outq_pending(const odo_outq *q);
/* The queued bytes, *n of them, without taking them. */
const uint8_t *odo_outq_peek(const odo_outq *q, size_t *n);
/* Takes n queued bytes (n at most what is pending). */
void odo_outq_take(odo_outq *q, size_t n);
/* Call after SSL_free (which frees the BIO using the method). */
void odo_outq_free(odo_outq *q);

typedef struct odo_session {
  SSL *ssl;
  odo_tls *tls;
  int server, state, blocked;
  int bulk_waits; /* a bulk producer waits for the queue to fall to low */
  size_t max_frame, high, low;
  odo_buf in;       /* plaintext received and not yet parsed, from in_off */
  size_t in_off;
  odo_buf pending;  /* plaintext queued before the handshake finished */
  odo_buf scratch;  /* one frame being built */
  odo_outq out;     /* ciphertext not yet taken by output */
  size_t in_flight; /* ciphertext handed to the socket, not yet written */
  odo_hello ours, theirs;
  char peer_id[ODO_NODE_ID_HEX + 1];
  uint64_t ping_nonce;
  double ping_at, rtt;
  int ping_outstanding;
  uint64_t bytes_in, bytes_out, frames_in, frames_out;
  uint16_t close_code;
  char reason[300];
  char write_error[256]; /* why the last write failed */
  /* the queue a waiting bulk producer waits to fall under (0: low) */
  size_t bulk_mark;
} odo_session;

/* Queues one frame (encrypting it once the handshake is done); 0 on
 * allocation failure or a TLS write error (s->write_error says which). */
int odo_session_frame(odo_session *s, uint8_t type, const void *payload,
                      size_t plen);
/* Writes frames already built (header included) on an open session. */
int odo_session_write_frames(odo_session *s, const uint8_t *p, size_t n,
                             unsigned nframes);
/* Bytes queued: ciphertext not yet taken, plaintext waiting for the
 * handshake, and ciphertext in flight to the socket. */
size_t odo_session_queued(const odo_session *s);
/* Open and under the watermarks (with hysteresis). */
int odo_session_writable(odo_session *s);
/* Writable, and for bulk (a catch-up) too: under the low watermark, so
 * live and control frames (a heartbeat) never queue behind more than that
 * of it. When not, `written` reports the drain below the low watermark. */
int odo_session_bulk_writable(odo_session *s);
/* The same with bulk held under `mark` bytes queued when that is below
 * the low watermark (a sender that keeps less bulk in flight, so a live
 * frame queues behind less); `written` then reports the drain below it. */
int odo_session_bulk_writable_under(odo_session *s, size_t mark);

void odo_session_open(lua_State *L);

#endif
