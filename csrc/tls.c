/* tls.c - TLS contexts: PEM files in, an SSL_CTX that speaks TLS 1.3 only,
 * presents our certificate and demands and verifies the peer's; the
 * verification rule for self-signed bundle certificates; per-connection
 * engines over memory BIOs; failure reasons a person can act on. */

/***
 * @submodule odo.core
 */
#include <errno.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tls.h"

static int is_trusted_self_signed(const odo_tls *t, X509 *cert) {
  char id[ODO_NODE_ID_HEX + 1];
  if (X509_check_issued(cert, cert) != X509_V_OK) return 0;
  if (!odo_cert_id(cert, id)) return 0;
  for (size_t i = 0; i < t->ntrusted; i++)
    if (memcmp(t->trusted[i], id, ODO_NODE_ID_HEX) == 0) return 1;
  return 0;
}

static int in_validity_period(X509 *cert) {
  return X509_cmp_current_time(X509_get0_notBefore(cert)) < 0 &&
         X509_cmp_current_time(X509_get0_notAfter(cert)) > 0;
}

/* OpenSSL calls this for every problem it finds; returning 1 overrides
 * one. We override only "self-signed certificate" for a leaf whose key is
 * the key of a self-signed certificate in our bundle, still in its
 * validity period. */
static int verify_cb(int ok, X509_STORE_CTX *xs) {
  SSL *ssl;
  odo_tls *t;
  X509 *cert;
  int err;
  if (ok) return 1;
  err = X509_STORE_CTX_get_error(xs);
  if (X509_STORE_CTX_get_error_depth(xs) != 0) return 0;
  if (err != X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT &&
      err != X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN &&
      err != X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY &&
      err != X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE &&
      err != X509_V_ERR_CERT_SIGNATURE_FAILURE)
    return 0;
  ssl = X509_STORE_CTX_get_ex_data(xs, SSL_get_ex_data_X509_STORE_CTX_idx());
  if (ssl == NULL) return 0;
  t = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
  cert = X509_STORE_CTX_get_current_cert(xs);
  if (t == NULL || cert == NULL) return 0;
  if (is_trusted_self_signed(t, cert)) {
    if (!in_validity_period(cert)) {
      X509_STORE_CTX_set_error(xs, X509_V_ERR_CERT_HAS_EXPIRED);
      return 0;
    }
    X509_STORE_CTX_set_error(xs, X509_V_OK);
    return 1;
  }
  return 0;
}

/* Reads the ids of the self-signed certificates in the CA bundle. */
static int load_trusted(odo_tls *t, const char *path, odo_err *e) {
  FILE *f = fopen(path, "r");
  X509 *x;
  size_t cap = 0;
  if (f == NULL) {
    return odo_err_set(e, "ETLS", "cannot read CA bundle %s: %s", path,
                       strerror(errno));
  }
  while ((x = PEM_read_X509(f, NULL, NULL, NULL)) != NULL) {
    if (X509_check_issued(x, x) == X509_V_OK) {
      if (t->ntrusted == cap) {
        size_t n = cap ? cap * 2 : 8;
        void *p = realloc(t->trusted, n * sizeof *t->trusted);
        if (p == NULL) {
          X509_free(x);
          fclose(f);
          return odo_err_set(e, "ETLS", "out of memory reading %s", path);
        }
        t->trusted = p;
        cap = n;
      }
      if (odo_cert_id(x, t->trusted[t->ntrusted])) t->ntrusted++;
    }
    X509_free(x);
  }
  ERR_clear_error(); /* the loop ends on "no start line" */
  fclose(f);
  return 1;
}

static void tls_release(odo_tls *t) {
  if (t->ctx) SSL_CTX_free(t->ctx);
  if (t->key) EVP_PKEY_free(t->key);
  free(t->trusted);
  t->ctx = NULL;
  t->key = NULL;
  t->trusted = NULL;
  t->ntrusted = 0;
}

static const char *opt_path(lua_State *L, const char *k) {
  const char *v;
  lua_getfield(L, 1, k);
  if (lua_type(L, -1) != LUA_TSTRING)
    luaL_error(L, "tls.%s must be the path of a PEM file", k);
  v = lua_tostring(L, -1);
  lua_pop(L, 1); /* still referenced by the options table */
  return v;
}

