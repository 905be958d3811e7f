/* ldb.c - a raw LevelDB tool for specs: reads and writes records behind
 * the store's back, to fake damage, old formats and crashes.
 *
 *   ldb list DIR                    every key and value, in hex
 *   ldb get DIR HEXKEY              the value, in hex
 *   ldb put DIR HEXKEY HEXVAL       writes the bytes as given
 *   ldb putframed DIR HEXKEY HEXPAYLOAD
 *                                   writes CRC-32C(key|payload) | payload
 *   ldb del DIR HEXKEY
 */
#include <leveldb/c.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static size_t unhex(const char *h, char *out) {
  size_t n = strlen(h) / 2;
  for (size_t i = 0; i < n; i++) {
    unsigned v;
    sscanf(h + 2 * i, "%2x", &v);
    out[i] = (char)v;
  }
  return n;
}

static void hex(const char *p, size_t n) {
  for (size_t i = 0; i < n; i++) printf("%02x", (unsigned char)p[i]);
}

static uint32_t crc32c(uint32_t crc, const char *p, size_t n) {
  crc = ~crc;
  while (n--) {
    crc ^= (unsigned char)*p++;
    for (int k = 0; k < 8; k++) crc = (crc >> 1) ^ ((crc & 1) ? 0x82F63B78u : 0);
  }
  return ~crc;
}

int main(int argc, char **argv) {
  leveldb_options_t *o = leveldb_options_create();
  leveldb_readoptions_t *ro = leveldb_readoptions_create();
  leveldb_writeoptions_t *wo = leveldb_writeoptions_create();
  char *err = NULL, key[4096], val[1 << 16];
  size_t kl = 0, vl = 0;
  leveldb_t *db;
  if (argc < 3) {
    fprintf(stderr, "usage: ldb list|get|put|putframed|del DIR ...\n");
    return 2;
  }
  leveldb_writeoptions_set_sync(wo, 1);
  leveldb_options_set_create_if_missing(o, 1);
  db = leveldb_open(o, argv[2], &err);
  if (err) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  if (argc > 3) kl = unhex(argv[3], key);
  if (strcmp(argv[1], "list") == 0) {
    leveldb_iterator_t *it = leveldb_create_iterator(db, ro);
    for (leveldb_iter_seek_to_first(it); leveldb_iter_valid(it);
         leveldb_iter_next(it)) {
      size_t a, b;
      const char *k = leveldb_iter_key(it, &a), *v = leveldb_iter_value(it, &b);
      hex(k, a);
      printf(" ");
      hex(v, b);
      printf("\n");
    }
    leveldb_iter_destroy(it);
  } else if (strcmp(argv[1], "get") == 0 && argc == 4) {
    char *v = leveldb_get(db, ro, key, kl, &vl, &err);
    if (v) hex(v, vl), printf("\n"), leveldb_free(v);
  } else if (strcmp(argv[1], "put") == 0 && argc == 5) {
    vl = unhex(argv[4], val);
    leveldb_put(db, wo, key, kl, val, vl, &err);
  } else if (strcmp(argv[1], "putframed") == 0 && argc == 5) {
    uint32_t crc;
    vl = unhex(argv[4], val + 4) + 4;
    crc = crc32c(crc32c(0, key, kl), val + 4, vl - 4);
    val[0] = (char)(crc >> 24); val[1] = (char)(crc >> 16);
    val[2] = (char)(crc >> 8); val[3] = (char)crc;
    leveldb_put(db, wo, key, kl, val, vl, &err);
  } else if (strcmp(argv[1], "del") == 0 && argc == 4) {
    leveldb_delete(db, wo, key, kl, &err);
  } else {
    fprintf(stderr, "bad command\n");
    return 2;
  }
  if (err) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  leveldb_close(db);
  leveldb_options_destroy(o);
  leveldb_readoptions_destroy(ro);
  leveldb_writeoptions_destroy(wo);
  return 0;
}
