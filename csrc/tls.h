/* tls.h - TLS 1.3 contexts with mutual authentication, and the TLS engine
 * of one connection over memory BIOs (ciphertext in, ciphertext out).
 *
 * Trust: a peer certificate is accepted when it chains to a CA in the
 * node's CA bundle, or when it is self-signed and its public key is the
 * public key of a self-signed certificate in the bundle (the seed's
 * `openssl x509 -req -signkey` certificates, which often share a subject
 * name and then fail plain chain verification). Identity is the key:
 * there is no hostname check, and the node id is the hex SHA-256 of the
 * SubjectPublicKeyInfo. */
#ifndef ODO_TLS_H
#define ODO_TLS_H

#include <openssl/ssl.h>

#include "identity.h"

#define ODO_TLS_CLASS "odo.tls_context"

typedef struct odo_tls {
  SSL_CTX *ctx;
  EVP_PKEY *key; /* our private key (signing, later) */
  char id[ODO_NODE_ID_HEX + 1];
  char (*trusted)[ODO_NODE_ID_HEX + 1]; /* ids of self-signed bundle certs */
  size_t ntrusted;
} odo_tls;

/* The checked argument at idx; raises if it is not a live context. */
odo_tls *odo_tls_check(lua_State *L, int idx);

/* A new client or server TLS engine over two memory BIOs; NULL with err
 * filled on failure. */
SSL *odo_tls_engine(odo_tls *t, int server, odo_err *e);

/* After a failed handshake step: the reason, from the verification result
 * or OpenSSL's error queue, as one line. */
void odo_tls_failure(SSL *ssl, int rc, char *out, size_t len);

void odo_tls_open(lua_State *L);

#endif
