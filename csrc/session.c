/* session.c - one peer session: a TLS engine (ciphertext in over a
 * memory BIO, out into the session's queue: session_out.c), frames,
 * introductions (HELLO), heartbeats (PING/PONG with round-trip times),
 * BYE, and an output queue with high and low watermarks.
 *
 * Sans-I/O: Lua feeds the ciphertext a socket received (`feed`), takes
 * the ciphertext to send (`output`) and reports socket write completions
 * (`written`). Every call that can change the session's state returns the
 * events it caused, as an array of tables `{event = name, ...}`:
 *   handshake {peer}          TLS finished; peer is the certificate's id
 *   hello     {id, port, features, version, instance}
 *   pong      {rtt}           milliseconds
 *   message   {type, payload} a frame for a layer above (type >= 0x10)
 *   closed    {code, name, reason, by}  by = "us" or "peer"; exactly once
 *
 * Over 600 lines, and one job: the session's state machine (handshake,
 * introduction, open, closed) with the buffers it guards; every Lua
 * method is a transition of it, and the C entry points the sync engine
 * uses (odo_session_frame, odo_session_write_frames, writable) share its
 * invariants.
 */

/***
 * @submodule odo.core
 */
#include <openssl/err.h>
#include <openssl/rand.h>
#include <stdio.h>

#include "session.h"

#define DEFAULT_HIGH (4u << 20)
#define DEFAULT_LOW (1u << 20)
#define READ_CHUNK (16u << 10)
#define OUTPUT_CHUNK (1u << 20) /* most ciphertext output() returns at once */

static const char *state_names[] = {"handshake", "introducing", "open",
                                    "closed"};

/* ---- events ---------------------------------------------------------------- */

static void ev_begin(lua_State *L, int ev, const char *name) {
  lua_createtable(L, 0, 6);
  lua_pushstring(L, name);
  lua_setfield(L, -2, "event");
  (void)ev;
}

static void ev_end(lua_State *L, int ev) {
  lua_rawseti(L, ev, (lua_Integer)lua_rawlen(L, ev) + 1);
}

/* ---- writing ----------------------------------------------------------------- */

/* Encrypts plaintext into the output BIO (or keeps it until the handshake
 * is done). Memory BIOs never refuse a write. */
static int session_write(odo_session *s, const uint8_t *p, size_t n) {
  size_t done;
  if (s->state == ODO_SESSION_CLOSED || n == 0) return 1;
  if (s->state == ODO_SESSION_HANDSHAKE) {
    if (odo_buf_add(&s->pending, p, n)) return 1;
    snprintf(s->write_error, sizeof s->write_error, "out of memory");
    return 0;
  }
  if (SSL_write_ex(s->ssl, p, n, &done) != 1 || done != n) {
    odo_ssl_error(s->write_error, sizeof s->write_error, "TLS write failed");
    ERR_clear_error();
    return 0;
  }
  return 1;
}

/* Writes the frames staged in s->scratch. */
static int flush_scratch(odo_session *s) {
  int ok = session_write(s, s->scratch.p, s->scratch.len);
  s->scratch.len = 0;
  return ok;
}

int odo_session_frame(odo_session *s, uint8_t type, const void *payload,
                      size_t plen) {
  s->scratch.len = 0;
  if (!odo_frame_put(&s->scratch, type, payload, plen)) {
    snprintf(s->write_error, sizeof s->write_error, "out of memory");
    return 0;
  }
  s->frames_out++;
  return flush_scratch(s);
}

int odo_session_write_frames(odo_session *s, const uint8_t *p, size_t n,
                             unsigned nframes) {
  if (s->state != ODO_SESSION_OPEN) return 0;
  s->frames_out += nframes;
  return session_write(s, p, n);
}

size_t odo_session_queued(const odo_session *s) {
  return odo_outq_pending(&s->out) +
         s->pending.len + s->in_flight;
}

int odo_session_writable(odo_session *s) {
  size_t q = odo_session_queued(s);
  if (s->blocked && q <= s->low) s->blocked = 0;
  else if (!s->blocked && q >= s->high) s->blocked = 1;
  return !s->blocked && s->state == ODO_SESSION_OPEN;
}

int odo_session_bulk_writable(odo_session *s) {
  return odo_session_bulk_writable_under(s, s->low);
}

