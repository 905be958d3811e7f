/* certgen.c - making certificates for `odo cert`: a CA and node
 * certificates with Ed25519 keys, through the OpenSSL C API, and the node
 * id of a certificate file.
 *
 * Outputs are all-or-nothing as far as a file system allows: every file is
 * written to a temporary file in its own folder (a key is never readable by
 * others, not even for an instant), synced, then moved into place. Without
 * `force`, nothing is written when any output exists, and the final step
 * links instead of renaming, so a file that appears meanwhile is not
 * overwritten either.
 */

/***
 * @submodule odo.core
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "identity.h"

#define MAX_PATH 4096
#define MAX_DAYS 36500 /* a hundred years */
#define MAX_CN 64      /* RFC 5280's upper bound for a common name */
#define TMP_SUFFIX ".tmp-XXXXXX"

/* A runtime failure is an odo_err on its way to odo_err_push: nothing is
 * pushed on the Lua stack (which may raise) until every OpenSSL object is
 * freed. */

/* An OpenSSL failure while `doing`, with OpenSSL's own text. */
static int fail_ssl(odo_err *e, const char *doing) {
  char ssl[256];
  return odo_err_set(e, "ESSL", "%s: %s", doing,
              odo_ssl_error(ssl, sizeof ssl, "unknown OpenSSL error"));
}

static const char *errno_name(int err) {
  switch (err) {
  case ENOENT: return "ENOENT";
  case EACCES: case EPERM: return "EACCES";
  case EEXIST: return "EEXIST";
  case ENOSPC: case EDQUOT: return "ENOSPC";
  case ENOTDIR: return "ENOTDIR";
  case EISDIR: return "EISDIR";
  case EROFS: return "EROFS";
  case ENAMETOOLONG: return "ENAMETOOLONG";
  default: return "EIO";
  }
}

/* ---- options ----------------------------------------------------------- */

/* Misuse raises here, before anything is allocated. */

static const char *opt_string(lua_State *L, const char *fn, const char *k,
                              const char *def) {
  const char *s;
  ODO_GETFIELD(L, 1, k);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    if (def == NULL) luaL_error(L, "%s: option '%s' is required", fn, k);
    return def;
  }
  if (lua_type(L, -1) != LUA_TSTRING)
    luaL_error(L, "%s: option '%s' must be a string, got %s", fn, k,
               luaL_typename(L, -1));
  /* the string stays referenced by the option table at index 1 */
  s = lua_tostring(L, -1);
  lua_pop(L, 1);
  return s;
}

static const char *opt_path(lua_State *L, const char *fn, const char *k) {
  const char *p = opt_string(L, fn, k, NULL);
  if (*p == '\0') luaL_error(L, "%s: option '%s' is an empty path", fn, k);
  return p;
}

static int opt_days(lua_State *L, const char *fn, uint64_t def) {
  uint64_t d = odo_fieldu64(L, 1, "days", def);
  if (d < 1 || d > MAX_DAYS)
    luaL_error(L, "%s: option 'days' must be 1 to %d", fn, MAX_DAYS);
  return (int)d;
}

/* A common name is checked as a runtime value: it usually comes from a
 * person typing `--name`. */
static int check_name(const char *name, odo_err *e) {
  size_t n = strlen(name);
  if (n == 0 || n > MAX_CN)
    return odo_err_set(e, "EINVAL",
                "a certificate name is 1 to %d bytes, '%.80s' has %zu",
                MAX_CN, name, n);
  return 1;
}

/* ---- output files ------------------------------------------------------ */

typedef struct out_file {
  const char *path; /* final name */
  mode_t mode;
  BIO *pem;         /* contents */
  char tmp[MAX_PATH + sizeof TMP_SUFFIX];
  int have_tmp, published;
} out_file;

static void out_init(out_file *o, const char *path, mode_t mode) {
  o->path = path;
  o->mode = mode;
  o->pem = NULL;
  o->tmp[0] = '\0';
  o->have_tmp = o->published = 0;
}

/* Removes what a failed call left: temporaries always, and files it
 * created itself when they did not exist before (the no-force case). */
