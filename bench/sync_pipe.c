/* sync_pipe.c - the least any replication must do, in plain C: a stream's
 * events scanned from one LevelDB store, sent over TLS 1.3 between two
 * processes on loopback, and written to another store with their chain
 * hashes recomputed, in WriteBatches of 1000, without sync.
 *
 *   sync_pipe fill DIR N STREAM_ID
 *   sync_pipe run CA SOURCE_CERT SOURCE_KEY REPLICA_CERT REPLICA_KEY
 *                 SOURCE_DIR REPLICA_DIR STREAM_ID N
 *
 * `fill` writes N events (type "bench", 100 bytes of data) as stream
 * number 1 of a new store, in the store's record encoding (docs/STORAGE.md:
 * key 'z' | u64be num | u64be rev, value u32be CRC-32C(key | payload) |
 * hash[32] | u64be ts | u8 type_len | type | data) with the chain hashes of
 * STREAM_ID, and prints "filled <events> <seconds>".
 *
 * `run` binds 127.0.0.1 on a free port and forks. The child is the source
 * (the TLS server): it opens SOURCE_DIR, and once the replica connected it
 * scans the events in order (LevelDB block checksums verified, each
 * record's CRC-32C checked) and sends them as chunks of about 64 KiB, each
 * with one SSL_write:
 *   chunk   = u32be len | u32be count | event * count
 *   event   = u64be ts | u8 type_len | type | u32be data_len | data
 *   trailer = u32be 40 | u32be 0 | u64be events | hash[32] (the last
 *             record's chain hash)
 * The parent is the replica (the TLS client): from just before it opens
 * REPLICA_DIR (a new store) and connects, it decodes the chunks, recomputes
 * h(n) = SHA-256(h(n-1) | u64be rev | u64be ts | u8 type_len | type |
 * u32be data_len | data) from h(0) = SHA-256("odo-journal chain v1" 0x00 |
 * STREAM_ID), builds the same records (CRC-32C included) and writes them
 * in WriteBatches of 1000, without sync, until the last write; then it
 * checks the trailer's count and hash against its own, replies one byte
 * and stops its clock. Both sides use the store's LevelDB options, TLS 1.3
 * only with OpenSSL's default suites, mutual authentication against CA,
 * no session tickets and TCP_NODELAY, as odo does. Prints, on stdout:
 *   source_pid <pid>                                        at once
 *   source <events> <bytes> <cipher> <RssAnon kB> <cpu main> <cpu other>
 *                                                  the source, at its end
 *   <events> <data bytes> <seconds> <cipher> <RssAnon kB> <cpu main> <cpu other>
 *                                                  the replica, last
 * where cpu main and other are the CPU seconds (user + system) of the
 * process's main thread and of its other threads (LevelDB's background
 * compaction), the replica's taken when its clock stops.
 * Any failure: a message on stderr and a non-zero exit. */
#include <dirent.h>
#include <openssl/evp.h>

#include "common.h"

#define CHUNK (64u << 10) /* bytes of events per SSL_write, about */
#define WRITE_BATCH 1000  /* events per LevelDB write on the replica */
#define STREAM_NUM 1
#define KEY_LEN 17
#define HASH_LEN 32
#define MAX_DATA (4u << 20) /* the store's limit on one event's data */
#define CHAIN_TAG "odo-journal chain v1"

/* ---- small helpers ------------------------------------------------------- */

static void die_ldb(const char *what, char *err) {
  fprintf(stderr, "%s %s: %s: %s\n", prog, role, what, err);
  leveldb_free(err);
  if (child > 0) kill(child, SIGTERM);
  exit(1);
}

/* CPU seconds (user + system) this process spent so far: its main thread
 * into *main, its other threads (LevelDB's compaction) into *other. */
static void thread_cpu(double *main, double *other) {
  char path[64], line[1024];
  struct dirent *d;
  DIR *dir = opendir("/proc/self/task");
  double tick = (double)sysconf(_SC_CLK_TCK);
  *main = *other = 0;
  if (dir == NULL) return;
  while ((d = readdir(dir)) != NULL) {
    unsigned long ut, st;
    const char *p;
    FILE *f;
    if (d->d_name[0] == '.') continue;
    snprintf(path, sizeof path, "/proc/self/task/%.20s/stat", d->d_name);
    if ((f = fopen(path, "r")) == NULL) continue;
    p = fgets(line, sizeof line, f) ? strrchr(line, ')') : NULL;
    fclose(f);
    /* after "pid (comm)": state, then fields 4..13; utime and stime are 14, 15 */
    if (p == NULL || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
                            &ut, &st) != 2)
      continue;
    if (atol(d->d_name) == (long)getpid()) *main += (double)(ut + st) / tick;
    else *other += (double)(ut + st) / tick;
  }
  closedir(dir);
}