int odo_session_bulk_writable_under(odo_session *s, size_t mark) {
  if (!odo_session_writable(s)) return 0;
  if (mark == 0 || mark > s->low) mark = s->low;
  if (odo_session_queued(s) < mark) return 1;
  s->bulk_waits = 1;
  s->bulk_mark = mark;
  return 0;
}

/* ---- closing ----------------------------------------------------------------- */

static void closed_event(lua_State *L, int ev, odo_session *s, const char *by) {
  ev_begin(L, ev, "closed");
  lua_pushinteger(L, s->close_code);
  lua_setfield(L, -2, "code");
  lua_pushstring(L, s->close_code >= ODO_CLOSE_TLS
                        ? (s->close_code == ODO_CLOSE_TLS ? "tls" : "eof")
                        : odo_bye_name(s->close_code));
  lua_setfield(L, -2, "name");
  lua_pushstring(L, s->reason);
  lua_setfield(L, -2, "reason");
  lua_pushstring(L, by);
  lua_setfield(L, -2, "by");
  ev_end(L, ev);
}

/* We end the session: a BYE (when introductions may be under way) and
 * TLS close_notify go out, then nothing more. */
static void session_fail(lua_State *L, int ev, odo_session *s, uint16_t code,
                         const char *reason) {
  if (s->state == ODO_SESSION_CLOSED) return;
  s->close_code = code;
  snprintf(s->reason, sizeof s->reason, "%s", reason);
  if (s->state != ODO_SESSION_HANDSHAKE && code < ODO_CLOSE_TLS) {
    s->scratch.len = 0;
    if (odo_bye_put(&s->scratch, code, reason, strlen(reason)))
      flush_scratch(s);
    SSL_shutdown(s->ssl);
    ERR_clear_error();
  }
  s->state = ODO_SESSION_CLOSED;
  s->pending.len = 0;
  closed_event(L, ev, s, "us");
}

static void peer_closed(lua_State *L, int ev, odo_session *s, uint16_t code,
                        const char *reason, size_t rlen) {
  if (s->state == ODO_SESSION_CLOSED) return;
  s->close_code = code;
  snprintf(s->reason, sizeof s->reason, "%.*s", (int)rlen, reason);
  s->state = ODO_SESSION_CLOSED;
  closed_event(L, ev, s, "peer");
}

/* ---- reading ----------------------------------------------------------------- */

static void on_hello(lua_State *L, int ev, odo_session *s,
                     const uint8_t *payload, size_t plen) {
  char id[65], msg[200];
  if (!odo_hello_decode(payload, plen, &s->theirs)) {
    snprintf(msg, sizeof msg, "a malformed HELLO (%zu bytes)", plen);
    return session_fail(L, ev, s, ODO_BYE_PROTOCOL, msg);
  }
  if (s->theirs.version != ODO_PROTOCOL_VERSION) {
    snprintf(msg, sizeof msg,
             "the peer speaks protocol version %u; this node speaks %d%s",
             s->theirs.version, ODO_PROTOCOL_VERSION,
             s->theirs.version < ODO_PROTOCOL_VERSION
                 ? " (the peer runs an older release: upgrade it)"
                 : " (the peer runs a newer release: upgrade this node)");
    return session_fail(L, ev, s, ODO_BYE_VERSION, msg);
  }
  odo_hex(s->theirs.id, 32, id);
  if (strcmp(id, s->peer_id) != 0) {
    snprintf(msg, sizeof msg,
             "HELLO names node %.16s... but the certificate is node %.16s...",
             id, s->peer_id);
    return session_fail(L, ev, s, ODO_BYE_IDENTITY, msg);
  }
  s->state = ODO_SESSION_OPEN;
  ev_begin(L, ev, "hello");
  lua_pushstring(L, id);
  lua_setfield(L, -2, "id");
  lua_pushinteger(L, s->theirs.port);
  lua_setfield(L, -2, "port");
  odo_pushu64(L, s->theirs.features);
  lua_setfield(L, -2, "features");
  lua_pushinteger(L, s->theirs.version);
  lua_setfield(L, -2, "version");
  odo_pushu64(L, s->theirs.instance);
  lua_setfield(L, -2, "instance");
  ev_end(L, ev);
}

