/* tls_pipe.c - a raw TLS stream over memory BIOs (odo.core.tls_pipe):
 * mutual TLS 1.3 with a node's context, carrying whatever bytes the
 * caller writes, with no frames, HELLO or heartbeats of its own. The
 * session (session.c) is the protocol; this is the bare channel under it,
 * for tools and specs that must speak bytes a session never would (a
 * peer that lies in its HELLO, sends no HELLO, floods or cuts a frame).
 * Sans-I/O like the session: `feed` ciphertext in, `output` ciphertext
 * out. */

/***
 * @submodule odo.core
 */
#include <openssl/err.h>

#include "tls.h"

#define PIPE_CLASS "odo.tls_pipe"
#define PIPE_CHUNK 16384

typedef struct tls_pipe {
  SSL *ssl;
  int done;      /* handshake finished */
  odo_buf queued; /* plaintext written before the handshake finished */
} tls_pipe;

static tls_pipe *check_pipe(lua_State *L) {
  tls_pipe *p = luaL_checkudata(L, 1, PIPE_CLASS);
  if (p->ssl == NULL) luaL_error(L, "attempt to use a closed TLS pipe");
  return p;
}

/* Moves the handshake on and writes what waits for it; 0 with why set
 * on a TLS failure. */
static int advance(tls_pipe *p, char *why, size_t len) {
  size_t done;
  if (!p->done) {
    int rc = SSL_do_handshake(p->ssl);
    if (rc != 1) {
      int code = SSL_get_error(p->ssl, rc);
      if (code == SSL_ERROR_WANT_READ || code == SSL_ERROR_WANT_WRITE) return 1;
      odo_tls_failure(p->ssl, rc, why, len);
      return 0;
    }
    p->done = 1;
  }
  if (p->queued.len > 0) {
    if (SSL_write_ex(p->ssl, p->queued.p, p->queued.len, &done) != 1) {
      odo_tls_failure(p->ssl, 0, why, len);
      return 0;
    }
    odo_buf_consume(&p->queued, done);
  }
  return 1;
}

/***
 * A raw TLS stream with a node's context: a client (it sends its first
 * handshake bytes at once) or, with `server`, a server.
 * @function tls_pipe
 * @tparam odo.tls_context tls
 * @tparam[opt] boolean server
 * @return pipe with `feed`, `write`, `output`, `close`, or nil, "ETLS: ...", "ETLS"
 */
static int l_tls_pipe(lua_State *L) {
  odo_tls *t = odo_tls_check(L, 1);
  int server = lua_toboolean(L, 2);
  odo_err e = {0};
  char why[300];
  tls_pipe *p = lua_newuserdatauv(L, sizeof *p, 1);
  memset(p, 0, sizeof *p);
  odo_buf_init(&p->queued);
  luaL_setmetatable(L, PIPE_CLASS);
  lua_pushvalue(L, 1); /* the pipe keeps its context alive */
  odo_setuservalue(L, -2);
  p->ssl = odo_tls_engine(t, server, &e);
  if (p->ssl == NULL) return odo_err_push(L, &e);
  if (!server && !advance(p, why, sizeof why)) return odo_fail(L, "ETLS", "%s", why);
  return 1;
}

/***
 * Takes ciphertext that arrived; returns the plaintext it carried (maybe
 * empty).
 * @function pipe:feed
 * @tparam string data
 * @treturn string plaintext
 * @treturn[2] nil
 * @treturn[2] string "ETLS: ..." (the handshake or a record failed)
 */
static int l_feed(lua_State *L) {
  tls_pipe *p = check_pipe(L);
  size_t n, got;
  const char *data = luaL_checklstring(L, 2, &n);
  char why[300], chunk[PIPE_CHUNK];
  luaL_Buffer b;
  if (n > 0 && BIO_write(SSL_get_rbio(p->ssl), data, (int)n) != (int)n)
    return odo_fail(L, "ENOMEM", "cannot buffer %zu bytes of ciphertext", n);
  if (!advance(p, why, sizeof why)) return odo_fail(L, "ETLS", "%s", why);
  luaL_buffinit(L, &b);
  while (p->done && SSL_read_ex(p->ssl, chunk, sizeof chunk, &got) == 1)
    luaL_addlstring(&b, chunk, got);
  ERR_clear_error(); /* the loop ends on "want read" or a close */
  luaL_pushresult(&b);
  return 1;
}

/***
 * Writes plaintext into the stream (held until the handshake is done).
 * @function pipe:write
 * @tparam string data
 */
static int l_write(lua_State *L) {
  tls_pipe *p = check_pipe(L);
  size_t n;
  const char *data = luaL_checklstring(L, 2, &n);
  char why[300];
  if (!odo_buf_add(&p->queued, data, n)) return luaL_error(L, "out of memory");
  if (p->done && !advance(p, why, sizeof why)) return odo_fail(L, "ETLS", "%s", why);
  lua_pushboolean(L, 1);
  return 1;
}

/***
 * The ciphertext to send, or nil when there is none.
 * @function pipe:output
 */
static int l_output(lua_State *L) {
  tls_pipe *p = check_pipe(L);
  BIO *out = SSL_get_wbio(p->ssl);
  char chunk[PIPE_CHUNK];
  luaL_Buffer b;
  int got;
  if (BIO_ctrl_pending(out) == 0) return 0;
  luaL_buffinit(L, &b);
  while ((got = BIO_read(out, chunk, (int)sizeof chunk)) > 0)
    luaL_addlstring(&b, chunk, (size_t)got);
  luaL_pushresult(&b);
  return 1;
}

/***
 * Ends the stream with TLS close_notify (then take `output`).
 * @function pipe:close
 */
static int l_close(lua_State *L) {
  tls_pipe *p = check_pipe(L);
  if (p->done) SSL_shutdown(p->ssl);
  ERR_clear_error();
  return 0;
}

static int l_gc(lua_State *L) {
  tls_pipe *p = luaL_checkudata(L, 1, PIPE_CLASS);
  if (p->ssl) SSL_free(p->ssl);
  p->ssl = NULL;
  odo_buf_free(&p->queued);
  return 0;
}

static int l_tostring(lua_State *L) {
  tls_pipe *p = luaL_checkudata(L, 1, PIPE_CLASS);
  lua_pushfstring(L, "odo.tls_pipe (%s)", p->ssl == NULL ? "closed" : p->done ? "open" : "handshake");
  return 1;
}

void odo_tls_pipe_open(lua_State *L) {
  static const luaL_Reg methods[] = {{"feed", l_feed},   {"write", l_write},
                                     {"output", l_output}, {"close", l_close},
                                     {"release", l_gc},  {NULL, NULL}};
  odo_newclass(L, PIPE_CLASS, methods, l_gc, l_tostring);
  lua_pushcfunction(L, l_tls_pipe);
  lua_setfield(L, -2, "tls_pipe");
}