/* A growable byte buffer; every length tracked. */
typedef struct {
  uint8_t *p;
  size_t len, cap;
} buf;

static uint8_t *buf_room(buf *b, size_t n) {
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : CHUNK + 1024;
    while (cap < b->len + n) cap *= 2;
    errno = 0;
    if ((b->p = realloc(b->p, cap)) == NULL) die("out of memory");
    b->cap = cap;
  }
  return b->p + b->len;
}

/* ---- the store's side: options, records, chain ------------------------------ */

static leveldb_t *open_store(const char *dir) {
  char *err = NULL;
  leveldb_t *db = leveldb_open(store_options(), dir, &err);
  if (err) die_ldb("cannot open the store", err);
  return db;
}

static void event_key(uint8_t key[KEY_LEN], uint64_t rev) {
  key[0] = 'z';
  put_be64(key + 1, STREAM_NUM);
  put_be64(key + 9, rev);
}

typedef struct {
  EVP_MD *md;
  EVP_MD_CTX *ctx;
  uint8_t hash[HASH_LEN]; /* h(rev) of the last event chained */
  uint64_t rev;
} chain;

static void chain_init(chain *c, const char *stream_id) {
  c->md = EVP_MD_fetch(NULL, "SHA256", NULL);
  c->ctx = EVP_MD_CTX_new();
  errno = 0;
  if (c->md == NULL || c->ctx == NULL ||
      !EVP_DigestInit_ex2(c->ctx, c->md, NULL) ||
      !EVP_DigestUpdate(c->ctx, CHAIN_TAG, sizeof CHAIN_TAG) || /* with its 0x00 */
      !EVP_DigestUpdate(c->ctx, stream_id, strlen(stream_id)) ||
      !EVP_DigestFinal_ex(c->ctx, c->hash, NULL))
    die("SHA-256");
  c->rev = 0;
}

/* Chains the next event and encodes its record value into val (which has
 * room for 4 + 32 + 8 + 1 + 255 + data_len bytes); returns its length. */
static size_t chain_record(chain *c, const uint8_t key[KEY_LEN], uint64_t ts,
                           const uint8_t *type, uint8_t type_len,
                           const uint8_t *data, uint32_t data_len,
                           uint8_t *val) {
  uint8_t head[17], dlen[4];
  size_t vlen = 4 + HASH_LEN + 8 + 1 + type_len + data_len;
  c->rev++;
  put_be64(head, c->rev);
  put_be64(head + 8, ts);
  head[16] = type_len;
  put_be32(dlen, data_len);
  errno = 0;
  if (!EVP_DigestInit_ex2(c->ctx, c->md, NULL) ||
      !EVP_DigestUpdate(c->ctx, c->hash, HASH_LEN) ||
      !EVP_DigestUpdate(c->ctx, head, sizeof head) ||
      !EVP_DigestUpdate(c->ctx, type, type_len) ||
      !EVP_DigestUpdate(c->ctx, dlen, sizeof dlen) ||
      !EVP_DigestUpdate(c->ctx, data, data_len) ||
      !EVP_DigestFinal_ex(c->ctx, c->hash, NULL))
    die("SHA-256");
  memcpy(val + 4, c->hash, HASH_LEN);
  memcpy(val + 36, head + 8, 8);
  val[44] = type_len;
  memcpy(val + 45, type, type_len);
  memcpy(val + 45 + type_len, data, data_len);
  put_be32(val, crc32c(crc32c(0, key, KEY_LEN), val + 4, vlen - 4));
  return vlen;
}

static int fill(const char *dir, long n, const char *stream_id) {
  leveldb_t *db = open_store(dir);
  leveldb_writeoptions_t *wo = leveldb_writeoptions_create();
  leveldb_writebatch_t *b = leveldb_writebatch_create();
  uint8_t key[KEY_LEN], data[100], val[4 + HASH_LEN + 8 + 1 + 5 + sizeof data];
  chain c;
  char *err = NULL;
  double t0 = now();
  leveldb_writeoptions_set_sync(wo, 0);
  memset(data, 'x', sizeof data);
  chain_init(&c, stream_id);
  for (long rev = 1; rev <= n; rev++) {
    size_t vlen;
    event_key(key, (uint64_t)rev);
    vlen = chain_record(&c, key, (uint64_t)time(NULL) * 1000, (const uint8_t *)"bench", 5,
                        data, sizeof data, val);
    leveldb_writebatch_put(b, (const char *)key, KEY_LEN, (const char *)val, vlen);
    if (rev % WRITE_BATCH == 0 || rev == n) {
      leveldb_write(db, wo, b, &err);
      if (err) die_ldb("write", err);
      leveldb_writebatch_clear(b);
    }
  }
  leveldb_close(db);
  printf("filled %ld %.6f\n", n, now() - t0);
  return 0;
}