static void on_frame(lua_State *L, int ev, odo_session *s, uint8_t type,
                     const uint8_t *payload, size_t plen, double now) {
  char msg[160];
  uint64_t nonce;
  s->frames_in++;
  if (s->state == ODO_SESSION_INTRO) {
    if (type == ODO_MSG_HELLO) return on_hello(L, ev, s, payload, plen);
    if (type == ODO_MSG_BYE) goto bye;
    snprintf(msg, sizeof msg, "a frame of type %u before HELLO", type);
    return session_fail(L, ev, s, ODO_BYE_PROTOCOL, msg);
  }
  switch (type) {
  case ODO_MSG_PING:
    if (!odo_u64_decode(payload, plen, &nonce)) break;
    /* A PING is answered only while our output to this peer is under its
     * high watermark: a peer that pings without reading would otherwise
     * grow it without bound. Liveness is judged by any traffic, and a
     * peer still reading gets ours. */
    if (odo_session_queued(s) < s->high) {
      uint8_t n[8];
      odo_put_be64(n, nonce);
      odo_session_frame(s, ODO_MSG_PONG, n, 8);
    }
    return;
  case ODO_MSG_PONG:
    if (!odo_u64_decode(payload, plen, &nonce)) break;
    if (s->ping_outstanding && nonce == s->ping_nonce) {
      s->ping_outstanding = 0;
      s->rtt = now - s->ping_at;
      ev_begin(L, ev, "pong");
      lua_pushnumber(L, s->rtt);
      lua_setfield(L, -2, "rtt");
      ev_end(L, ev);
    }
    return;
  case ODO_MSG_BYE:
    goto bye;
  case ODO_MSG_HELLO:
    return session_fail(L, ev, s, ODO_BYE_PROTOCOL, "a second HELLO");
  default:
    if (type >= 0x10) {
      ev_begin(L, ev, "message");
      lua_pushinteger(L, type);
      lua_setfield(L, -2, "type");
      lua_pushlstring(L, (const char *)payload, plen);
      lua_setfield(L, -2, "payload");
      ev_end(L, ev);
      return;
    }
    snprintf(msg, sizeof msg, "a frame of unknown type %u", type);
    return session_fail(L, ev, s, ODO_BYE_PROTOCOL, msg);
  }
  snprintf(msg, sizeof msg, "a malformed frame of type %u (%zu bytes)", type,
           plen);
  return session_fail(L, ev, s, ODO_BYE_PROTOCOL, msg);
bye : {
  uint16_t code;
  const char *reason;
  size_t rlen;
  if (!odo_bye_decode(payload, plen, &code, &reason, &rlen))
    return session_fail(L, ev, s, ODO_BYE_PROTOCOL, "a malformed BYE");
  peer_closed(L, ev, s, code, reason, rlen);
}
}

static void parse_frames(lua_State *L, int ev, odo_session *s, double now) {
  odo_err e = {0};
  while (s->state != ODO_SESSION_CLOSED) {
    uint8_t type;
    const uint8_t *payload;
    size_t plen, used;
    int rc = odo_frame_next(s->in.p + s->in_off, s->in.len - s->in_off,
                            s->max_frame, &type, &payload, &plen, &used, &e);
    if (rc == 0) break;
    if (rc < 0) return session_fail(L, ev, s, ODO_BYE_PROTOCOL, e.msg);
    s->in_off += used;
    on_frame(L, ev, s, type, payload, plen, now);
  }
  if (s->in_off > 0) {
    odo_buf_consume(&s->in, s->in_off);
    s->in_off = 0;
  }
}

static void handshake_done(lua_State *L, int ev, odo_session *s) {
  X509 *peer = SSL_get0_peer_certificate(s->ssl);
  if (peer == NULL || !odo_cert_id(peer, s->peer_id)) {
    return session_fail(L, ev, s, ODO_CLOSE_TLS,
                        "the peer presented no usable certificate");
  }
  s->state = ODO_SESSION_INTRO;
  ev_begin(L, ev, "handshake");
  lua_pushstring(L, s->peer_id);
  lua_setfield(L, -2, "peer");
  ev_end(L, ev);
  /* HELLO goes first, then whatever was queued during the handshake */
  s->scratch.len = 0;
  odo_hello_put(&s->scratch, &s->ours);
  s->frames_out++;
  flush_scratch(s);
  if (s->pending.len) {
    odo_buf q = s->pending;
    odo_buf_init(&s->pending);
    session_write(s, q.p, q.len);
    odo_buf_free(&q);
  }
}

