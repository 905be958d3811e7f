/* store_baseline.c - the least an event store must do, in plain C: write
 * N events of 100-byte data with the store's record encoding and chain
 * hashes (docs/STORAGE.md) in LevelDB WriteBatches of 1000, without sync,
 * with the store's LevelDB options. Also, for context, plain 100-byte puts.
 *
 *   store_baseline DIR N MODE     MODE: chain | plain | scan
 * prints "<events> <seconds>". `scan` reads back, in order, the N records a
 * `chain` run wrote, checking each one's CRC-32C: the least a catch-up
 * must do. */
#include <openssl/evp.h>

#include "common.h"

int main(int argc, char **argv) {
  leveldb_options_t *o = store_options();
  leveldb_writeoptions_t *wo = leveldb_writeoptions_create();
  leveldb_writebatch_t *b = leveldb_writebatch_create();
  char *err = NULL;
  long n = argc > 2 ? atol(argv[2]) : 1000000;
  int chain = argc > 3 && strcmp(argv[3], "chain") == 0;
  uint8_t hash[32], key[17], val[4 + 32 + 8 + 1 + 5 + 100], data[100];
  const char *type = "bench";
  EVP_MD *md = EVP_MD_fetch(NULL, "SHA256", NULL);
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  leveldb_t *db;
  double t0;
  if (argc < 4) {
    fprintf(stderr, "usage: store_baseline DIR N chain|plain\n");
    return 2;
  }
  leveldb_writeoptions_set_sync(wo, 0);
  db = leveldb_open(o, argv[1], &err);
  if (err) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  memset(data, 'x', sizeof data);
  memset(hash, 0, sizeof hash);
  t0 = now();
  if (strcmp(argv[3], "scan") == 0) {
    leveldb_readoptions_t *ro = leveldb_readoptions_create();
    leveldb_iterator_t *it;
    long got = 0;
    uint64_t sum = 0;
    leveldb_readoptions_set_verify_checksums(ro, 1);
    it = leveldb_create_iterator(db, ro);
    key[0] = 'z';
    put_be64(key + 1, 1);
    put_be64(key + 9, 1);
    for (leveldb_iter_seek(it, (const char *)key, 17);
         leveldb_iter_valid(it) && got < n; leveldb_iter_next(it)) {
      size_t kl, vl;
      const uint8_t *k = (const uint8_t *)leveldb_iter_key(it, &kl);
      const uint8_t *v = (const uint8_t *)leveldb_iter_value(it, &vl);
      uint32_t crc = crc32c(crc32c(0, k, kl), v + 4, vl - 4);
      if (get_be32(v) != crc) {
        fprintf(stderr, "bad record\n");
        return 1;
      }
      sum += v[vl - 1];
      got++;
    }
    printf("%ld %.6f\n", got, now() - t0);
    leveldb_iter_destroy(it);
    leveldb_close(db);
    return sum == 0;
  }
  for (long rev = 1; rev <= n; rev++) {
    size_t vlen;
    key[0] = 'z';
    put_be64(key + 1, 1);
    put_be64(key + 9, (uint64_t)rev);
    if (chain) {
      uint8_t head[17], dlen[4] = {0, 0, 0, 100};
      uint64_t ts = (uint64_t)time(NULL) * 1000;
      uint32_t crc;
      put_be64(head, (uint64_t)rev);
      put_be64(head + 8, ts);
      head[16] = 5;
      EVP_DigestInit_ex2(ctx, md, NULL);
      EVP_DigestUpdate(ctx, hash, 32);
      EVP_DigestUpdate(ctx, head, 17);
      EVP_DigestUpdate(ctx, type, 5);
      EVP_DigestUpdate(ctx, dlen, 4);
      EVP_DigestUpdate(ctx, data, 100);
      EVP_DigestFinal_ex(ctx, hash, NULL);
      memcpy(val + 4, hash, 32);
      put_be64(val + 36, ts);
      val[44] = 5;
      memcpy(val + 45, type, 5);
      memcpy(val + 50, data, 100);
      vlen = 150;
      crc = crc32c(crc32c(0, key, 17), val + 4, vlen - 4);
      put_be32(val, crc);
    } else {
      memcpy(val, data, 100);
      vlen = 100;
    }
    leveldb_writebatch_put(b, (const char *)key, 17, (const char *)val, vlen);
    if (rev % 1000 == 0 || rev == n) {
      leveldb_write(db, wo, b, &err);
      if (err) {
        fprintf(stderr, "%s\n", err);
        return 1;
      }
      leveldb_writebatch_clear(b);
    }
  }
  printf("%ld %.6f\n", n, now() - t0);
  leveldb_close(db);
  return 0;
}
