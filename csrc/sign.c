/* sign.c - source signatures over heads and snapshots: the signed bytes,
 * signing with the node's key whatever its type, verifying with a
 * source's public key, and binding a public key to a source id. */

/***
 * @submodule odo.core
 */
#include <openssl/err.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <stdio.h>

#include "identity.h"
#include "sign.h"
#include "tls.h"

static const char HEAD_TAG[] = "odo-journal head v1";         /* + NUL */
static const char SNAP_TAG[] = "odo-journal snapshot v1";     /* + NUL */

/* What both messages begin with: tag (with its NUL), stream, rev, hash. */
static size_t put_common(uint8_t *out, const char *tag, size_t tag_len,
                         const char *stream, size_t len, uint64_t rev,
                         const uint8_t hash[ODO_HASH_LEN]) {
  size_t n = tag_len;
  memcpy(out, tag, tag_len);
  out[n++] = (uint8_t)len;
  memcpy(out + n, stream, len);
  n += len;
  odo_put_be64(out + n, rev);
  n += 8;
  memcpy(out + n, hash, ODO_HASH_LEN);
  return n + ODO_HASH_LEN;
}

size_t odo_head_message(uint8_t *out, const char *stream, size_t len,
                        uint64_t rev, const uint8_t hash[ODO_HASH_LEN]) {
  return put_common(out, HEAD_TAG, sizeof HEAD_TAG, stream, len, rev, hash);
}

size_t odo_snapshot_message(uint8_t *out, const char *stream, size_t len,
                            uint64_t rev, const uint8_t hash[ODO_HASH_LEN],
                            const void *data, size_t data_len,
                            const char *format, size_t format_len) {
  size_t n = put_common(out, SNAP_TAG, sizeof SNAP_TAG, stream, len, rev, hash);
  unsigned int dl;
  if (EVP_Digest(data_len ? data : "", data_len, out + n, &dl, EVP_sha256(), NULL) != 1) {
    ERR_clear_error();
    return 0;
  }
  n += ODO_HASH_LEN;
  out[n++] = (uint8_t)format_len;
  memcpy(out + n, format, format_len);
  return n + format_len;
}

/* The digest and padding each key type signs with. */
static int setup_ctx(EVP_PKEY *key, EVP_MD_CTX *md, int verify) {
  EVP_PKEY_CTX *pctx = NULL;
  int id = EVP_PKEY_get_base_id(key);
  const EVP_MD *digest = (id == EVP_PKEY_ED25519 || id == EVP_PKEY_ED448)
                             ? NULL
                             : EVP_sha256();
  int ok = verify ? EVP_DigestVerifyInit(md, &pctx, digest, NULL, key)
                  : EVP_DigestSignInit(md, &pctx, digest, NULL, key);
  if (ok != 1) return 0;
  if (id == EVP_PKEY_RSA || id == EVP_PKEY_RSA_PSS) {
    if (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
        EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) != 1)
      return 0;
  }
  return 1;
}

int odo_sign(EVP_PKEY *key, const uint8_t *msg, size_t n, uint8_t *sig,
             size_t *siglen, odo_err *e) {
  char ssl[256];
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  int ok = md && setup_ctx(key, md, 0) &&
           EVP_DigestSign(md, sig, siglen, msg, n) == 1;
  EVP_MD_CTX_free(md);
  if (!ok)
    return odo_err_set(e, "ESIGN", "signing failed: %s",
                       odo_ssl_error(ssl, sizeof ssl, "unknown error"));
  return 1;
}

int odo_sign_snapshot(EVP_PKEY *key, const char *stream, size_t len,
                      uint64_t rev, const uint8_t hash[ODO_HASH_LEN],
                      const void *data, size_t n, const char *format,
                      size_t format_len, uint8_t *sig, size_t *siglen,
                      odo_err *e) {
  uint8_t msg[ODO_SIGNED_MAX];
  size_t mlen;
  if (format_len > 255 || len > ODO_MAX_STREAM_ID)
    return odo_err_set(e, "EINVAL", "a snapshot's format or stream id is too long");
  mlen = odo_snapshot_message(msg, stream, len, rev, hash, data, n, format, format_len);
  if (mlen == 0) return odo_err_set(e, "ESIGN", "hashing a snapshot failed");
  return odo_sign(key, msg, mlen, sig, siglen, e);
}

int odo_verify(EVP_PKEY *pub, const uint8_t *msg, size_t n,
               const uint8_t *sig, size_t siglen) {
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  int ok = md && setup_ctx(pub, md, 1) &&
           EVP_DigestVerify(md, sig, siglen, msg, n) == 1;
  EVP_MD_CTX_free(md);
  ERR_clear_error();
  return ok;
}

EVP_PKEY *odo_source_key(const uint8_t *der, size_t n, const char *source_id,
                         size_t id_len, odo_err *e) {
  const unsigned char *p = der;
  EVP_PKEY *key = d2i_PUBKEY(NULL, &p, (long)n);
  char id[ODO_NODE_ID_HEX + 1] = "(no id)";
  if (key == NULL || p != der + n) {
    EVP_PKEY_free(key);
    ERR_clear_error();
    odo_err_set(e, "EKEY", "not a public key (%zu bytes of DER)", n);
    return NULL;
  }
  if (!odo_key_id(key, id) || id_len != ODO_NODE_ID_HEX ||
      memcmp(id, source_id, ODO_NODE_ID_HEX) != 0) {
    EVP_PKEY_free(key);
    odo_err_set(e, "EKEY",
                "the key offered for source %.*s is the key of %.16s...",
                (int)(id_len > 64 ? 64 : id_len), source_id, id);
    return NULL;
  }
  return key;
}

