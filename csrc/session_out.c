/* session_out.c - where a session's TLS engine puts its ciphertext: a
 * write-only BIO appending to one growable buffer that `output` takes its
 * strings straight from. Against a memory BIO this saves a copy of every
 * byte sent (BIO_read into a Lua buffer, then into the string), the
 * zero-fill of each write's room and a megabyte buffer per output call.
 * Each session has its own BIO method (no state shared between Lua
 * states); the queue is bounded by the session's watermarks, as before. */
#include <string.h>

#include "session.h"

static odo_outq *outq_of(BIO *b) { return BIO_get_data(b); }

static int outq_write(BIO *b, const char *p, size_t n, size_t *done) {
  odo_outq *q = outq_of(b);
  BIO_clear_retry_flags(b);
  *done = 0;
  if (q->off == q->buf.len) {
    q->buf.len = q->off = 0; /* drained: start over at the front */
  } else if (q->off > 0 && q->off >= q->buf.cap / 2 && q->buf.len + n > q->buf.cap) {
    /* half of the buffer is taken: move the rest down rather than grow */
    memmove(q->buf.p, q->buf.p + q->off, q->buf.len - q->off);
    q->buf.len -= q->off;
    q->off = 0;
  }
  if (!odo_buf_add(&q->buf, p, n)) return 0;
  *done = n;
  return 1;
}

static long outq_ctrl(BIO *b, int cmd, long num, void *ptr) {
  odo_outq *q = outq_of(b);
  (void)num;
  (void)ptr;
  switch (cmd) {
  case BIO_CTRL_PENDING:
  case BIO_CTRL_WPENDING:
    return (long)(q->buf.len - q->off);
  case BIO_CTRL_FLUSH:
    return 1;
  default:
    return 0;
  }
}

static int outq_create(BIO *b) {
  BIO_set_init(b, 1);
  return 1;
}

int odo_outq_attach(SSL *ssl, odo_outq *q) {
  BIO *b;
  memset(q, 0, sizeof *q);
  q->meth = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "odo session output");
  if (q->meth == NULL || !BIO_meth_set_write_ex(q->meth, outq_write) ||
      !BIO_meth_set_ctrl(q->meth, outq_ctrl) || !BIO_meth_set_create(q->meth, outq_create))
    return 0;
  b = BIO_new(q->meth);
  if (b == NULL) return 0;
  BIO_set_data(b, q);
  SSL_set0_wbio(ssl, b); /* frees the memory BIO it replaces */
  return 1;
}

size_t odo_outq_pending(const odo_outq *q) { return q->buf.len - q->off; }

const uint8_t *odo_outq_peek(const odo_outq *q, size_t *n) {
  *n = q->buf.len - q->off;
  return q->buf.p + q->off;
}

void odo_outq_take(odo_outq *q, size_t n) {
  q->off += n;
  if (q->off == q->buf.len) q->buf.len = q->off = 0;
}

void odo_outq_free(odo_outq *q) {
  odo_buf_free(&q->buf);
  if (q->meth) BIO_meth_free(q->meth);
  q->meth = NULL;
  q->off = 0;
}