/* ---- the source -------------------------------------------------------------------- */

static void source(int lfd, SSL_CTX *ctx, const char *dir, long n) {
  leveldb_t *db = open_store(dir);
  leveldb_readoptions_t *ro = leveldb_readoptions_create();
  leveldb_iterator_t *it;
  buf out = {0};
  uint8_t key[KEY_LEN], last_hash[HASH_LEN], reply;
  double cpu_main, cpu_other;
  uint32_t count = 0;
  uint64_t bytes = 0;
  long sent = 0;
  int fd;
  SSL *ssl;
  ssl = tls_accept(lfd, ctx, &fd);
  leveldb_readoptions_set_verify_checksums(ro, 1);
  it = leveldb_create_iterator(db, ro);
  event_key(key, 1);
  out.len = 8; /* the chunk header, filled in when it is sent */
  for (leveldb_iter_seek(it, (const char *)key, KEY_LEN); leveldb_iter_valid(it);
       leveldb_iter_next(it)) {
    size_t kl, vl, dl;
    const uint8_t *k = (const uint8_t *)leveldb_iter_key(it, &kl);
    const uint8_t *v = (const uint8_t *)leveldb_iter_value(it, &vl);
    uint8_t *w;
    errno = 0;
    if (kl != KEY_LEN || k[0] != 'z' || get_be64(k + 1) != STREAM_NUM) break;
    if (get_be64(k + 9) != (uint64_t)sent + 1) die("an event is missing");
    if (vl < 4 + HASH_LEN + 8 + 1 + 1 || vl < 45u + v[44] || v[44] == 0)
      die("a record too short");
    if (get_be32(v) != crc32c(crc32c(0, k, kl), v + 4, vl - 4))
      die("a damaged record (CRC-32C)");
    dl = vl - 45 - v[44];
    if (out.len + 8 + 1 + v[44] + 4 + dl > CHUNK && count > 0) {
      put_be32(out.p, (uint32_t)(out.len - 8));
      put_be32(out.p + 4, count);
      write_full(ssl, out.p, out.len);
      bytes += out.len;
      out.len = 8;
      count = 0;
    }
    w = buf_room(&out, 8 + 1 + v[44] + 4 + dl);
    memcpy(w, v + 36, 8 + 1 + v[44]); /* ts | type_len | type */
    w += 8 + 1 + v[44];
    put_be32(w, (uint32_t)dl);
    memcpy(w + 4, v + 45 + v[44], dl);
    out.len += 8 + 1 + v[44] + 4 + dl;
    memcpy(last_hash, v + 4, HASH_LEN);
    count++;
    sent++;
  }
  {
    char *err = NULL;
    leveldb_iter_get_error(it, &err);
    if (err) die_ldb("scanning", err);
  }
  errno = 0;
  if (sent != n) die("the store does not hold the expected number of events");
  if (count > 0) {
    put_be32(out.p, (uint32_t)(out.len - 8));
    put_be32(out.p + 4, count);
    write_full(ssl, out.p, out.len);
    bytes += out.len;
  }
  {
    uint8_t t[8 + 8 + HASH_LEN];
    put_be32(t, 8 + HASH_LEN);
    put_be32(t + 4, 0);
    put_be64(t + 8, (uint64_t)sent);
    memcpy(t + 16, last_hash, HASH_LEN);
    write_full(ssl, t, sizeof t);
    bytes += sizeof t;
  }
  read_full(ssl, &reply, 1);
  await_close(ssl);
  thread_cpu(&cpu_main, &cpu_other);
  printf("source %ld %llu %s %ld %.2f %.2f\n", sent, (unsigned long long)bytes,
         SSL_get_cipher_name(ssl), rss_anon_kb(), cpu_main, cpu_other);
  fflush(stdout);
  leveldb_iter_destroy(it);
  leveldb_close(db);
  SSL_free(ssl);
  close(fd);
  free(out.p);
}

/* ---- the replica ------------------------------------------------------------------- */