static void out_cleanup(out_file *o, int failed, int force) {
  if (o->have_tmp) unlink(o->tmp);
  o->have_tmp = 0;
  if (failed && o->published && !force) unlink(o->path);
  BIO_free(o->pem);
  o->pem = NULL;
}

/* Without force, every output must be absent before anything is made. */
static int check_absent(out_file *o, size_t n, int force, odo_err *e) {
  struct stat st;
  for (size_t i = 0; i < n; i++) {
    if (strlen(o[i].path) >= MAX_PATH)
      return odo_err_set(e, "ENAMETOOLONG", "path too long: %.100s...", o[i].path);
    if (force) continue;
    if (lstat(o[i].path, &st) == 0)
      return odo_err_set(e, "EEXIST", "%s already exists (--force overwrites it)",
                  o[i].path);
    if (errno != ENOENT)
      return odo_err_set(e, errno_name(errno), "cannot check %s: %s", o[i].path,
                  strerror(errno));
  }
  return 1;
}

static int write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return 0;
    }
    p += w;
    n -= (size_t)w;
  }
  return 1;
}

/* Writes o->pem into a new temporary file next to o->path, with o->mode
 * from the start (mkstemp creates it 0600) and synced. */
static int write_tmp(out_file *o, odo_err *e) {
  char *data = NULL;
  long len = BIO_get_mem_data(o->pem, &data);
  int fd, ok, err;
  snprintf(o->tmp, sizeof o->tmp, "%s" TMP_SUFFIX, o->path);
  if (len <= 0) return odo_err_set(e, "EIO", "nothing to write to %s", o->path);
  fd = mkstemp(o->tmp);
  if (fd < 0)
    return odo_err_set(e, errno_name(errno), "cannot write %s: %s", o->path,
                strerror(errno));
  o->have_tmp = 1;
  ok = fchmod(fd, o->mode) == 0 && write_all(fd, data, (size_t)len) &&
       fsync(fd) == 0;
  err = errno;
  if (close(fd) != 0 && ok) {
    ok = 0;
    err = errno;
  }
  if (!ok)
    return odo_err_set(e, errno_name(err), "cannot write %s: %s", o->path,
                strerror(err));
  return 1;
}

/* Moves the temporary file to its final name. Without force, link(2)
 * refuses to replace a file that appeared since check_absent; file
 * systems without hard links fall back to rename. */
static int publish(out_file *o, int force, odo_err *e) {
  if (!force) {
    if (link(o->tmp, o->path) == 0) {
      o->published = 1;
      return 1;
    }
    if (errno == EEXIST)
      return odo_err_set(e, "EEXIST", "%s already exists (--force overwrites it)",
                  o->path);
    if (errno != EPERM && errno != EOPNOTSUPP && errno != EMLINK &&
        errno != ENOSYS)
      return odo_err_set(e, errno_name(errno), "cannot create %s: %s", o->path,
                  strerror(errno));
  }
  if (rename(o->tmp, o->path) != 0)
    return odo_err_set(e, errno_name(errno), "cannot replace %s: %s", o->path,
                strerror(errno));
  o->have_tmp = 0;
  o->published = 1;
  return 1;
}

/* Makes the renames durable: syncs the folder of each output. */
static void sync_dir(const char *path) {
  char dir[MAX_PATH];
  const char *slash = strrchr(path, '/');
  int fd;
  if (slash == NULL) {
    strcpy(dir, ".");
  } else {
    size_t n = slash == path ? 1 : (size_t)(slash - path);
    memcpy(dir, path, n);
    dir[n] = '\0';
  }
  fd = open(dir, O_RDONLY | O_DIRECTORY);
  if (fd >= 0) {
    (void)fsync(fd);
    close(fd);
  }
}

static int write_outputs(out_file *o, size_t n, int force, odo_err *e) {
  for (size_t i = 0; i < n; i++)
    if (!write_tmp(&o[i], e)) return 0;
  for (size_t i = 0; i < n; i++)
    if (!publish(&o[i], force, e)) return 0;
  for (size_t i = 0; i < n; i++) sync_dir(o[i].path);
  return 1;
}