static void tls_failed(lua_State *L, int ev, odo_session *s, int rc) {
  char why[300];
  odo_tls_failure(s->ssl, rc, why, sizeof why);
  session_fail(L, ev, s, ODO_CLOSE_TLS, why);
}

static void advance(lua_State *L, int ev, odo_session *s, double now) {
  if (s->state == ODO_SESSION_HANDSHAKE) {
    int rc = SSL_do_handshake(s->ssl);
    if (rc != 1) {
      int code = SSL_get_error(s->ssl, rc);
      if (code != SSL_ERROR_WANT_READ && code != SSL_ERROR_WANT_WRITE)
        tls_failed(L, ev, s, rc);
      return;
    }
    handshake_done(L, ev, s);
  }
  while (s->state == ODO_SESSION_INTRO || s->state == ODO_SESSION_OPEN) {
    size_t got = 0;
    int rc, code;
    if (!odo_buf_reserve(&s->in, READ_CHUNK))
      return session_fail(L, ev, s, ODO_BYE_PROTOCOL, "out of memory");
    rc = SSL_read_ex(s->ssl, s->in.p + s->in.len, READ_CHUNK, &got);
    if (rc == 1) {
      s->in.len += got;
      /* never hold more than one frame's worth of unparsed bytes */
      if (s->in.len - s->in_off >= s->max_frame + ODO_FRAME_HEADER + READ_CHUNK)
        parse_frames(L, ev, s, now);
      continue;
    }
    code = SSL_get_error(s->ssl, rc);
    if (code == SSL_ERROR_WANT_READ) break;
    if (code == SSL_ERROR_ZERO_RETURN) {
      static const char why[] = "the peer closed the connection";
      parse_frames(L, ev, s, now);
      if (s->state == ODO_SESSION_CLOSED) return;
      if (s->in.len > s->in_off) {
        char cut[120];
        snprintf(cut, sizeof cut, "the peer closed the connection inside a frame "
                 "(%zu bytes of it arrived)", s->in.len - s->in_off);
        return session_fail(L, ev, s, ODO_BYE_PROTOCOL, cut);
      }
      return peer_closed(L, ev, s, ODO_BYE_NORMAL, why, sizeof why - 1);
    }
    parse_frames(L, ev, s, now);
    return tls_failed(L, ev, s, rc);
  }
  parse_frames(L, ev, s, now);
}

/* ---- Lua ------------------------------------------------------------------------ */

static odo_session *check_session(lua_State *L) {
  odo_session *s = luaL_checkudata(L, 1, ODO_SESSION_CLASS);
  if (s->ssl == NULL) luaL_error(L, "attempt to use a released session");
  return s;
}

static void session_release(odo_session *s) {
  if (s->ssl) SSL_free(s->ssl);
  s->ssl = NULL;
  odo_outq_free(&s->out); /* after the BIO that used its method */
  s->state = ODO_SESSION_CLOSED;
  odo_buf_free(&s->in);
  odo_buf_free(&s->pending);
  odo_buf_free(&s->scratch);
}

static uint64_t random_u63(void) {
  uint8_t b[8];
  if (RAND_bytes(b, sizeof b) != 1) return (uint64_t)odo_mono_ns() >> 1;
  return odo_get_be64(b) >> 1;
}

static int hex_id(const char *hex, uint8_t out[32]) {
  for (size_t i = 0; i < 32; i++) {
    unsigned v;
    if (sscanf(hex + 2 * i, "%2x", &v) != 1) return 0;
    out[i] = (uint8_t)v;
  }
  return 1;
}

/***
 * A session over a TLS context.
 * @function session
 * @tparam odo.tls_context tls
 * @tparam table opts `server` (boolean: accept, default false: connect),
 *   `port` (listen port announced in HELLO), `features`, `instance` (this
 *   node's run, default random), `max_frame` (default 16 MiB), `high` and
 *   `low` output watermarks (default 4 MiB and 1 MiB)
 */
