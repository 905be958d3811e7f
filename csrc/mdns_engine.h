/* mdns_engine.h - one mDNS responder and browser over libmdnsd, sans-I/O:
 * packets in (with the sender's address), packets out (with where to send
 * them), the time of the next wake-up, and the instances of one DNS-SD
 * service found on the link. It publishes one instance (PTR, SRV, TXT, A
 * and optionally AAAA), answers queries for it (legacy unicast ones by
 * unicast, TTLs capped at 10 s), sends goodbyes on stop, and bounds what
 * it caches. No Lua: the binding is csrc/mdns.c, the fuzz target
 * fuzz/mdns_fuzz.c. IPv4 only on the wire (libmdnsd 0.12). */
#ifndef ODO_MDNS_ENGINE_H
#define ODO_MDNS_ENGINE_H

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>

#include "mdns_wire.h"

#define ODO_MDNS_MAX_INSTANCES 256
#define ODO_MDNS_DEFAULT_SERVICE "_odo._tcp.local."

typedef struct odo_mdns odo_mdns;

typedef struct {
  const char *service;    /* dotted, e.g. "_odo._tcp.local." */
  const char *instance;   /* full dotted instance name; NULL: browse only */
  const char *host;       /* dotted host name for SRV and A */
  struct in_addr ip;      /* A record (required to publish) */
  int has_ip6;
  struct in6_addr ip6;    /* AAAA record when has_ip6 */
  uint16_t port;          /* SRV port */
  const uint8_t *txt;     /* TXT rdata (length-prefixed strings) */
  size_t txt_len;
  uint32_t ttl;           /* seconds, for every published record */
  unsigned max_instances; /* 1..ODO_MDNS_MAX_INSTANCES */
  int browse;             /* query for the service's instances */
} odo_mdns_config;

/* One instance found: complete once it has an SRV record and an address
 * for the SRV target. Pointers stay valid until the next engine call. */
typedef struct {
  const char *name;       /* full instance name */
  const char *target;     /* SRV target host */
  char ip[INET6_ADDRSTRLEN];
  uint16_t port;
  const uint8_t *txt;     /* TXT rdata, or NULL */
  size_t txt_len;
  long expires_in;        /* seconds until the first of its records expires */
} odo_mdns_found;

/* A new engine; NULL with a reason in err when the config is unusable or
 * memory is short. */
odo_mdns *odo_mdns_new(const odo_mdns_config *c, char *err, size_t errlen);
void odo_mdns_free(odo_mdns *e);

/* A datagram received from from:port (port in host order). Returns 0, or
 * -1 with a reason when the packet was refused (nothing of it is used). */
int odo_mdns_input(odo_mdns *e, const uint8_t *p, size_t n, struct in_addr from, uint16_t port,
                   const char **why);

/* The next datagram to send: 1 with *p, *n (valid until the next call),
 * *to and *port (host order) set, or 0 when none is due now. */
int odo_mdns_output(odo_mdns *e, const uint8_t **p, size_t *n, struct in_addr *to, uint16_t *port);

/* Milliseconds until odo_mdns_output should be asked again. */
long odo_mdns_sleep_ms(odo_mdns *e);

/* Stops: every published record is sent once more with TTL 0 (drain
 * odo_mdns_output), and input is ignored from now on. */
void odo_mdns_stop(odo_mdns *e);

/* How many instances the engine tracks at most (max_instances). */
size_t odo_mdns_capacity(const odo_mdns *e);

/* Fills up to max instances found (not our own); returns how many. */
size_t odo_mdns_instances(odo_mdns *e, odo_mdns_found *out, size_t max);

#endif