/* ---- keys and certificates --------------------------------------------- */

static EVP_PKEY *new_key(odo_err *e) {
  EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
  if (k == NULL) fail_ssl(e, "cannot make an Ed25519 key");
  return k;
}

/* The PEM text of a private key (PKCS#8, unencrypted) in secure memory,
 * cleared when freed. */
static int pem_key(EVP_PKEY *k, out_file *o, odo_err *e) {
  o->pem = BIO_new(BIO_s_secmem());
  if (o->pem == NULL ||
      !PEM_write_bio_PrivateKey(o->pem, k, NULL, NULL, 0, NULL, NULL))
    return fail_ssl(e, "cannot encode the private key");
  return 1;
}

static int pem_cert(X509 *x, out_file *o, odo_err *e) {
  o->pem = BIO_new(BIO_s_mem());
  if (o->pem == NULL || !PEM_write_bio_X509(o->pem, x))
    return fail_ssl(e, "cannot encode the certificate");
  return 1;
}

/* A random, positive 128-bit serial number. */
static int set_serial(X509 *x) {
  BIGNUM *bn = BN_new();
  int ok = bn != NULL &&
           BN_rand(bn, 128, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) &&
           (!BN_is_zero(bn) || BN_one(bn)) &&
           BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL;
  BN_free(bn);
  return ok;
}

static int set_cn(X509 *x, const char *cn) {
  X509_NAME *name = X509_NAME_new();
  int ok = name != NULL &&
           X509_NAME_add_entry_by_NID(name, NID_commonName, MBSTRING_UTF8,
                                      (const unsigned char *)cn, -1, -1, 0) &&
           X509_set_subject_name(x, name);
  X509_NAME_free(name);
  return ok;
}

/* A v3 certificate for `key` named `cn`, valid from an hour ago (clocks
 * drift) for `days`, issued by `issuer` (NULL: self-issued). Unsigned and
 * without extensions. */
static X509 *new_cert(EVP_PKEY *key, const char *cn, int days, X509 *issuer,
                      odo_err *e) {
  X509 *x = X509_new();
  int ok = x != NULL && X509_set_version(x, X509_VERSION_3) && set_serial(x) &&
           X509_gmtime_adj(X509_getm_notBefore(x), -3600) != NULL &&
           X509_time_adj_ex(X509_getm_notAfter(x), days, 0, NULL) != NULL &&
           set_cn(x, cn) &&
           X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer)
                                          : X509_get_subject_name(x)) &&
           X509_set_pubkey(x, key);
  if (!ok) {
    X509_free(x);
    fail_ssl(e, "cannot build the certificate");
    return NULL;
  }
  return x;
}

/* Adds one extension written in OpenSSL's configuration syntax. */
static int add_ext(X509 *x, X509 *issuer, int nid, const char *value,
                   odo_err *e) {
  X509V3_CTX ctx;
  X509_EXTENSION *ext;
  int ok;
  memset(&ctx, 0, sizeof ctx);
  X509V3_set_ctx(&ctx, issuer ? issuer : x, x, NULL, NULL, 0);
  ext = X509V3_EXT_nconf_nid(NULL, &ctx, nid, value);
  ok = ext != NULL && X509_add_ext(x, ext, -1);
  X509_EXTENSION_free(ext);
  if (!ok) {
    char doing[128];
    snprintf(doing, sizeof doing, "cannot add the extension %s = %s",
             OBJ_nid2sn(nid), value);
    return fail_ssl(e, doing);
  }
  return 1;
}

static int sign(X509 *x, EVP_PKEY *key, odo_err *e) {
  /* Ed25519 hashes internally: no digest */
  if (X509_sign(x, key, NULL) <= 0)
    return fail_ssl(e, "cannot sign the certificate");
  return 1;
}

/* ---- Lua functions ----------------------------------------------------- */

