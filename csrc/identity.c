/* identity.c - node ids from public keys, PEM loading with errors a person
 * can act on, and OpenSSL's error queue as text. */
#include <errno.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <unistd.h>

#include "identity.h"

const char *odo_ssl_error(char *buf, size_t len, const char *fallback) {
  unsigned long code = ERR_get_error();
  unsigned long more;
  if (code == 0) {
    snprintf(buf, len, "%s", fallback);
    return buf;
  }
  /* the first error says what failed; the rest are call sites */
  ERR_error_string_n(code, buf, len);
  while ((more = ERR_get_error()) != 0) (void)more;
  return buf;
}

int odo_key_id(EVP_PKEY *key, char out[ODO_NODE_ID_HEX + 1]) {
  unsigned char *der = NULL, md[32];
  unsigned int mdlen = 0;
  int n = i2d_PUBKEY(key, &der);
  int ok;
  if (n <= 0) return 0;
  ok = EVP_Digest(der, (size_t)n, md, &mdlen, EVP_sha256(), NULL);
  OPENSSL_free(der);
  if (!ok || mdlen != 32) return 0;
  odo_hex(md, 32, out);
  return 1;
}

int odo_cert_id(X509 *cert, char out[ODO_NODE_ID_HEX + 1]) {
  EVP_PKEY *key = X509_get0_pubkey(cert);
  return key != NULL && odo_key_id(key, out);
}

/* Why reading a PEM file failed, as a NAME: access(2) tells a missing or
 * unreadable file from one with the wrong contents. */
static const char *read_errname(const char *path) {
  if (access(path, R_OK) == 0) return "EINVAL";
  switch (errno) {
  case ENOENT: return "ENOENT";
  case EACCES: case EPERM: return "EACCES";
  case ENOTDIR: return "ENOTDIR";
  case ENAMETOOLONG: return "ENAMETOOLONG";
  default: return "EIO";
  }
}

static FILE *open_pem(const char *path, const char *what, odo_err *e) {
  FILE *f = fopen(path, "r");
  if (f == NULL)
    odo_err_set(e, read_errname(path), "cannot read %s %s: %s", what, path,
                strerror(errno));
  return f;
}

X509 *odo_read_cert(const char *path, odo_err *e) {
  char ssl[256];
  FILE *f = open_pem(path, "certificate", e);
  X509 *x;
  if (f == NULL) return NULL;
  x = PEM_read_X509(f, NULL, NULL, NULL);
  fclose(f);
  if (x == NULL)
    odo_err_set(e, "EINVAL", "%s holds no PEM certificate (%s)", path,
                odo_ssl_error(ssl, sizeof ssl, "no certificate found"));
  return x;
}

EVP_PKEY *odo_read_key(const char *path, odo_err *e) {
  char ssl[256];
  FILE *f = open_pem(path, "key", e);
  EVP_PKEY *k;
  if (f == NULL) return NULL;
  k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
  fclose(f);
  if (k == NULL)
    odo_err_set(e, "EINVAL", "%s holds no unencrypted PEM private key (%s)",
                path, odo_ssl_error(ssl, sizeof ssl, "no key found"));
  return k;
}
