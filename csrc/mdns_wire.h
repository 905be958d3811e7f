/* mdns_wire.h - our own checks on mDNS packets and records, before and
 * after libmdnsd sees them: a strict, bounds-checked walk of a packet (the
 * library's parser takes no length), the TTL cap of a legacy unicast
 * answer, DNS-SD TXT strings and instance names. No Lua, no allocation:
 * fuzzed through fuzz/mdns_fuzz.c. */
#ifndef ODO_MDNS_WIRE_H
#define ODO_MDNS_WIRE_H

#include <stddef.h>
#include <stdint.h>

#define ODO_MDNS_PORT 5353
#define ODO_MDNS_MAX_PACKET 9000  /* RFC 6762 §17: at most 9000 bytes */
#define ODO_MDNS_MAX_PTR 4095     /* libmdnsd clamps pointers to 4095 */
#define ODO_MDNS_MAX_NAME 255     /* dotted text, final dot included */
#define ODO_MDNS_LEGACY_TTL 10    /* RFC 6762 §6.7 */

/* Checks that `p` (n bytes) is a DNS message libmdnsd can parse without
 * reading outside it: a 12-byte header, then exactly the counted questions
 * and records; every name within the packet, labels of 1..63 bytes with
 * neither '.' nor NUL in them, at most 255 bytes dotted, compression
 * pointers only backwards and below 4096; every record's rdata inside the
 * packet, and inside its own rdlength for PTR/NS/CNAME/SRV names, A of 4
 * bytes, AAAA of 16. Returns 0, or -1 with a reason in why (a static
 * string). Trailing bytes after the last record are allowed. */
int odo_mdns_check(const uint8_t *p, size_t n, const char **why);

/* Lowers every record TTL of a packet that passed odo_mdns_check to at
 * most `cap` seconds (a legacy unicast answer). Returns 0 or -1. */
int odo_mdns_cap_ttl(uint8_t *p, size_t n, uint32_t cap);

/* One "key=value" string of a TXT record's rdata, as odo_txt_next finds
 * it: the key (not NUL-terminated) and the value (has_value 0 for a bare
 * "key", RFC 6763 §6.4). */
typedef struct {
  const uint8_t *key, *value;
  size_t key_len, value_len;
  int has_value;
} odo_txt_item;

/* Walks TXT rdata: *off starts at 0. Returns 1 with *item filled, 0 at the
 * end, -1 when a string runs past the rdata. Empty strings and strings
 * whose key is empty or not printable ASCII are skipped (RFC 6763 §6.4). */
int odo_txt_next(const uint8_t *rdata, size_t len, size_t *off, odo_txt_item *item);

/* The instance label of `name` ("<label>.<service>"), when name is one
 * label followed by service (both dotted, as libmdnsd spells them, e.g.
 * "odo-1a2b._odo._tcp.local."); compared case-insensitively. Returns the
 * label's length (1..63) with *label pointing into name, or 0. */
size_t odo_mdns_instance(const char *name, const char *service, const char **label);

/* Whether two dotted names are equal, ASCII case-insensitively. */
int odo_mdns_same_name(const char *a, const char *b);

/* Whether `s` is a usable dotted name: 1..255 bytes ending in '.', labels
 * of 1..63 bytes. */
int odo_mdns_valid_name(const char *s);

#endif
