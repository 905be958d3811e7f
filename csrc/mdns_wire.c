/* mdns_wire.c - the strict walk of an mDNS packet, the legacy unicast TTL
 * cap, TXT strings and instance names (see mdns_wire.h). Every read is
 * checked against the packet's length. */
#include "mdns_wire.h"

#include <string.h>

#define T_A 1
#define T_NS 2
#define T_CNAME 5
#define T_PTR 12
#define T_AAAA 28
#define T_SRV 33

static uint16_t be16(const uint8_t *p) { return (uint16_t)(((unsigned)p[0] << 8) | p[1]); }

/* Walks the name at *off (within [0, end)); on success *off is just past
 * it. Pointers must point before the start of the name that holds them,
 * so every chain ends. */
static int walk_name(const uint8_t *p, size_t end, size_t *off, const char **why) {
  size_t pos = *off, next = 0, dotted = 0, limit = *off;
  int jumped = 0;
  for (;;) {
    if (pos >= end) { *why = "a name runs past the end"; return -1; }
    uint8_t len = p[pos];
    if (len == 0) {
      if (!jumped) next = pos + 1;
      break;
    }
    if ((len & 0xC0) == 0xC0) {
      if (pos + 1 >= end) { *why = "a compression pointer is cut short"; return -1; }
      size_t target = (size_t)(((len & 0x3F) << 8) | p[pos + 1]);
      if (target >= limit) { *why = "a compression pointer does not point backwards"; return -1; }
      if (target > ODO_MDNS_MAX_PTR) { *why = "a compression pointer past 4095"; return -1; }
      if (!jumped) next = pos + 2;
      jumped = 1;
      limit = target;
      pos = target;
      continue;
    }
    if (len > 63) { *why = "a label has a reserved length byte"; return -1; }
    if (pos + 1 + len > end) { *why = "a label runs past the end"; return -1; }
    for (size_t i = 1; i <= len; i++) {
      if (p[pos + i] == 0 || p[pos + i] == '.') { *why = "a label holds a NUL or a dot"; return -1; }
    }
    dotted += (size_t)len + 1;
    if (dotted > ODO_MDNS_MAX_NAME) { *why = "a name longer than 255 bytes"; return -1; }
    pos += (size_t)len + 1;
  }
  *off = next;
  return 0;
}

/* Calls fn on each record (not question) after the walk; returns -1 on
 * the first malformed part. */
typedef void (*rr_fn)(uint8_t *p, size_t at, void *arg);

static int walk(const uint8_t *p, size_t n, const char **why, rr_fn fn, void *arg) {
  if (n < 12) { *why = "shorter than a DNS header"; return -1; }
  if (n > ODO_MDNS_MAX_PACKET) { *why = "longer than 9000 bytes"; return -1; }
  size_t off = 12;
  unsigned qd = be16(p + 4), rr = (unsigned)be16(p + 6) + be16(p + 8) + be16(p + 10);
  /* each question takes 5 bytes at least, each record 11 */
  if ((size_t)qd * 5 + (size_t)rr * 11 > n - 12) { *why = "more entries counted than it holds"; return -1; }
  for (unsigned i = 0; i < qd; i++) {
    if (walk_name(p, n, &off, why)) return -1;
    if (n - off < 4) { *why = "a question is cut short"; return -1; }
    off += 4;
  }
  for (unsigned i = 0; i < rr; i++) {
    if (walk_name(p, n, &off, why)) return -1;
    if (n - off < 10) { *why = "a record is cut short"; return -1; }
    size_t at = off;
    uint16_t type = be16(p + off), rdlen = be16(p + off + 8);
    off += 10;
    if (n - off < rdlen) { *why = "a record's data runs past the end"; return -1; }
    size_t rd = off, rdend = off + rdlen;
    switch (type) {
    case T_A:
      if (rdlen != 4) { *why = "an A record is not 4 bytes"; return -1; }
      break;
    case T_AAAA:
      if (rdlen != 16) { *why = "an AAAA record is not 16 bytes"; return -1; }
      break;
    case T_SRV:
      if (rdlen < 7) { *why = "an SRV record is cut short"; return -1; }
      rd += 6;
      /* fall through */
    case T_PTR:
    case T_NS:
    case T_CNAME:
      if (walk_name(p, rdend, &rd, why)) return -1;
      if (rd != rdend) { *why = "a record's name does not fill its data"; return -1; }
      break;
    default:
      break;
    }
    if (fn) fn((uint8_t *)p, at, arg);
    off = rdend;
  }
  return 0;
}

int odo_mdns_check(const uint8_t *p, size_t n, const char **why) {
  const char *dummy;
  return walk(p, n, why ? why : &dummy, NULL, NULL);
}

static void cap_one(uint8_t *p, size_t at, void *arg) {
  uint32_t cap = *(const uint32_t *)arg;
  uint8_t *t = p + at + 4;
  uint32_t ttl = ((uint32_t)t[0] << 24) | ((uint32_t)t[1] << 16) | ((uint32_t)t[2] << 8) | t[3];
  if (ttl > cap) {
    t[0] = (uint8_t)(cap >> 24); t[1] = (uint8_t)(cap >> 16);
    t[2] = (uint8_t)(cap >> 8); t[3] = (uint8_t)cap;
  }
}

int odo_mdns_cap_ttl(uint8_t *p, size_t n, uint32_t cap) {
  const char *why;
  return walk(p, n, &why, cap_one, &cap);
}

int odo_txt_next(const uint8_t *rdata, size_t len, size_t *off, odo_txt_item *item) {
  while (*off < len) {
    size_t slen = rdata[*off];
    const uint8_t *s = rdata + *off + 1;
    if (slen > len - *off - 1) return -1;
    *off += slen + 1;
    const uint8_t *eq = slen ? memchr(s, '=', slen) : NULL;
    size_t klen = eq ? (size_t)(eq - s) : slen;
    if (klen == 0) continue;
    int printable = 1;
    for (size_t i = 0; i < klen; i++) {
      if (s[i] < 0x20 || s[i] > 0x7E) { printable = 0; break; }
    }
    if (!printable) continue;
    item->key = s;
    item->key_len = klen;
    item->has_value = eq != NULL;
    item->value = eq ? eq + 1 : s + slen;
    item->value_len = eq ? slen - klen - 1 : 0;
    return 1;
  }
  return 0;
}

static int lower(int c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

int odo_mdns_same_name(const char *a, const char *b) {
  for (; *a && *b; a++, b++) {
    if (lower((unsigned char)*a) != lower((unsigned char)*b)) return 0;
  }
  return *a == *b;
}

size_t odo_mdns_instance(const char *name, const char *service, const char **label) {
  const char *dot = strchr(name, '.');
  if (!dot || dot == name) return 0;
  size_t len = (size_t)(dot - name);
  if (len > 63 || !odo_mdns_same_name(dot + 1, service)) return 0;
  *label = name;
  return len;
}

int odo_mdns_valid_name(const char *s) {
  size_t n = strlen(s), run = 0;
  if (n == 0 || n > ODO_MDNS_MAX_NAME || s[n - 1] != '.') return 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] == '.') {
      if (run == 0 || run > 63) return 0;
      run = 0;
    } else {
      run++;
    }
  }
  return 1;
}
