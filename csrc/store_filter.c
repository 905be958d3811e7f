/* store_filter.c - the store's LevelDB filter policy: a bloom filter over
 * the keys a point lookup asks for (catalogue, keys, metadata, peers,
 * snapshots) that leaves out event and head keys ('z'), which are only
 * ever read by iterators, never looked up one by one. A catch-up's tables
 * are almost all events: their filters were hashed, written and held in
 * memory for nothing. docs/STORAGE.md describes the filter's bytes. */
#include <stdlib.h>

#include "store.h"

#define BITS_PER_KEY 10
#define PROBES 6 /* about BITS_PER_KEY * ln 2 */

static const char FILTER_NAME[] = "odo.bloom-except-events.v1";

/* Whether LevelDB's filter applies to key: every key but the log's. */
static int filtered(const char *key, size_t len) {
  return len > 0 && key[0] != ODO_K_EVENT;
}

/* FNV-1a, then murmur3's finalizer to spread the bits. */
static uint32_t key_hash(const char *key, size_t len) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < len; i++) h = (h ^ (uint8_t)key[i]) * 16777619u;
  h ^= h >> 16;
  h *= 0x85ebca6bu;
  h ^= h >> 13;
  h *= 0xc2b2ae35u;
  h ^= h >> 16;
  return h;
}

/* Filter = bits[m] | u8 probes; m = 0 when the range has no filtered
 * key. Never empty: LevelDB reads an empty filter as "no key here". */
static char *create_filter(void *state, const char *const *keys,
                           const size_t *lens, int n, size_t *out_len) {
  size_t count = 0, bits, bytes;
  char *f;
  (void)state;
  for (int i = 0; i < n; i++) count += (size_t)filtered(keys[i], lens[i]);
  bits = count ? count * BITS_PER_KEY : 0;
  if (bits && bits < 64) bits = 64;
  bytes = (bits + 7) / 8;
  f = calloc(bytes + 1, 1);
  if (f == NULL) {
    /* LevelDB cannot be told, and reads an empty filter as "no key
     * here": two bytes that match every key (no probes) instead */
    f = calloc(2, 1);
    *out_len = f ? 2 : 0;
    return f;
  }
  bits = bytes * 8;
  for (int i = 0; i < n && bytes; i++) {
    uint32_t h, delta;
    if (!filtered(keys[i], lens[i])) continue;
    h = key_hash(keys[i], lens[i]);
    delta = (h >> 17) | (h << 15);
    for (int j = 0; j < PROBES; j++) {
      size_t b = h % bits;
      f[b / 8] = (char)(f[b / 8] | (1 << (b % 8)));
      h += delta;
    }
  }
  f[bytes] = PROBES;
  *out_len = bytes + 1;
  return f;
}

static uint8_t key_may_match(void *state, const char *key, size_t len,
                             const char *f, size_t flen) {
  size_t bits;
  uint32_t h, delta;
  int probes;
  (void)state;
  if (!filtered(key, len) || flen < 1) return 1;
  bits = (flen - 1) * 8;
  probes = (uint8_t)f[flen - 1];
  if (bits == 0) return 0; /* no filtered key in this range */
  if (probes < 1 || probes > 30) return 1; /* not ours: a match */
  h = key_hash(key, len);
  delta = (h >> 17) | (h << 15);
  for (int j = 0; j < probes; j++) {
    size_t b = h % bits;
    if ((f[b / 8] & (1 << (b % 8))) == 0) return 0;
    h += delta;
  }
  return 1;
}

static const char *filter_name(void *state) {
  (void)state;
  return FILTER_NAME;
}

static void filter_destroy(void *state) { (void)state; }

leveldb_filterpolicy_t *odo_store_filter(void) {
  return leveldb_filterpolicy_create(NULL, filter_destroy, create_filter,
                                     key_may_match, filter_name);
}
