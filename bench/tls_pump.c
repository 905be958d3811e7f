/* tls_pump.c - the least a TLS transport must do, in plain C: bulk frames
 * over TLS 1.3 between two processes on loopback, with blocking sockets
 * and nothing between OpenSSL and the socket.
 *
 *   tls_pump CA SERVER_CERT SERVER_KEY CLIENT_CERT CLIENT_KEY FRAMES BYTES
 *
 * Binds 127.0.0.1 on a free port and forks: the child is the server (the
 * receiver), the parent the client (the sender). Both speak TLS 1.3 only,
 * with OpenSSL's default suites, mutual authentication against CA, no
 * session tickets, and TCP_NODELAY, as odo's transport does. The client
 * sends FRAMES frames of BYTES bytes each, header included (u32be len |
 * u8 type 0x20 | payload, as in docs/PROTOCOL.md), each frame with one
 * SSL_write, so the records on the wire are the transport's: 16 KiB
 * records, the last one of a frame shorter. The server reads with
 * SSL_read in 16 KiB chunks (the session's READ_CHUNK), with read-ahead
 * into a 64 KiB buffer (libuv reads 64 KiB at a time), walks the frame
 * headers, and once it has all frames replies one byte; the client times
 * its first write to that reply. Prints, on stdout:
 *   server_pid <pid>                          at once
 *   server <frames> <bytes> <cipher> <RssAnon kB>   from the server, at its end
 *   <frames> <bytes> <seconds> <cipher>        from the client, last
 * Any failure: the OpenSSL error text on stderr and a non-zero exit. */
#include <arpa/inet.h>
#include <errno.h>
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

#define FRAME_HEADER 5
#define FRAME_TYPE 0x20
#define MAX_FRAME (16u << 20) /* the session's default frame limit */
#define READ_CHUNK (16u << 10)
#define READ_AHEAD (64u << 10)

static pid_t child = 0; /* the server, seen from the client */
static const char *role = "client";

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what) {
  fprintf(stderr, "tls_pump %s: %s", role, what);
  if (errno) fprintf(stderr, " (%s)", strerror(errno));
  fprintf(stderr, "\n");
  ERR_print_errors_fp(stderr);
  if (child > 0) kill(child, SIGTERM);
  exit(1);
}

/* A failed SSL_* call on ssl: names the call and SSL_get_error's code. */
static void die_ssl(SSL *ssl, int rc, const char *call) {
  char msg[160];
  int code = SSL_get_error(ssl, rc);
  if (code != SSL_ERROR_SYSCALL) errno = 0;
  snprintf(msg, sizeof msg, "%s failed (SSL_get_error %d%s)", call, code,
           code == SSL_ERROR_ZERO_RETURN ? ": the peer closed" : "");
  die(msg);
}

static SSL_CTX *context(int server, const char *ca, const char *cert,
                        const char *key) {
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
  if (server) {
    SSL_CTX_set_read_ahead(ctx, 1);
    SSL_CTX_set_default_read_buffer_len(ctx, READ_AHEAD);
  }
  return ctx;
}

static SSL *engine(SSL_CTX *ctx, int fd) {
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

static long rss_anon_kb(void) {
  char line[256];
  long kb = -1;
  FILE *f = fopen("/proc/self/status", "r");
  if (f == NULL) return -1;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "RssAnon: %ld", &kb) == 1) break;
  fclose(f);
  return kb;
}

/* Receives n frames of the given size, walking their headers, then
 * replies one byte and waits for the client to close. */
static void serve(int lfd, SSL_CTX *ctx, long n, size_t frame) {
  static uint8_t buf[READ_CHUNK];
  uint8_t hdr[FRAME_HEADER];
  size_t hlen = 0, left = 0, got;
  long frames = 0;
  uint64_t bytes = 0;
  int rc, fd;
  SSL *ssl;
  errno = 0;
  fd = accept(lfd, NULL, NULL);
  if (fd < 0) die("accept");
  close(lfd);
  ssl = engine(ctx, fd);
  if ((rc = SSL_accept(ssl)) != 1) die_ssl(ssl, rc, "SSL_accept");
  while (frames < n) {
    size_t pos = 0;
    if ((rc = SSL_read_ex(ssl, buf, sizeof buf, &got)) != 1)
      die_ssl(ssl, rc, "SSL_read_ex");
    bytes += got;
    while (pos < got) {
      if (hlen < FRAME_HEADER) {
        hdr[hlen++] = buf[pos++];
        if (hlen == FRAME_HEADER) {
          uint32_t len = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 |
                         (uint32_t)hdr[2] << 8 | hdr[3];
          errno = 0;
          if (len == 0 || len > MAX_FRAME) die("a frame of a bad length");
          if (hdr[4] != FRAME_TYPE) die("a frame of an unexpected type");
          if (len - 1 + FRAME_HEADER != frame) die("a frame of an unexpected size");
          left = len - 1;
        }
      } else {
        size_t take = got - pos < left ? got - pos : left;
        pos += take;
        left -= take;
      }
      if (hlen == FRAME_HEADER && left == 0) {
        frames++;
        hlen = 0;
      }
    }
  }
  errno = 0;
  if (hlen != 0 || bytes != (uint64_t)n * frame) die("more bytes than frames");
  if ((rc = SSL_write_ex(ssl, "k", 1, &got)) != 1) die_ssl(ssl, rc, "SSL_write_ex");
  rc = SSL_read_ex(ssl, buf, sizeof buf, &got); /* the client's close_notify */
  if (rc == 1 || SSL_get_error(ssl, rc) != SSL_ERROR_ZERO_RETURN)
    die_ssl(ssl, rc, "waiting for close_notify");
  if ((rc = SSL_shutdown(ssl)) != 1) die_ssl(ssl, rc, "SSL_shutdown");
  printf("server %ld %llu %s %ld\n", frames, (unsigned long long)bytes,
         SSL_get_cipher_name(ssl), rss_anon_kb());
  fflush(stdout);
  SSL_free(ssl);
  close(fd);
}