static int setup(odo_tls *t, const char *ca, const char *cert_path,
                 const char *key_path, odo_err *e) {
  char ssl[256];
  X509 *cert = odo_read_cert(cert_path, e);
  if (cert == NULL) return 0;
  if (!odo_cert_id(cert, t->id)) {
    X509_free(cert);
    return odo_err_set(e, "ETLS", "cannot read the public key of %s", cert_path);
  }
  X509_free(cert);
  t->key = odo_read_key(key_path, e);
  if (t->key == NULL) return 0;
  t->ctx = SSL_CTX_new(TLS_method());
  if (t->ctx == NULL ||
      !SSL_CTX_set_min_proto_version(t->ctx, TLS1_3_VERSION) ||
      !SSL_CTX_set_max_proto_version(t->ctx, TLS1_3_VERSION)) {
    return odo_err_set(e, "ETLS", "cannot make a TLS 1.3 context: %s",
                       odo_ssl_error(ssl, sizeof ssl, "unknown error"));
  }
  SSL_CTX_set_app_data(t->ctx, t);
  if (SSL_CTX_use_certificate_chain_file(t->ctx, cert_path) != 1) {
    return odo_err_set(e, "ETLS", "cannot use certificate %s: %s", cert_path,
                       odo_ssl_error(ssl, sizeof ssl, "unknown error"));
  }
  if (SSL_CTX_use_PrivateKey(t->ctx, t->key) != 1 ||
      SSL_CTX_check_private_key(t->ctx) != 1) {
    return odo_err_set(e, "ETLS", "key %s does not match certificate %s (%s)",
                       key_path, cert_path,
                       odo_ssl_error(ssl, sizeof ssl, "mismatch"));
  }
  if (SSL_CTX_load_verify_locations(t->ctx, ca, NULL) != 1) {
    return odo_err_set(e, "ETLS", "cannot load CA bundle %s: %s", ca,
                       odo_ssl_error(ssl, sizeof ssl, "no certificates"));
  }
  if (!load_trusted(t, ca, e)) return 0;
  SSL_CTX_set_verify(t->ctx,
                     SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
                     verify_cb);
  /* no session tickets or resumption: every connection authenticates */
  SSL_CTX_set_num_tickets(t->ctx, 0);
  SSL_CTX_set_session_cache_mode(t->ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_options(t->ctx, SSL_OP_NO_TICKET);
  SSL_CTX_set_mode(t->ctx, SSL_MODE_RELEASE_BUFFERS);
  return 1;
}

/***
 * A TLS context from PEM files: TLS 1.3 only, mutual authentication
 * against the CA bundle.
 * @function tls_context
 * @tparam table opts `ca` (bundle of trusted CA or self-signed
 *   certificates), `cert`, `key`
 * @return context, or nil, "ETLS: ...", "ETLS"
 */
static int l_tls_context(lua_State *L) {
  const char *ca, *cert, *key;
  odo_err e = {0};
  odo_tls *t;
  luaL_checktype(L, 1, LUA_TTABLE);
  ca = opt_path(L, "ca");
  cert = opt_path(L, "cert");
  key = opt_path(L, "key");
  t = lua_newuserdatauv(L, sizeof *t, 0);
  memset(t, 0, sizeof *t);
  luaL_setmetatable(L, ODO_TLS_CLASS);
  if (!setup(t, ca, cert, key, &e)) {
    tls_release(t);
    /* every failure to make a context is ETLS, whatever the file's */
    return odo_fail(L, "ETLS", "%s", e.msg);
  }
  return 1;
}

odo_tls *odo_tls_check(lua_State *L, int idx) {
  odo_tls *t = luaL_checkudata(L, idx, ODO_TLS_CLASS);
  if (t->ctx == NULL) luaL_error(L, "attempt to use a closed TLS context");
  return t;
}

SSL *odo_tls_engine(odo_tls *t, int server, odo_err *e) {
  char ssl_err[256];
  SSL *ssl = SSL_new(t->ctx);
  BIO *in = BIO_new(BIO_s_mem()), *out = BIO_new(BIO_s_mem());
  if (ssl == NULL || in == NULL || out == NULL) {
    odo_err_set(e, "ETLS", "cannot make a TLS engine: %s",
                odo_ssl_error(ssl_err, sizeof ssl_err, "out of memory"));
    SSL_free(ssl);
    BIO_free(in);
    BIO_free(out);
    return NULL;
  }
  /* reads past the end of what arrived are "retry", not end of file */
  BIO_set_mem_eof_return(in, -1);
  BIO_set_mem_eof_return(out, -1);
  SSL_set_bio(ssl, in, out);
  if (server) SSL_set_accept_state(ssl);
  else SSL_set_connect_state(ssl);
  return ssl;
}

/* The alert a peer sent about our certificate (bad, unsupported,
 * revoked, expired, unknown, unknown CA, access denied, or none sent), or
 * 0 when error e is something else. */
static int certificate_alert(unsigned long e) {
  int alert = ERR_GET_REASON(e) - SSL_AD_REASON_OFFSET;
  if (ERR_GET_LIB(e) != ERR_LIB_SSL) return 0;
  if ((alert >= SSL_AD_BAD_CERTIFICATE && alert <= SSL_AD_ACCESS_DENIED) ||
      alert == SSL_AD_CERTIFICATE_REQUIRED)
    return alert;
  return 0;
}

/* The peer refused our certificate: say so in words, naming the peer by
 * its certificate when it sent one before refusing ours (it does when we
 * dialled: TLS 1.3 servers present theirs first). */
static void untrusted_by_peer(SSL *ssl, int alert, char *out, size_t len) {
  char id[ODO_NODE_ID_HEX + 1];
  X509 *peer = SSL_get0_peer_certificate(ssl);
  int known = peer != NULL && odo_cert_id(peer, id);
  snprintf(out, len,
           "the peer%s%.*s does not trust this node's certificate (it sent TLS "
           "alert \"%s\"): its CA file must hold the CA that signed this "
           "node's certificate",
           known ? " " : "", known ? 16 : 0, known ? id : "",
           SSL_alert_desc_string_long(alert));
  ERR_clear_error();
}

void odo_tls_failure(SSL *ssl, int rc, char *out, size_t len) {
  char ssl_err[256];
  long vr = SSL_get_verify_result(ssl);
  int code = SSL_get_error(ssl, rc);
  int alert = code == SSL_ERROR_SSL ? certificate_alert(ERR_peek_error()) : 0;
  if (alert) {
    untrusted_by_peer(ssl, alert, out, len);
    return;
  }
  if (vr != X509_V_OK) {
    snprintf(out, len, "certificate not trusted: %s",
             X509_verify_cert_error_string(vr));
    ERR_clear_error();
    return;
  }
  if (code == SSL_ERROR_SSL) {
    odo_ssl_error(ssl_err, sizeof ssl_err, "TLS failure");
    snprintf(out, len, "TLS: %s", ssl_err);
    return;
  }
  snprintf(out, len, "TLS: error %d", code);
  ERR_clear_error();
}

static int l_tls_id(lua_State *L) {
  lua_pushstring(L, odo_tls_check(L, 1)->id);
  return 1;
}

static int l_tls_gc(lua_State *L) {
  tls_release(luaL_checkudata(L, 1, ODO_TLS_CLASS));
  return 0;
}

static int l_tls_tostring(lua_State *L) {
  odo_tls *t = luaL_checkudata(L, 1, ODO_TLS_CLASS);
  lua_pushfstring(L, "odo.tls_context (%s)", t->ctx ? t->id : "closed");
  return 1;
}

void odo_tls_open(lua_State *L) {
  static const luaL_Reg methods[] = {{"id", l_tls_id}, {NULL, NULL}};
  odo_newclass(L, ODO_TLS_CLASS, methods, l_tls_gc, l_tls_tostring);
  lua_pushcfunction(L, l_tls_context);
  lua_setfield(L, -2, "tls_context");
}