static void replica(uint16_t port, SSL_CTX *ctx, const char *dir,
                    const char *stream_id, long n) {
  leveldb_t *db;
  leveldb_writeoptions_t *wo = leveldb_writeoptions_create();
  leveldb_writebatch_t *b = leveldb_writebatch_create();
  buf in = {0}, val = {0};
  uint8_t hdr[8], key[KEY_LEN];
  uint64_t data_bytes = 0;
  long pending = 0;
  double t0, secs, cpu_main, cpu_other;
  chain c;
  char *err = NULL;
  int fd;
  SSL *ssl;
  leveldb_writeoptions_set_sync(wo, 0);
  chain_init(&c, stream_id);
  t0 = now();
  db = open_store(dir);
  ssl = tls_connect(port, ctx, &fd);
  for (;;) {
    uint32_t len, count;
    size_t pos = 0;
    read_full(ssl, hdr, sizeof hdr);
    len = get_be32(hdr);
    count = get_be32(hdr + 4);
    errno = 0;
    if (len > CHUNK + 8 + 1 + 255 + 4 + MAX_DATA) die("a chunk too big");
    in.len = 0;
    buf_room(&in, len);
    read_full(ssl, in.p, len);
    if (count == 0) { /* the trailer */
      if (len != 8 + HASH_LEN) die("a malformed trailer");
      if (pending > 0) {
        leveldb_write(db, wo, b, &err);
        if (err) die_ldb("write", err);
        leveldb_writebatch_clear(b);
      }
      if (get_be64(in.p) != c.rev || (long)c.rev != n) die("events are missing");
      if (memcmp(in.p + 8, c.hash, HASH_LEN) != 0)
        die("the chain does not end at the source's hash");
      break;
    }
    for (uint32_t i = 0; i < count; i++) {
      const uint8_t *ev = in.p + pos, *type, *data;
      uint8_t tl;
      uint32_t dl;
      size_t vlen;
      if (len - pos < 8 + 1) die("a malformed chunk");
      tl = ev[8];
      if (tl == 0 || len - pos < 8 + 1 + (size_t)tl + 4) die("a malformed event");
      type = ev + 9;
      dl = get_be32(ev + 9 + tl);
      if (dl > MAX_DATA || len - pos - (8 + 1 + tl + 4) < dl) die("a malformed event");
      data = ev + 9 + tl + 4;
      event_key(key, c.rev + 1);
      val.len = 0;
      vlen = chain_record(&c, key, get_be64(ev), type, tl, data, dl,
                          buf_room(&val, 4 + HASH_LEN + 8 + 1 + tl + dl));
      leveldb_writebatch_put(b, (const char *)key, KEY_LEN, (const char *)val.p, vlen);
      data_bytes += dl;
      pos += 8 + 1 + tl + 4 + dl;
      if (++pending == WRITE_BATCH) {
        leveldb_write(db, wo, b, &err);
        if (err) die_ldb("write", err);
        leveldb_writebatch_clear(b);
        pending = 0;
      }
    }
    if (pos != len) die("a malformed chunk");
  }
  secs = now() - t0;
  thread_cpu(&cpu_main, &cpu_other);
  write_full(ssl, (const uint8_t *)"k", 1);
  close_and_reap(ssl, "the source failed");
  printf("%llu %llu %.6f %s %ld %.2f %.2f\n", (unsigned long long)c.rev,
         (unsigned long long)data_bytes, secs, SSL_get_cipher_name(ssl), rss_anon_kb(),
         cpu_main, cpu_other);
  fflush(stdout);
  leveldb_close(db);
  SSL_free(ssl);
  close(fd);
  free(in.p);
  free(val.p);
}

int main(int argc, char **argv) {
  long n;
  uint16_t port;
  int lfd;
  prog = "sync_pipe";
  role = "replica";
  if (argc == 5 && strcmp(argv[1], "fill") == 0) {
    role = "fill";
    n = atol(argv[3]);
    if (n < 1) {
      fprintf(stderr, "sync_pipe: N must be positive\n");
      return 2;
    }
    return fill(argv[2], n, argv[4]);
  }
  if (argc != 11 || strcmp(argv[1], "run") != 0) {
    fprintf(stderr, "usage: sync_pipe fill DIR N STREAM_ID\n"
                    "       sync_pipe run CA SOURCE_CERT SOURCE_KEY REPLICA_CERT "
                    "REPLICA_KEY SOURCE_DIR REPLICA_DIR STREAM_ID N\n");
    return 2;
  }
  n = atol(argv[10]);
  if (n < 1) {
    fprintf(stderr, "sync_pipe: N must be positive\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN); /* a peer that went away is an error, not a signal */
  lfd = listen_loopback(&port);
  /* small reads (chunk headers) come out of a 64 KiB read-ahead buffer, as
   * libuv reads 64 KiB at a time */
  if (fork_peer(lfd, "source", "source_pid")) { /* the child: the source */
    source(lfd, tls_context(1, argv[2], argv[3], argv[4], CHUNK), argv[7], n);
    return 0;
  }
  replica(port, tls_context(0, argv[2], argv[5], argv[6], CHUNK), argv[8], argv[9], n);
  return 0;
}
