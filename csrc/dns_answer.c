/* dns_answer.c - the SRV answer reader (see dns_answer.h): a DNS message
 * header, its questions skipped, then each answer record; SRV records of
 * class IN are kept with their TTLs. No allocation, no library call. */
#include "dns_answer.h"

static int host_byte(uint8_t c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || c == '-' || c == '_';
}

static uint16_t be16(const uint8_t *p) {
  return (uint16_t)(((unsigned)p[0] << 8) | p[1]);
}

int odo_dns_name(const uint8_t *msg, size_t len, size_t *pos, char *text,
                 int *plain, const char **why) {
  size_t p = *pos, lowest = *pos, wire = 0, out = 0;
  int jumped = 0;
  if (plain) *plain = 1;
  for (;;) {
    uint8_t c;
    if (p >= len) goto truncated;
    c = msg[p];
    if ((c & 0xC0) == 0xC0) {
      size_t to;
      if (p + 1 >= len) goto truncated;
      to = ((size_t)(c & 0x3F) << 8) | msg[p + 1];
      if (!jumped) *pos = p + 2;
      jumped = 1;
      /* strictly backwards from everything read so far: a loop would
       * have to come back up, so it cannot form */
      if (to >= lowest) {
        *why = "a compression pointer does not point backwards";
        return 0;
      }
      lowest = p = to;
      continue;
    }
    if (c & 0xC0) {
      *why = "a name uses a reserved label type";
      return 0;
    }
    if (c == 0) break;
    if (p + 1 + c > len) goto truncated;
    wire += 1 + (size_t)c;
    if (wire + 1 > ODO_DNS_MAX_NAME) {
      *why = "a name is longer than 255 bytes";
      return 0;
    }
    if (out > 0) text[out++] = '.';
    for (size_t i = 0; i < c; i++) {
      uint8_t b = msg[p + 1 + i];
      if (!host_byte(b)) {
        if (plain) *plain = 0;
        b = '?';
      }
      text[out++] = (char)b;
    }
    p += 1 + (size_t)c;
  }
  if (!jumped) *pos = p + 1;
  if (out == 0) text[out++] = '.';
  text[out] = '\0';
  return 1;
truncated:
  *why = "a name runs past the end of the message";
  return 0;
}

int odo_dns_srv_answer(const uint8_t *msg, size_t len, odo_srv *out, int max,
                       int *skipped, const char **why) {
  char scratch[ODO_DNS_MAX_TEXT];
  size_t pos = ODO_DNS_HEADER;
  unsigned qd, an;
  int n = 0;
  if (skipped) *skipped = 0;
  if (len < ODO_DNS_HEADER) {
    *why = "the message is shorter than a DNS header";
    return -1;
  }
  qd = be16(msg + 4);
  an = be16(msg + 6);
  for (unsigned i = 0; i < qd; i++) {
    if (!odo_dns_name(msg, len, &pos, scratch, NULL, why)) return -1;
    if (len - pos < 4) goto truncated;
    pos += 4; /* type, class */
  }
  for (unsigned i = 0; i < an; i++) {
    uint16_t type, klass, rdlen;
    uint32_t ttl;
    size_t rd;
    if (!odo_dns_name(msg, len, &pos, scratch, NULL, why)) return -1;
    if (len - pos < 10) goto truncated;
    type = be16(msg + pos);
    klass = be16(msg + pos + 2);
    ttl = ((uint32_t)msg[pos + 4] << 24) | ((uint32_t)msg[pos + 5] << 16) |
          ((uint32_t)msg[pos + 6] << 8) | msg[pos + 7];
    rdlen = be16(msg + pos + 8);
    rd = pos + 10;
    if (len - rd < rdlen) goto truncated;
    pos = rd + rdlen;
    if (type != ODO_DNS_TYPE_SRV || klass != ODO_DNS_CLASS_IN) continue;
    {
      size_t at = rd + 6;
      int plain;
      odo_srv *r = n < max ? &out[n] : NULL;
      if (rdlen < 7) goto bad_srv;
      if (!odo_dns_name(msg, len, &at, r ? r->target : scratch, &plain, why))
        return -1;
      if (at != pos) goto bad_srv; /* the name must end the record's data */
      if (!plain || !r) {
        if (skipped) (*skipped)++;
        continue;
      }
      r->priority = be16(msg + rd);
      r->weight = be16(msg + rd + 2);
      r->port = be16(msg + rd + 4);
      r->ttl = (ttl & 0x80000000u) ? 0 : ttl; /* RFC 2181 §8 */
      n++;
    }
  }
  return n;
truncated:
  *why = "the message ends inside a record";
  return -1;
bad_srv:
  *why = "an SRV record's data is not priority, weight, port and a name";
  return -1;
}