/***
 * Makes a certificate authority: an Ed25519 key and a self-signed X.509 v3
 * certificate (CA:TRUE, keyCertSign and cRLSign). The key file is created
 * mode 0600, the certificate 0644. Without `force`, nothing is written
 * when either file exists.
 * @function cert_make_ca
 * @tparam table opts `cert` (path of the PEM certificate to write), `key`
 *   (path of the PEM private key to write), `name` (common name, default
 *   "odo-journal CA"), `days` (default 3650), `force` (default false:
 *   overwrite existing files)
 * @treturn boolean true
 * @treturn[2] nil
 * @treturn[2] string "NAME: message" (EEXIST, ENOENT, EACCES, EINVAL,
 *   ESSL, ...)
 * @treturn[2] string NAME
 */
static int l_cert_make_ca(lua_State *L) {
  static const char fn[] = "cert_make_ca";
  const char *cert_path, *key_path, *cn;
  int days, force, ok;
  out_file out[2];
  EVP_PKEY *key = NULL;
  X509 *x = NULL;
  odo_err e = {0};

  luaL_checktype(L, 1, LUA_TTABLE);
  cert_path = opt_path(L, fn, "cert");
  key_path = opt_path(L, fn, "key");
  cn = opt_string(L, fn, "name", "odo-journal CA");
  days = opt_days(L, fn, 3650);
  force = odo_fieldbool(L, 1, "force", 0);
  if (strcmp(cert_path, key_path) == 0)
    return luaL_error(L, "%s: 'cert' and 'key' are the same file", fn);

  out_init(&out[0], key_path, 0600);
  out_init(&out[1], cert_path, 0644);
  ok = check_name(cn, &e) && check_absent(out, 2, force, &e) &&
       (key = new_key(&e)) != NULL &&
       (x = new_cert(key, cn, days, NULL, &e)) != NULL &&
       add_ext(x, NULL, NID_basic_constraints, "critical,CA:TRUE", &e) &&
       add_ext(x, NULL, NID_key_usage, "critical,keyCertSign,cRLSign", &e) &&
       add_ext(x, NULL, NID_subject_key_identifier, "hash", &e) &&
       sign(x, key, &e) && pem_key(key, &out[0], &e) &&
       pem_cert(x, &out[1], &e) && write_outputs(out, 2, force, &e);

  out_cleanup(&out[0], !ok, force);
  out_cleanup(&out[1], !ok, force);
  X509_free(x);
  EVP_PKEY_free(key);
  if (!ok) return odo_err_push(L, &e);
  lua_pushboolean(L, 1);
  return 1;
}

/* Loads the CA and checks that it can sign node certificates. */
static int load_ca(const char *cert_path, const char *key_path, X509 **ca,
                   EVP_PKEY **ca_key, odo_err *e) {
  *ca = odo_read_cert(cert_path, e);
  if (*ca == NULL) return 0;
  *ca_key = odo_read_key(key_path, e);
  if (*ca_key == NULL) return 0;
  if (X509_check_ca(*ca) == 0)
    return odo_err_set(e, "EINVAL",
                "%s is not a CA certificate (it may not sign others)",
                cert_path);
  if (X509_check_private_key(*ca, *ca_key) != 1) {
    ERR_clear_error();
    return odo_err_set(e, "EKEYMISMATCH",
                "the CA key %s does not match the CA certificate %s "
                "(they were not made together)",
                key_path, cert_path);
  }
  return 1;
}

/***
 * Makes a node certificate: an Ed25519 key and an X.509 v3 certificate
 * signed by a CA (CA:FALSE, digitalSignature, TLS client and server
 * authentication). The key file is created mode 0600, the certificate
 * 0644. Without `force`, nothing is written when either file exists.
 * @function cert_make_node
 * @tparam table opts `ca_cert`, `ca_key` (the CA's PEM files), `cert`,
 *   `key` (paths to write), `name` (common name, default "odo node"),
 *   `days` (default 825), `force` (default false)
 * @treturn string the new node's id (64 hex digits)
 * @treturn[2] nil
 * @treturn[2] string "NAME: message" (EEXIST, ENOENT, EKEYMISMATCH,
 *   EINVAL, ESSL, ...)
 * @treturn[2] string NAME
 */