static int l_session(lua_State *L) {
  odo_tls *t = odo_tls_check(L, 1);
  odo_session *s;
  odo_err e = {0};
  int opts = lua_istable(L, 2) ? 2 : 0;
  s = lua_newuserdatauv(L, sizeof *s, 1);
  memset(s, 0, sizeof *s);
  luaL_setmetatable(L, ODO_SESSION_CLASS);
  lua_pushvalue(L, 1); /* the session keeps its context alive */
  odo_setuservalue(L, -2);
  s->tls = t;
  s->server = opts ? odo_fieldbool(L, opts, "server", 0) : 0;
  s->max_frame = opts ? (size_t)odo_fieldu64(L, opts, "max_frame", ODO_DEFAULT_MAX_FRAME)
                      : ODO_DEFAULT_MAX_FRAME;
  if (s->max_frame < ODO_MIN_MAX_FRAME || s->max_frame > (1u << 30))
    return luaL_error(L, "max_frame must be between %d and 2^30", ODO_MIN_MAX_FRAME);
  s->high = opts ? (size_t)odo_fieldu64(L, opts, "high", DEFAULT_HIGH) : DEFAULT_HIGH;
  s->low = opts ? (size_t)odo_fieldu64(L, opts, "low", DEFAULT_LOW) : DEFAULT_LOW;
  if (s->low > s->high) return luaL_error(L, "the low watermark must not exceed the high one");
  s->ours.version = ODO_PROTOCOL_VERSION;
  s->ours.port = (uint16_t)(opts ? odo_fieldu64(L, opts, "port", 0) : 0);
  s->ours.features = opts ? odo_fieldu64(L, opts, "features", ODO_FEATURE_SYNC)
                          : ODO_FEATURE_SYNC;
  s->ours.instance = opts ? odo_fieldu64(L, opts, "instance", 0) : 0;
  if (s->ours.instance == 0) s->ours.instance = random_u63();
  hex_id(t->id, s->ours.id);
  s->ssl = odo_tls_engine(t, s->server, &e);
  if (s->ssl == NULL) return odo_err_push(L, &e);
  if (!odo_outq_attach(s->ssl, &s->out)) {
    session_release(s);
    odo_err_set(&e, "ENOMEM", "out of memory making a TLS output queue");
    return odo_err_push(L, &e);
  }
  s->state = ODO_SESSION_HANDSHAKE;
  return 1;
}

/***
 * Starts the handshake (a client's first flight). Returns events.
 * @function session:start
 */
static int l_start(lua_State *L) {
  odo_session *s = check_session(L);
  lua_newtable(L);
  if (s->state == ODO_SESSION_HANDSHAKE) advance(L, lua_gettop(L), s, 0);
  return 1;
}

/***
 * Feeds ciphertext received from the peer; returns the events it caused.
 * @function session:feed
 * @tparam string data
 * @tparam[opt] number now milliseconds (for round-trip times)
 */
static int l_feed(lua_State *L) {
  odo_session *s = check_session(L);
  size_t n;
  const char *data = luaL_checklstring(L, 2, &n);
  double now = luaL_optnumber(L, 3, 0);
  int ev;
  lua_newtable(L);
  ev = lua_gettop(L);
  if (s->state == ODO_SESSION_CLOSED) return 1;
  if (n > 0 && BIO_write(SSL_get_rbio(s->ssl), data, (int)n) != (int)n) {
    session_fail(L, ev, s, ODO_BYE_PROTOCOL, "out of memory");
    return 1;
  }
  s->bytes_in += n;
  advance(L, ev, s, now);
  return 1;
}

/***
 * The connection ended without a BYE: a session that was not closed
 * reports it (a truncated frame is named). Returns events.
 * @function session:eof
 */
static int l_eof(lua_State *L) {
  odo_session *s = check_session(L);
  int ev;
  lua_newtable(L);
  ev = lua_gettop(L);
  if (s->state != ODO_SESSION_CLOSED) {
    const char *why = s->in.len > 0 ? "the connection ended inside a frame"
                                    : "the connection ended";
    s->close_code = ODO_CLOSE_EOF;
    snprintf(s->reason, sizeof s->reason, "%s", why);
    s->state = ODO_SESSION_CLOSED;
    closed_event(L, ev, s, "peer");
  }
  return 1;
}

