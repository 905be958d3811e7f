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
#include "common.h"

#define FRAME_HEADER 5
#define FRAME_TYPE 0x20
#define MAX_FRAME (16u << 20) /* the session's default frame limit */
#define READ_CHUNK (16u << 10)
#define READ_AHEAD (64u << 10)

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
  ssl = tls_accept(lfd, ctx, &fd);
  while (frames < n) {
    size_t pos = 0;
    if ((rc = SSL_read_ex(ssl, buf, sizeof buf, &got)) != 1)
      die_ssl(ssl, rc, "SSL_read_ex");
    bytes += got;
    while (pos < got) {
      if (hlen < FRAME_HEADER) {
        hdr[hlen++] = buf[pos++];
        if (hlen == FRAME_HEADER) {
          uint32_t len = get_be32(hdr);
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
  write_full(ssl, (const uint8_t *)"k", 1);
  await_close(ssl);
  printf("server %ld %llu %s %ld\n", frames, (unsigned long long)bytes,
         SSL_get_cipher_name(ssl), rss_anon_kb());
  fflush(stdout);
  SSL_free(ssl);
  close(fd);
}

/* Sends n frames and times them to the server's one-byte reply. */
static void send_frames(uint16_t port, SSL_CTX *ctx, long n, size_t frame) {
  uint8_t *buf = malloc(frame), reply;
  double t0, secs;
  int fd;
  SSL *ssl;
  errno = 0;
  if (buf == NULL) die("out of memory");
  ssl = tls_connect(port, ctx, &fd);
  put_be32(buf, (uint32_t)(frame - 4));
  buf[4] = FRAME_TYPE;
  memset(buf + FRAME_HEADER, 'x', frame - FRAME_HEADER);
  t0 = now();
  for (long i = 0; i < n; i++) write_full(ssl, buf, frame);
  read_full(ssl, &reply, 1);
  secs = now() - t0;
  close_and_reap(ssl, "the server failed");
  printf("%ld %llu %.6f %s\n", n, (unsigned long long)n * frame, secs,
         SSL_get_cipher_name(ssl));
  SSL_free(ssl);
  close(fd);
  free(buf);
}

int main(int argc, char **argv) {
  long n;
  size_t frame;
  uint16_t port;
  int lfd;
  prog = "tls_pump";
  role = "client";
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
  lfd = listen_loopback(&port);
  if (fork_peer(lfd, "server", "server_pid")) { /* the child: the server */
    serve(lfd, tls_context(1, argv[1], argv[2], argv[3], READ_AHEAD), n, frame);
    return 0;
  }
  send_frames(port, tls_context(0, argv[1], argv[4], argv[5], 0), n, frame);
  return 0;
}
