/* dns_answer.h - reads SRV records, TTLs included, from a raw DNS answer.
 *
 * c-ares 1.18 parses SRV replies without their TTLs, so the core reads
 * the answer section itself (RFC 1035 §4.1, RFC 2782). Only bytes of the
 * message are trusted to be bytes: every length, count and compression
 * pointer is checked before it is followed. This is what fuzz/ fuzzes.
 */
#ifndef ODO_DNS_ANSWER_H
#define ODO_DNS_ANSWER_H

#include <stddef.h>
#include <stdint.h>

#define ODO_DNS_MAX_NAME 255 /* wire bytes of a name, root label included */
#define ODO_DNS_MAX_TEXT 254 /* its text (at most 253 characters) + NUL */
#define ODO_DNS_MAX_SRV 64   /* SRV records kept from one answer */
#define ODO_DNS_HEADER 12
#define ODO_DNS_TYPE_SRV 33
#define ODO_DNS_CLASS_IN 1

typedef struct odo_srv {
  uint16_t priority, weight, port;
  uint32_t ttl; /* seconds; a TTL with its top bit set reads as 0 */
  char target[ODO_DNS_MAX_TEXT]; /* "host.example" or "." (no service) */
} odo_srv;

/* Reads the name at *pos of the message (len bytes) into text (at least
 * ODO_DNS_MAX_TEXT bytes): labels joined by dots, "." for the root.
 * Follows compression pointers, which must each point before the lowest
 * offset read so far (so no loop can form). On return *pos is just past
 * the name where it started. Returns 1, or 0 with *why set when the name
 * runs past the message, is longer than 255 bytes or uses a reserved
 * label type. *plain (optional) is cleared when a label holds a byte
 * other than a letter, digit, '-' or '_' (text then has '?' there). */
int odo_dns_name(const uint8_t *msg, size_t len, size_t *pos, char *text,
                 int *plain, const char **why);

/* Reads the SRV records (class IN) of the answer section of the message,
 * in wire order, into out (room for max). Records of other types are
 * skipped; so are SRV records whose target is not a plain host name
 * (*skipped counts them, when not NULL) and any past max. Returns the
 * number read, or -1 with *why set when the message is malformed:
 * truncated, a bad name anywhere, or an SRV record whose data is not
 * priority, weight, port and a name. */
int odo_dns_srv_answer(const uint8_t *msg, size_t len, odo_srv *out, int max,
                       int *skipped, const char **why);

#endif