/***
 * The ciphertext to send (at most 1 MiB; call again while it returns
 * some), or nil. What it returns counts as in flight until `written`
 * reports it.
 * @function session:output
 */
static int l_output(lua_State *L) {
  odo_session *s = check_session(L);
  size_t n;
  const uint8_t *p = odo_outq_peek(&s->out, &n);
  if (n == 0) return 0;
  /* a chunk at a time: the string is a copy, and the socket's write
   * starts before the next chunk is made */
  if (n > OUTPUT_CHUNK) n = OUTPUT_CHUNK;
  lua_pushlstring(L, (const char *)p, n);
  odo_outq_take(&s->out, n);
  s->in_flight += n;
  s->bytes_out += n;
  return 1;
}

/***
 * Reports that n bytes of output reached the socket. Returns true when
 * the session just fell below its low watermark after it was blocked, or
 * while a bulk producer waited for that (producers may resume).
 * @function session:written
 */
static int l_written(lua_State *L) {
  odo_session *s = luaL_checkudata(L, 1, ODO_SESSION_CLASS);
  size_t n = (size_t)odo_checku64(L, 2, "n");
  int was = s->blocked;
  s->in_flight -= n < s->in_flight ? n : s->in_flight;
  if (s->bulk_waits && odo_session_queued(s) < (s->bulk_mark ? s->bulk_mark : s->low)) {
    s->bulk_waits = 0;
    was = 1; /* a bulk producer waits for this */
  }
  lua_pushboolean(L, was && odo_session_writable(s));
  return 1;
}

/***
 * Sends a frame of type `type` (0x10 or more) with `payload`.
 * @function session:send
 * @treturn boolean whether the session is still under its high watermark
 * @treturn[2] nil
 * @treturn[2] string "ECLOSED: ...", "ETOOBIG: ..." or "EIO: ..." (with
 *   OpenSSL's reason)
 */
static int l_send(lua_State *L) {
  odo_session *s = check_session(L);
  lua_Integer type = luaL_checkinteger(L, 2);
  size_t n;
  const char *payload = luaL_optlstring(L, 3, "", &n);
  if (type < 0x10 || type > 0xff)
    return luaL_argerror(L, 2, "message types 0x10 to 0xff are free to send");
  if (n + 1 > s->max_frame)
    return odo_fail(L, "ETOOBIG", "a %zu-byte payload exceeds the frame limit of %zu", n,
                    s->max_frame);
  if (s->state == ODO_SESSION_CLOSED)
    return odo_fail(L, "ECLOSED", "the session is closed (%s)", s->reason);
  if (!odo_session_frame(s, (uint8_t)type, payload, n))
    return odo_fail(L, "EIO", "cannot queue a frame: %s", s->write_error);
  lua_pushboolean(L, odo_session_writable(s));
  return 1;
}

/***
 * Sends a PING; the matching PONG yields a `pong` event with the
 * round-trip time.
 * @function session:ping
 * @tparam number now milliseconds
 */
static int l_ping(lua_State *L) {
  odo_session *s = check_session(L);
  uint8_t n[8];
  if (s->state != ODO_SESSION_OPEN) return odo_fail(L, "ECLOSED", "the session is not open");
  s->ping_nonce = random_u63();
  s->ping_at = luaL_checknumber(L, 2);
  s->ping_outstanding = 1;
  odo_put_be64(n, s->ping_nonce);
  if (!odo_session_frame(s, ODO_MSG_PING, n, 8))
    return odo_fail(L, "EIO", "cannot queue a PING: %s", s->write_error);
  lua_pushboolean(L, 1);
  return 1;
}

/***
 * Ends the session: BYE with a code (a number or a name such as
 * "duplicate") and a reason, then TLS close_notify. Returns events.
 * @function session:bye
 */
static int l_bye(lua_State *L) {
  odo_session *s = check_session(L);
  uint16_t code = ODO_BYE_NORMAL;
  const char *reason = luaL_optstring(L, 3, "bye");
  if (lua_type(L, 2) == LUA_TSTRING) {
    const char *name = lua_tostring(L, 2);
    uint16_t c;
    for (c = 0; c <= ODO_BYE_SHARED_KEY; c++)
      if (strcmp(odo_bye_name(c), name) == 0) break;
    if (c > ODO_BYE_SHARED_KEY) return luaL_argerror(L, 2, "unknown BYE code name");
    code = c;
  } else {
    code = (uint16_t)luaL_optinteger(L, 2, ODO_BYE_NORMAL);
  }
  lua_newtable(L);
  session_fail(L, lua_gettop(L), s, code, reason);
  return 1;
}