/* ---- Lua ------------------------------------------------------------------ */

static const uint8_t *check_hash(lua_State *L, int idx) {
  size_t n;
  const char *h = luaL_checklstring(L, idx, &n);
  if (n != ODO_HASH_LEN) luaL_argerror(L, idx, "a hash is 32 bytes");
  return (const uint8_t *)h;
}

static const char *check_stream_id(lua_State *L, int idx, size_t *len) {
  const char *s = luaL_checklstring(L, idx, len);
  if (*len == 0 || *len > ODO_MAX_STREAM_ID) luaL_argerror(L, idx, "a stream id is 1 to 255 bytes");
  return s;
}

/***
 * The bytes a signed head covers (docs/PROTOCOL.md).
 * @function head_message
 * @tparam string stream
 * @tparam integer rev
 * @tparam string hash 32 bytes
 */
static int l_head_message(lua_State *L) {
  size_t len;
  const char *stream = check_stream_id(L, 1, &len);
  uint64_t rev = odo_checku64(L, 2, "rev");
  uint8_t out[ODO_SIGNED_MAX];
  size_t n = odo_head_message(out, stream, len, rev, check_hash(L, 3));
  lua_pushlstring(L, (const char *)out, n);
  return 1;
}

/***
 * The bytes a snapshot signature covers (docs/PROTOCOL.md).
 * @function snapshot_message
 * @tparam string stream
 * @tparam integer rev
 * @tparam string hash h(rev), 32 bytes
 * @tparam string data the snapshot's bytes
 * @tparam string format
 */
static int l_snapshot_message(lua_State *L) {
  size_t len, dlen, flen;
  const char *stream = check_stream_id(L, 1, &len);
  uint64_t rev = odo_checku64(L, 2, "rev");
  const uint8_t *hash = check_hash(L, 3);
  const char *data = luaL_checklstring(L, 4, &dlen);
  const char *format = luaL_checklstring(L, 5, &flen);
  uint8_t out[ODO_SIGNED_MAX];
  size_t n;
  if (flen > 255) return luaL_argerror(L, 5, "a format is at most 255 bytes");
  n = odo_snapshot_message(out, stream, len, rev, hash, data, dlen, format, flen);
  if (n == 0) return luaL_error(L, "hashing a snapshot failed");
  lua_pushlstring(L, (const char *)out, n);
  return 1;
}

/***
 * Verifies a signature with a public key given as SubjectPublicKeyInfo
 * DER.
 * @function verify
 * @tparam string spki
 * @tparam string msg
 * @tparam string sig
 * @treturn boolean
 */
static int l_verify(lua_State *L) {
  size_t kl, ml, sl;
  const unsigned char *k = (const unsigned char *)luaL_checklstring(L, 1, &kl);
  const char *msg = luaL_checklstring(L, 2, &ml);
  const char *sig = luaL_checklstring(L, 3, &sl);
  EVP_PKEY *pub = d2i_PUBKEY(NULL, &k, (long)kl);
  if (pub == NULL) {
    ERR_clear_error();
    return odo_fail(L, "EKEY", "not a public key");
  }
  lua_pushboolean(L, odo_verify(pub, (const uint8_t *)msg, ml, (const uint8_t *)sig, sl));
  EVP_PKEY_free(pub);
  return 1;
}

/***
 * Signs bytes with the context's private key (see sign.h for the scheme
 * per key type).
 * @function tls_context:sign
 */
static int l_tls_sign(lua_State *L) {
  odo_tls *t = odo_tls_check(L, 1);
  size_t n;
  const char *msg = luaL_checklstring(L, 2, &n);
  uint8_t sig[ODO_MAX_SIG];
  size_t sl = sizeof sig;
  odo_err e = {0};
  if (!odo_sign(t->key, (const uint8_t *)msg, n, sig, &sl, &e)) return odo_err_push(L, &e);
  lua_pushlstring(L, (const char *)sig, sl);
  return 1;
}

/***
 * The context's public key as SubjectPublicKeyInfo DER.
 * @function tls_context:public_key
 */
static int l_tls_public_key(lua_State *L) {
  odo_tls *t = odo_tls_check(L, 1);
  unsigned char *der = NULL;
  int n = i2d_PUBKEY(t->key, &der);
  if (n <= 0) return luaL_error(L, "cannot encode the public key");
  lua_pushlstring(L, (const char *)der, (size_t)n);
  OPENSSL_free(der);
  return 1;
}

void odo_sign_open(lua_State *L) {
  static const luaL_Reg fns[] = {{"head_message", l_head_message},
                                 {"snapshot_message", l_snapshot_message},
                                 {"verify", l_verify},
                                 {NULL, NULL}};
  luaL_setfuncs(L, fns, 0);
  /* methods on TLS contexts */
  luaL_getmetatable(L, ODO_TLS_CLASS);
  lua_getfield(L, -1, "__index");
  lua_pushcfunction(L, l_tls_sign);
  lua_setfield(L, -2, "sign");
  lua_pushcfunction(L, l_tls_public_key);
  lua_setfield(L, -2, "public_key");
  lua_pop(L, 2);
}
