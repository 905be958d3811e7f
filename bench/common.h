/* common.h - what the C benchmarks share: a monotonic clock, big-endian
 * integers, CRC-32C, the store's LevelDB options, error exits, and the
 * TLS 1.3 connection over loopback that tls_pump.c and sync_pipe.c set up
 * as odo's transport does. The Makefile builds each benchmark from its one
 * .c file, so everything here is static, and inline so that a program
 * need not use all of it. */
#ifndef ODO_BENCH_COMMON_H
#define ODO_BENCH_COMMON_H

#include <arpa/inet.h>
#include <errno.h>
#include <leveldb/c.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- errors -------------------------------------------------------------- */

/* Error messages read "<prog> <role>: <what>"; main sets both. child is the
 * forked other end, stopped when this process dies. */
static const char *prog = "bench";
static const char *role = "";
static pid_t child = 0;

/* Reports what failed (with errno's text unless errno is 0, and OpenSSL's
 * error queue), stops the child and exits 1. */
static inline void die(const char *what) {
  fprintf(stderr, "%s %s: %s", prog, role, what);
  if (errno) fprintf(stderr, " (%s)", strerror(errno));
  fprintf(stderr, "\n");
  ERR_print_errors_fp(stderr);
  if (child > 0) kill(child, SIGTERM);
  exit(1);
}

/* A failed SSL_* call on ssl: names the call and SSL_get_error's code. */
static inline void die_ssl(SSL *ssl, int rc, const char *call) {
  char msg[160];
  int code = SSL_get_error(ssl, rc);
  if (code != SSL_ERROR_SYSCALL) errno = 0;
  snprintf(msg, sizeof msg, "%s failed (SSL_get_error %d%s)", call, code,
           code == SSL_ERROR_ZERO_RETURN ? ": the peer closed" : "");
  die(msg);
}

/* ---- clock, integers, checksums, memory ------------------------------------ */

/* Seconds on the monotonic clock: what the benchmarks time with. */
static inline double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Big-endian integers, as the store's keys and records and the wire use. */
static inline void put_be32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

static inline void put_be64(uint8_t *p, uint64_t v) {
  for (int i = 7; i >= 0; i--) {
    p[i] = (uint8_t)v;
    v >>= 8;
  }
}

static inline uint32_t get_be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline uint64_t get_be64(const uint8_t *p) {
  return (uint64_t)get_be32(p) << 32 | get_be32(p + 4);
}

/* CRC-32C with the SSE 4.2 instruction, as the store checks its records
 * (docs/STORAGE.md); crc32c(crc32c(0, a, na), b, nb) covers a | b. */
__attribute__((target("sse4.2"))) static inline uint32_t crc32c(uint32_t crc,
                                                            const uint8_t *p,
                                                            size_t n) {
  uint64_t c = ~crc;
  while (n >= 8) {
    uint64_t w;
    memcpy(&w, p, 8);
    c = __builtin_ia32_crc32di(c, w);
    p += 8;
    n -= 8;
  }
  crc = (uint32_t)c;
  while (n--) crc = __builtin_ia32_crc32qi(crc, *p++);
  return ~crc;
}

/* This process's anonymous resident memory (kB), or -1: the peak memory
 * the benchmarks report leaves out LevelDB's mapped files. */
static inline long rss_anon_kb(void) {
  char line[256];
  long kb = -1;
  FILE *f = fopen("/proc/self/status", "r");
  if (f == NULL) return -1;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "RssAnon: %ld", &kb) == 1) break;
  fclose(f);
  return kb;
}

/* ---- the store ------------------------------------------------------------- */

/* The LevelDB options the store opens its database with. They live as long
 * as the process: it is short. */
static inline leveldb_options_t *store_options(void) {
  leveldb_options_t *o = leveldb_options_create();
  leveldb_options_set_create_if_missing(o, 1);
  leveldb_options_set_paranoid_checks(o, 1);
  leveldb_options_set_cache(o, leveldb_cache_create_lru(8u << 20));
  leveldb_options_set_filter_policy(o, leveldb_filterpolicy_create_bloom(10));
  leveldb_options_set_write_buffer_size(o, 8u << 20);
  leveldb_options_set_max_open_files(o, 256);
  return o;
}

/* ---- TLS 1.3 over loopback ----------------------------------------------------- */

/* A context as odo's transport makes one: TLS 1.3 only with OpenSSL's
 * default suites, mutual authentication against ca, no session tickets.
 * With read_ahead > 0, reads go through a read-ahead buffer of that many
 * bytes (libuv reads 64 KiB at a time). */
static inline SSL_CTX *tls_context(int server, const char *ca, const char *cert,
                                   const char *key, long read_ahead) {
  SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
  errno = 0;
  if (ctx == NULL) die("SSL_CTX_new");
  if (!SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) ||
      !SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION))
    die("cannot restrict the context to TLS 1.3");
  if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1)
    die("SSL_CTX_use_certificate_chain_file");
  if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1)
    die("SSL_CTX_use_PrivateKey_file");
  if (SSL_CTX_check_private_key(ctx) != 1) die("the key does not match the certificate");
  if (SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1)
    die("SSL_CTX_load_verify_locations");
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
  if (SSL_CTX_set_num_tickets(ctx, 0) != 1) die("SSL_CTX_set_num_tickets");
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
  if (read_ahead > 0) {
    SSL_CTX_set_read_ahead(ctx, 1);
    SSL_CTX_set_default_read_buffer_len(ctx, (size_t)read_ahead);
  }
  return ctx;
}