static void push_info(lua_State *L, odo_session *s) {
  lua_createtable(L, 0, 16);
  lua_pushstring(L, state_names[s->state]);
  lua_setfield(L, -2, "state");
  lua_pushstring(L, s->peer_id);
  lua_setfield(L, -2, "peer");
  lua_pushnumber(L, s->rtt);
  lua_setfield(L, -2, "rtt");
  odo_pushu64(L, s->bytes_in);
  lua_setfield(L, -2, "bytes_in");
  odo_pushu64(L, s->bytes_out);
  lua_setfield(L, -2, "bytes_out");
  odo_pushu64(L, s->frames_in);
  lua_setfield(L, -2, "frames_in");
  odo_pushu64(L, s->frames_out);
  lua_setfield(L, -2, "frames_out");
  odo_pushu64(L, odo_session_queued(s));
  lua_setfield(L, -2, "queued");
  lua_pushboolean(L, s->server);
  lua_setfield(L, -2, "server");
  lua_pushstring(L, s->reason);
  lua_setfield(L, -2, "reason");
  if (s->ssl && s->state != ODO_SESSION_HANDSHAKE) {
    lua_pushstring(L, SSL_get_cipher_name(s->ssl));
    lua_setfield(L, -2, "cipher");
  }
  odo_pushu64(L, s->ours.instance);
  lua_setfield(L, -2, "instance");
}

/***
 * The session's state and counters: {state, peer, rtt, bytes_in,
 * bytes_out, frames_in, frames_out, queued, server, reason, cipher,
 * instance}.
 * @function session:info
 */
static int l_info(lua_State *L) {
  push_info(L, luaL_checkudata(L, 1, ODO_SESSION_CLASS));
  return 1;
}

/***
 * Whether producers may queue more (under the high watermark, or back
 * under the low one after reaching it) on an open session.
 * @function session:writable
 */
static int l_writable(lua_State *L) {
  lua_pushboolean(L, odo_session_writable(check_session(L)));
  return 1;
}

static int l_gc(lua_State *L) {
  session_release(luaL_checkudata(L, 1, ODO_SESSION_CLASS));
  return 0;
}

static int l_tostring(lua_State *L) {
  odo_session *s = luaL_checkudata(L, 1, ODO_SESSION_CLASS);
  lua_pushfstring(L, "odo.session (%s, %s)", state_names[s->state],
                  s->peer_id[0] ? s->peer_id : "peer unknown");
  return 1;
}

/***
 * Random bytes from OpenSSL's generator.
 * @function random
 */
static int l_random(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  luaL_Buffer b;
  char *p;
  if (n < 0 || n > 4096) return luaL_argerror(L, 1, "0 to 4096 bytes");
  p = luaL_buffinitsize(L, &b, (size_t)n);
  if (RAND_bytes((unsigned char *)p, (int)n) != 1)
    return luaL_error(L, "the random generator failed");
  luaL_pushresultsize(&b, (size_t)n);
  return 1;
}

/***
 * A random integer in [1, 2^63): a node's instance number.
 * @function random_instance
 */
static int l_random_instance(lua_State *L) {
  uint64_t v;
  do v = random_u63(); while (v == 0);
  odo_pushu64(L, v);
  return 1;
}

void odo_session_open(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"start", l_start},       {"feed", l_feed},   {"eof", l_eof},
      {"output", l_output},     {"written", l_written},
      {"send", l_send},         {"ping", l_ping},   {"bye", l_bye},
      {"info", l_info},         {"writable", l_writable},
      {"release", l_gc},
      {NULL, NULL}};
  odo_newclass(L, ODO_SESSION_CLASS, methods, l_gc, l_tostring);
  lua_pushcfunction(L, l_session);
  lua_setfield(L, -2, "session");
  lua_pushcfunction(L, l_random);
  lua_setfield(L, -2, "random");
  lua_pushcfunction(L, l_random_instance);
  lua_setfield(L, -2, "random_instance");
}