/* Sends n frames and times them to the server's one-byte reply. */
static void send_frames(uint16_t port, SSL_CTX *ctx, long n, size_t frame) {
  struct sockaddr_in sa;
  uint8_t *buf = malloc(frame), reply;
  size_t done;
  double t0, secs;
  int rc, status, fd = socket(AF_INET, SOCK_STREAM, 0);
  SSL *ssl;
  errno = 0;
  if (buf == NULL) die("out of memory");
  if (fd < 0) die("socket");
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) die("connect");
  ssl = engine(ctx, fd);
  if ((rc = SSL_connect(ssl)) != 1) die_ssl(ssl, rc, "SSL_connect");
  buf[0] = (uint8_t)((frame - 4) >> 24);
  buf[1] = (uint8_t)((frame - 4) >> 16);
  buf[2] = (uint8_t)((frame - 4) >> 8);
  buf[3] = (uint8_t)(frame - 4);
  buf[4] = FRAME_TYPE;
  memset(buf + FRAME_HEADER, 'x', frame - FRAME_HEADER);
  t0 = now();
  for (long i = 0; i < n; i++)
    if ((rc = SSL_write_ex(ssl, buf, frame, &done)) != 1 || done != frame)
      die_ssl(ssl, rc, "SSL_write_ex");
  if ((rc = SSL_read_ex(ssl, &reply, 1, &done)) != 1) die_ssl(ssl, rc, "SSL_read_ex");
  secs = now() - t0;
  if ((rc = SSL_shutdown(ssl)) < 0) die_ssl(ssl, rc, "SSL_shutdown");
  errno = 0;
  if (waitpid(child, &status, 0) != child) die("waitpid");
  child = 0;
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) die("the server failed");
  printf("%ld %llu %.6f %s\n", n, (unsigned long long)n * frame, secs,
         SSL_get_cipher_name(ssl));
  SSL_free(ssl);
  close(fd);
  free(buf);
}

int main(int argc, char **argv) {
  struct sockaddr_in sa;
  socklen_t salen = sizeof sa;
  long n;
  size_t frame;
  int lfd;
  if (argc != 8) {
    fprintf(stderr, "usage: tls_pump CA SERVER_CERT SERVER_KEY CLIENT_CERT "
                    "CLIENT_KEY FRAMES BYTES\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN); /* a peer that went away is an error, not a signal */
  n = atol(argv[6]);
  frame = (size_t)atol(argv[7]);
  if (n < 1 || frame <= FRAME_HEADER || frame - 4 > MAX_FRAME) {
    fprintf(stderr, "tls_pump: FRAMES must be positive and BYTES between 6 and %u\n",
            MAX_FRAME + 4);
    return 2;
  }
  errno = 0;
  lfd = socket(AF_INET, SOCK_STREAM, 0);
  if (lfd < 0) die("socket");
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(lfd, (struct sockaddr *)&sa, sizeof sa) != 0) die("bind");
  if (listen(lfd, 1) != 0) die("listen");
  if (getsockname(lfd, (struct sockaddr *)&sa, &salen) != 0) die("getsockname");
  fflush(stdout);
  child = fork();
  if (child < 0) die("fork");
  if (child == 0) {
    role = "server";
    prctl(PR_SET_PDEATHSIG, SIGTERM); /* never outlive the client */
    if (getppid() == 1) return 1;
    serve(lfd, context(1, argv[1], argv[2], argv[3]), n, frame);
    return 0;
  }
  close(lfd);
  printf("server_pid %ld\n", (long)child);
  fflush(stdout);
  send_frames(ntohs(sa.sin_port), context(0, argv[1], argv[4], argv[5]), n, frame);
  return 0;
}
