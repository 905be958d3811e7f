/* dns_answer_fuzz.c - libFuzzer target for the SRV answer reader
 * (csrc/dns_answer.c), which reads what a DNS server sent.
 *
 * Input: a DNS message, as it came off the wire. It is read twice, with
 * room for every record and with room for two, and every promise of
 * dns_answer.h is checked: a result of -1 says why; the records fit;
 * targets are host names (labels of letters, digits, '-' and '_', at most
 * 253 characters) or "."; TTLs have their top bit clear; room for two
 * gives the first two. Then the records read are written into a new
 * message, without compression, which must read back the same. A broken
 * promise aborts: a bug found is a crash.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dns_answer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *what) {
  fprintf(stderr, "dns_answer_fuzz: %s\n", what);
  abort();
}

static int host_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || c == '-' || c == '_';
}

static void check_target(const char *t) {
  size_t n = strnlen(t, ODO_DNS_MAX_TEXT);
  if (n == ODO_DNS_MAX_TEXT) fail("a target is not NUL-terminated in its room");
  if (strcmp(t, ".") == 0) return;
  if (n == 0 || n > 253) fail("a target is empty or longer than 253 characters");
  for (size_t i = 0, label = 0; i <= n; i++) {
    if (i == n || t[i] == '.') {
      if (label == 0 || label > 63) fail("a target has an empty or over-long label");
      label = 0;
    } else if (!host_char(t[i])) {
      fail("a target holds a byte that is not a host name's");
    } else {
      label++;
    }
  }
}

static int same(const odo_srv *a, const odo_srv *b) {
  return a->priority == b->priority && a->weight == b->weight &&
         a->port == b->port && a->ttl == b->ttl &&
         strcmp(a->target, b->target) == 0;
}

static size_t put16(uint8_t *p, unsigned v) {
  p[0] = (uint8_t)(v >> 8);
  p[1] = (uint8_t)v;
  return 2;
}

/* A message holding only the records, in order, names uncompressed. */
static size_t encode(const odo_srv *recs, int n, uint8_t *out) {
  size_t at = 0;
  memset(out, 0, ODO_DNS_HEADER);
  put16(out + 2, 0x8180);
  put16(out + 6, (unsigned)n);
  at = ODO_DNS_HEADER;
  for (int i = 0; i < n; i++) {
    const odo_srv *r = &recs[i];
    uint8_t name[ODO_DNS_MAX_NAME];
    size_t nlen = 0;
    if (strcmp(r->target, ".") != 0) {
      const char *s = r->target;
      while (*s) {
        const char *dot = strchr(s, '.');
        size_t l = dot ? (size_t)(dot - s) : strlen(s);
        name[nlen++] = (uint8_t)l;
        memcpy(name + nlen, s, l);
        nlen += l;
        s += l + (dot ? 1 : 0);
      }
    }
    name[nlen++] = 0;
    out[at++] = 0; /* owner: the root */
    at += put16(out + at, ODO_DNS_TYPE_SRV);
    at += put16(out + at, ODO_DNS_CLASS_IN);
    at += put16(out + at, r->ttl >> 16);
    at += put16(out + at, r->ttl & 0xFFFF);
    at += put16(out + at, (unsigned)(6 + nlen));
    at += put16(out + at, r->priority);
    at += put16(out + at, r->weight);
    at += put16(out + at, r->port);
    memcpy(out + at, name, nlen);
    at += nlen;
  }
  return at;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static odo_srv all[ODO_DNS_MAX_SRV], two[2], again[ODO_DNS_MAX_SRV];
  /* each record: root owner, 10 bytes, 6 of data, a name of <= 255 */
  static uint8_t msg[ODO_DNS_HEADER + ODO_DNS_MAX_SRV * (1 + 10 + 6 + ODO_DNS_MAX_NAME)];
  const char *why = NULL;
  int skipped = -1, skipped2 = -1, n, n2;

  /* the input is copied so that reading past it is caught by ASan */
  uint8_t *in = malloc(size ? size : 1);
  if (in == NULL) return 0;
  memcpy(in, data, size);

  n = odo_dns_srv_answer(in, size, all, ODO_DNS_MAX_SRV, &skipped, &why);
  n2 = odo_dns_srv_answer(in, size, two, 2, &skipped2, &why);
  if (n < -1 || n > ODO_DNS_MAX_SRV) fail("a count out of range");
  if ((n < 0) != (n2 < 0)) fail("room for two changes whether the message is malformed");
  if (n < 0) {
    if (why == NULL || *why == '\0') fail("-1 without a reason");
    free(in);
    return 0;
  }
  if (skipped < 0) fail("skipped not set");
  if (n2 != (n < 2 ? n : 2)) fail("room for two does not give the first two");
  for (int i = 0; i < n2; i++)
    if (!same(&all[i], &two[i])) fail("room for two gives other records");
  for (int i = 0; i < n; i++) {
    check_target(all[i].target);
    if (all[i].ttl & 0x80000000u) fail("a TTL with its top bit set");
  }

  {
    size_t len = encode(all, n, msg);
    int skipped3 = -1, n3 = odo_dns_srv_answer(msg, len, again, ODO_DNS_MAX_SRV,
                                               &skipped3, &why);
    if (n3 != n || skipped3 != 0) fail("the records written out do not read back");
    for (int i = 0; i < n; i++)
      if (!same(&all[i], &again[i])) fail("a record written out reads back different");
  }
  free(in);
  return 0;
}