static int l_cert_make_node(lua_State *L) {
  static const char fn[] = "cert_make_node";
  const char *ca_cert_path, *ca_key_path, *cert_path, *key_path, *cn;
  int days, force, ok;
  out_file out[2];
  EVP_PKEY *ca_key = NULL, *key = NULL;
  X509 *ca = NULL, *x = NULL;
  char id[ODO_NODE_ID_HEX + 1];
  odo_err e = {0};

  luaL_checktype(L, 1, LUA_TTABLE);
  ca_cert_path = opt_path(L, fn, "ca_cert");
  ca_key_path = opt_path(L, fn, "ca_key");
  cert_path = opt_path(L, fn, "cert");
  key_path = opt_path(L, fn, "key");
  cn = opt_string(L, fn, "name", "odo node");
  days = opt_days(L, fn, 825);
  force = odo_fieldbool(L, 1, "force", 0);
  if (strcmp(cert_path, key_path) == 0)
    return luaL_error(L, "%s: 'cert' and 'key' are the same file", fn);
  if (strcmp(cert_path, ca_cert_path) == 0 ||
      strcmp(cert_path, ca_key_path) == 0 ||
      strcmp(key_path, ca_cert_path) == 0 || strcmp(key_path, ca_key_path) == 0)
    return luaL_error(L, "%s: the node's files would overwrite the CA's", fn);

  out_init(&out[0], key_path, 0600);
  out_init(&out[1], cert_path, 0644);
  ok = check_name(cn, &e) && check_absent(out, 2, force, &e) &&
       load_ca(ca_cert_path, ca_key_path, &ca, &ca_key, &e) &&
       (key = new_key(&e)) != NULL &&
       (x = new_cert(key, cn, days, ca, &e)) != NULL &&
       add_ext(x, ca, NID_basic_constraints, "critical,CA:FALSE", &e) &&
       add_ext(x, ca, NID_key_usage, "critical,digitalSignature", &e) &&
       add_ext(x, ca, NID_ext_key_usage, "serverAuth,clientAuth", &e) &&
       add_ext(x, ca, NID_subject_key_identifier, "hash", &e) &&
       add_ext(x, ca, NID_authority_key_identifier, "keyid:always", &e) &&
       sign(x, ca_key, &e) &&
       (odo_key_id(key, id) || fail_ssl(&e, "cannot compute the node id")) &&
       pem_key(key, &out[0], &e) && pem_cert(x, &out[1], &e) &&
       write_outputs(out, 2, force, &e);

  out_cleanup(&out[0], !ok, force);
  out_cleanup(&out[1], !ok, force);
  X509_free(x);
  X509_free(ca);
  EVP_PKEY_free(key);
  EVP_PKEY_free(ca_key);
  if (!ok) return odo_err_push(L, &e);
  lua_pushstring(L, id);
  return 1;
}

/***
 * The node id of the first certificate in a PEM file: the hex SHA-256 of
 * its SubjectPublicKeyInfo (DER).
 * @function cert_id
 * @tparam string path
 * @treturn string 64 hex digits
 * @treturn[2] nil
 * @treturn[2] string "NAME: message" (ENOENT, EACCES, EINVAL, ESSL)
 * @treturn[2] string NAME
 */
static int l_cert_id(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  char id[ODO_NODE_ID_HEX + 1];
  odo_err e = {0};
  X509 *x = odo_read_cert(path, &e);
  int ok;
  if (x == NULL) return odo_err_push(L, &e);
  ok = odo_cert_id(x, id) || fail_ssl(&e, "cannot compute the node id");
  X509_free(x);
  if (!ok) return odo_err_push(L, &e);
  lua_pushstring(L, id);
  return 1;
}

void odo_certgen_open(lua_State *L) {
  static const luaL_Reg funcs[] = {
      {"cert_make_ca", l_cert_make_ca},
      {"cert_make_node", l_cert_make_node},
      {"cert_id", l_cert_id},
      {NULL, NULL},
  };
  luaL_setfuncs(L, funcs, 0);
}