/* A TLS engine on the connected socket fd, with TCP_NODELAY as odo sets. */
static inline SSL *engine(SSL_CTX *ctx, int fd) {
  int one = 1;
  SSL *ssl;
  errno = 0;
  if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0)
    die("setsockopt TCP_NODELAY");
  ssl = SSL_new(ctx);
  if (ssl == NULL) die("SSL_new");
  if (SSL_set_fd(ssl, fd) != 1) die("SSL_set_fd");
  return ssl;
}

/* Reads exactly n bytes. */
static inline void read_full(SSL *ssl, uint8_t *p, size_t n) {
  while (n > 0) {
    size_t got;
    int rc = SSL_read_ex(ssl, p, n, &got);
    if (rc != 1) die_ssl(ssl, rc, "SSL_read_ex");
    p += got;
    n -= got;
  }
}

/* Writes n bytes with one SSL_write: one frame or chunk, its own records. */
static inline void write_full(SSL *ssl, const uint8_t *p, size_t n) {
  size_t done;
  int rc = SSL_write_ex(ssl, p, n, &done);
  if (rc != 1 || done != n) die_ssl(ssl, rc, "SSL_write_ex");
}

/* The address 127.0.0.1:port (0: any free port). */
static inline struct sockaddr_in loopback(uint16_t port) {
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return sa;
}

/* A socket listening on 127.0.0.1 on a free port, which goes to *port. */
static inline int listen_loopback(uint16_t *port) {
  struct sockaddr_in sa = loopback(0);
  socklen_t salen = sizeof sa;
  int lfd;
  errno = 0;
  if ((lfd = socket(AF_INET, SOCK_STREAM, 0)) < 0) die("socket");
  if (bind(lfd, (struct sockaddr *)&sa, sizeof sa) != 0) die("bind");
  if (listen(lfd, 1) != 0) die("listen");
  if (getsockname(lfd, (struct sockaddr *)&sa, &salen) != 0) die("getsockname");
  *port = ntohs(sa.sin_port);
  return lfd;
}

/* Accepts one connection on lfd, closes lfd and does the server's side of
 * the handshake; the socket goes to *fd. */
static inline SSL *tls_accept(int lfd, SSL_CTX *ctx, int *fd) {
  SSL *ssl;
  int rc;
  errno = 0;
  if ((*fd = accept(lfd, NULL, NULL)) < 0) die("accept");
  close(lfd);
  ssl = engine(ctx, *fd);
  if ((rc = SSL_accept(ssl)) != 1) die_ssl(ssl, rc, "SSL_accept");
  return ssl;
}

/* Connects to 127.0.0.1:port and does the client's side of the handshake;
 * the socket goes to *fd. */
static inline SSL *tls_connect(uint16_t port, SSL_CTX *ctx, int *fd) {
  struct sockaddr_in sa = loopback(port);
  SSL *ssl;
  int rc;
  errno = 0;
  if ((*fd = socket(AF_INET, SOCK_STREAM, 0)) < 0) die("socket");
  if (connect(*fd, (struct sockaddr *)&sa, sizeof sa) != 0) die("connect");
  ssl = engine(ctx, *fd);
  if ((rc = SSL_connect(ssl)) != 1) die_ssl(ssl, rc, "SSL_connect");
  return ssl;
}

/* Forks the other end. The child takes the role peer, dies with its parent
 * and gets 1. The parent closes lfd (the child's to accept on), prints
 * "<label> <child's pid>" at once and gets 0. */
static inline int fork_peer(int lfd, const char *peer, const char *label) {
  fflush(stdout);
  child = fork();
  if (child < 0) die("fork");
  if (child == 0) {
    role = peer;
    prctl(PR_SET_PDEATHSIG, SIGTERM); /* never outlive the parent */
    if (getppid() == 1) exit(1);
    return 1;
  }
  close(lfd);
  printf("%s %ld\n", label, (long)child);
  fflush(stdout);
  return 0;
}

/* The accepting end's last step: waits for the other end's close_notify
 * and answers it. */
static inline void await_close(SSL *ssl) {
  uint8_t byte;
  size_t got;
  int rc = SSL_read_ex(ssl, &byte, 1, &got);
  if (rc == 1 || SSL_get_error(ssl, rc) != SSL_ERROR_ZERO_RETURN)
    die_ssl(ssl, rc, "waiting for close_notify");
  if ((rc = SSL_shutdown(ssl)) != 1) die_ssl(ssl, rc, "SSL_shutdown");
}

/* The connecting end's last step: sends close_notify, then waits for the
 * child to exit; dies with failed unless it exited with status 0. */
static inline void close_and_reap(SSL *ssl, const char *failed) {
  int rc, status;
  if ((rc = SSL_shutdown(ssl)) < 0) die_ssl(ssl, rc, "SSL_shutdown");
  errno = 0;
  if (waitpid(child, &status, 0) != child) die("waitpid");
  child = 0;
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) die(failed);
}

#endif
