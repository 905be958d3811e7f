/* identity.h - who a node is: the hex SHA-256 of its certificate's
 * SubjectPublicKeyInfo (DER). Shared by TLS sessions, certificate making
 * and signing. */
#ifndef ODO_IDENTITY_H
#define ODO_IDENTITY_H

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "odo.h"

#define ODO_NODE_ID_HEX 64 /* characters of a node id */

/* The node id of a public key / certificate into out (65 bytes, NUL
 * terminated). Return 0 on failure (an OpenSSL error is queued). */
int odo_key_id(EVP_PKEY *key, char out[ODO_NODE_ID_HEX + 1]);
int odo_cert_id(X509 *cert, char out[ODO_NODE_ID_HEX + 1]);

/* The text of the most recent OpenSSL error (and clears the queue), or
 * `fallback` when the queue is empty. */
const char *odo_ssl_error(char *buf, size_t len, const char *fallback);

/* Reads the first certificate / a private key from a PEM file. NULL with
 * a message in err (one line a person can act on) on failure. */
X509 *odo_read_cert(const char *path, odo_err *e);
EVP_PKEY *odo_read_key(const char *path, odo_err *e);

#endif
