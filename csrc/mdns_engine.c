/* mdns_engine.c - the mDNS engine over libmdnsd (see mdns_engine.h).
 *
 * libmdnsd 0.12 does the protocol: caching with TTLs, answering queries
 * (multicast, or unicast to a legacy querier), retrying its own queries,
 * announcing and saying goodbye. This file adds what the library lacks:
 * packets are checked by odo_mdns_check before its parser (which takes no
 * length) sees them, and are copied into a zeroed buffer of the size it
 * assumes; only records about our service's instances reach its cache,
 * and at most max_instances of them, so memory stays bounded; the
 * additional section of an answer is cached too (0.12 reads only the
 * answer section); QU questions are answered (0.12 skips them); legacy
 * unicast answers carry TTLs of at most 10 s (RFC 6762 §6.7). */
#include "mdns_engine.h"

#include <arpa/inet.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <libmdnsd/mdnsd.h>

#define FRAME 1400

typedef struct {
  char name[ODO_MDNS_MAX_NAME + 1];
  char target[ODO_MDNS_MAX_NAME + 1];
  int seen;
  uint64_t next_ask;         /* ms (wall clock, as libmdnsd's cache) */
  unsigned tries;
} tracked;

struct odo_mdns {
  mdns_daemon_t *d;
  struct message *m;         /* one parse/build block, reused */
  uint8_t *in;               /* zeroed copy of a received packet */
  uint8_t out[ODO_MDNS_MAX_PACKET];
  char service[ODO_MDNS_MAX_NAME + 1];
  char instance[ODO_MDNS_MAX_NAME + 1];
  char host[ODO_MDNS_MAX_NAME + 1];
  unsigned max;
  size_t n;
  int stopped;
  tracked t[ODO_MDNS_MAX_INSTANCES];
  /* a response's answers and additionals, as odo_mdns_check bounds them */
  struct resource all[ODO_MDNS_MAX_PACKET / 11];
  uint8_t keep[ODO_MDNS_MAX_PACKET / 11];
};

/* libmdnsd's parser reads names through compression pointers up to 4095
 * and copies rdata lengths up to its own packet size from the start of
 * the buffer: a buffer this large keeps every read inside it. */
#define IN_BUF (MAX_PACKET_LEN + ODO_MDNS_MAX_PTR + 512)

static int noop_answer(mdns_answer_t *a, void *arg) {
  (void)a; (void)arg;
  return 0;
}

static unsigned long now_s(void) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  return (unsigned long)tv.tv_sec;
}

/* A cached answer is live while its expiry (absolute seconds, as libmdnsd
 * keeps it) is ahead. */
static mdns_answer_t *first_live(mdns_daemon_t *d, const char *name, int type, unsigned long now) {
  for (mdns_answer_t *a = mdnsd_list(d, name, type, NULL); a; a = mdnsd_list(d, name, type, a)) {
    if (a->ttl > now) return a;
  }
  return NULL;
}

static int set_err(char *err, size_t len, const char *msg) {
  snprintf(err, len, "%s", msg);
  return 0;
}

static int publish(odo_mdns *e, const odo_mdns_config *c, char *err, size_t errlen) {
  mdns_record_t *r = mdnsd_shared(e->d, e->service, QTYPE_PTR, c->ttl);
  if (!r) return set_err(err, errlen, "out of memory");
  mdnsd_set_host(e->d, r, e->instance);
  r = mdnsd_shared(e->d, e->instance, QTYPE_SRV, c->ttl);
  if (!r) return set_err(err, errlen, "out of memory");
  mdnsd_set_srv(e->d, r, 0, 0, c->port, e->host);
  r = mdnsd_shared(e->d, e->instance, QTYPE_TXT, c->ttl);
  if (!r) return set_err(err, errlen, "out of memory");
  /* an empty TXT record is one empty string (RFC 6763 §6.1) */
  static const char empty_txt[1] = {0};
  if (c->txt_len) mdnsd_set_raw(e->d, r, (const char *)c->txt, (unsigned short)c->txt_len);
  else mdnsd_set_raw(e->d, r, empty_txt, 1);
  r = mdnsd_shared(e->d, e->host, QTYPE_A, c->ttl);
  if (!r) return set_err(err, errlen, "out of memory");
  mdnsd_set_ip(e->d, r, c->ip);
  mdnsd_set_address(e->d, c->ip);
  if (c->has_ip6) {
    r = mdnsd_shared(e->d, e->host, QTYPE_AAAA, c->ttl);
    if (!r) return set_err(err, errlen, "out of memory");
    mdnsd_set_ipv6(e->d, r, c->ip6);
  }
  return 1;
}

static int copy_name(char *dst, const char *src, const char *what, char *err, size_t errlen) {
  if (!src || !odo_mdns_valid_name(src)) {
    snprintf(err, errlen, "%s must be a dotted name ending in '.', labels of 1 to 63 bytes, at most 255 bytes",
             what);
    return 0;
  }
  memcpy(dst, src, strlen(src) + 1);
  return 1;
}

odo_mdns *odo_mdns_new(const odo_mdns_config *c, char *err, size_t errlen) {
  odo_mdns *e = calloc(1, sizeof *e);
  if (!e) { set_err(err, errlen, "out of memory"); return NULL; }
  if (!copy_name(e->service, c->service ? c->service : ODO_MDNS_DEFAULT_SERVICE, "service", err, errlen))
    goto fail;
  if (c->instance) {
    const char *label;
    if (!copy_name(e->instance, c->instance, "instance", err, errlen) ||
        !copy_name(e->host, c->host, "host", err, errlen))
      goto fail;
    if (!odo_mdns_instance(e->instance, e->service, &label)) {
      snprintf(err, errlen, "instance must be one label followed by the service name %s", e->service);
      goto fail;
    }
    if (c->port == 0) { set_err(err, errlen, "port must be 1 to 65535"); goto fail; }
    if (c->ip.s_addr == 0) { set_err(err, errlen, "an IPv4 address is needed to publish"); goto fail; }
    if (c->txt_len > 1300) { set_err(err, errlen, "TXT data longer than 1300 bytes"); goto fail; }
  }
  e->max = c->max_instances ? c->max_instances : 64;
  if (e->max > ODO_MDNS_MAX_INSTANCES) e->max = ODO_MDNS_MAX_INSTANCES;
  e->m = calloc(1, sizeof *e->m);
  e->in = calloc(1, IN_BUF);
  e->d = mdnsd_new(QCLASS_IN, FRAME);
  if (!e->m || !e->in || !e->d) { set_err(err, errlen, "out of memory"); goto fail; }
  if (c->instance && !publish(e, c, err, errlen)) goto fail;
  if (c->browse) mdnsd_query(e->d, e->service, QTYPE_PTR, noop_answer, NULL);
  return e;
fail:
  odo_mdns_free(e);
  return NULL;
}

void odo_mdns_free(odo_mdns *e) {
  if (!e) return;
  if (e->d) mdnsd_free(e->d);
  free(e->m);
  free(e->in);
  free(e);
}

/* ---- what reaches the cache ---------------------------------------------- */

static int is_own(odo_mdns *e, const char *name) {
  return e->instance[0] && odo_mdns_same_name(name, e->instance);
}

static size_t ptr_count(odo_mdns *e, const char *inst, int *cached) {
  size_t n = 0;
  *cached = 0;
  for (mdns_answer_t *a = mdnsd_list(e->d, e->service, QTYPE_PTR, NULL); a;
       a = mdnsd_list(e->d, e->service, QTYPE_PTR, a)) {
    n++;
    if (a->rdname && strcmp(a->rdname, inst) == 0) *cached = 1;
  }
  return n;
}

/* Whether the message names instance `inst` in a PTR it keeps. */
static int ptr_in(odo_mdns *e, struct resource *rr, int count, const uint8_t *keep, const char *inst) {
  for (int i = 0; i < count; i++) {
    if (keep[i] && rr[i].type == QTYPE_PTR && strcmp(rr[i].name, e->service) == 0 &&
        strcmp(rr[i].known.ptr.name, inst) == 0)
      return 1;
  }
  return 0;
}

static int srv_target_in(odo_mdns *e, struct resource *rr, int count, const char *host) {
  for (int i = 0; i < count; i++) {
    const char *label;
    if (rr[i].type == QTYPE_SRV && !is_own(e, rr[i].name) &&
        odo_mdns_instance(rr[i].name, e->service, &label) && strcmp(rr[i].known.srv.name, host) == 0)
      return 1;
  }
  return 0;
}

static int tracked_target(odo_mdns *e, const char *host) {
  for (size_t i = 0; i < e->n; i++) {
    if (strcmp(e->t[i].target, host) == 0) return 1;
  }
  return 0;
}

/* Marks in keep[] the records of a response worth caching: PTRs of our
 * service (while fewer than max instances are cached, or a known one, or
 * a goodbye), the SRV and TXT of instances cached or named in the same
 * message, and the addresses of SRV targets; never our own. Two passes, so
 * SRV and TXT records may come before their PTR. */
static void choose(odo_mdns *e, struct resource *rr, int count, uint8_t *keep) {
  size_t have = 0;
  int cached;
  memset(keep, 0, (size_t)count);
  for (int i = 0; i < count; i++) {
    const char *label;
    if (rr[i].type != QTYPE_PTR || strcmp(rr[i].name, e->service) != 0) continue;
    const char *inst = rr[i].known.ptr.name;
    if (!odo_mdns_instance(inst, e->service, &label) || is_own(e, inst)) continue;
    size_t n = ptr_count(e, inst, &cached);
    if (cached || rr[i].ttl == 0 || n + have < e->max) {
      keep[i] = 1;
      if (!cached) have++;
    }
  }
  for (int i = 0; i < count; i++) {
    const char *label;
    switch (rr[i].type) {
    case QTYPE_SRV:
    case QTYPE_TXT:
      if (!odo_mdns_instance(rr[i].name, e->service, &label) || is_own(e, rr[i].name)) break;
      ptr_count(e, rr[i].name, &cached);
      keep[i] = (uint8_t)(cached || ptr_in(e, rr, count, keep, rr[i].name));
      break;
    case QTYPE_A:
    case QTYPE_AAAA:
      if (e->host[0] && strcmp(rr[i].name, e->host) == 0) break;
      keep[i] = (uint8_t)(tracked_target(e, rr[i].name) || srv_target_in(e, rr, count, rr[i].name));
      break;
    default:
      break;
    }
  }
}

/* ---- tracking instances ------------------------------------------------- */

static uint64_t now_ms(void) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  return (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
}

/* Drops cached records of `name` of these types: a cache-flush record
 * with TTL 0 of each, fed to libmdnsd as if received. (0.12 cannot drop a
 * query, nor expire a name's records but by this or its daily sweep.) */
static void flush_name(odo_mdns *e, const char *name, const unsigned short *types, int ntypes) {
  struct resource rr[4];
  struct message *m = e->m; /* free between calls: only its header is used */
  memset(rr, 0, sizeof rr);
  memset(m, 0, offsetof(struct message, _packet));
  for (int i = 0; i < ntypes && i < 4; i++) {
    rr[i].name = (char *)name;
    rr[i].type = types[i];
    rr[i].class = 32768 + QCLASS_IN;
    rr[i].ttl = 0;
  }
  m->header.qr = 1;
  m->an = rr;
  m->ancount = (unsigned short)ntypes;
  struct in_addr none = {0};
  mdnsd_in(e->d, m, none, ODO_MDNS_PORT);
}

/* Forgets tracked instance i and what its records left in the cache. */
static void forget(odo_mdns *e, size_t i) {
  static const unsigned short inst_types[] = {QTYPE_SRV, QTYPE_TXT};
  static const unsigned short host_types[] = {QTYPE_A, QTYPE_AAAA};
  char target[sizeof e->t[i].target];
  memcpy(target, e->t[i].target, sizeof target);
  flush_name(e, e->t[i].name, inst_types, 2);
  e->t[i] = e->t[--e->n];
  if (target[0] && !tracked_target(e, target)) flush_name(e, target, host_types, 2);
}

/* Follows the cached PTRs: instances new are tracked (and asked about at
 * once), instances gone (goodbye, expiry) forgotten, and each one's SRV
 * target noted. */
static void track(odo_mdns *e) {
  unsigned long now = now_s();
  for (size_t i = 0; i < e->n; i++) e->t[i].seen = 0;
  for (mdns_answer_t *a = mdnsd_list(e->d, e->service, QTYPE_PTR, NULL); a;
       a = mdnsd_list(e->d, e->service, QTYPE_PTR, a)) {
    const char *label;
    if (a->ttl <= now || !a->rdname || is_own(e, a->rdname) || strlen(a->rdname) > ODO_MDNS_MAX_NAME) continue;
    if (!odo_mdns_instance(a->rdname, e->service, &label)) continue;
    size_t i;
    for (i = 0; i < e->n && strcmp(e->t[i].name, a->rdname) != 0; i++) {}
    if (i == e->n) {
      if (e->n >= e->max) continue;
      memset(&e->t[i], 0, sizeof e->t[i]);
      memcpy(e->t[i].name, a->rdname, strlen(a->rdname) + 1);
      e->n++;
    }
    e->t[i].seen = 1;
  }
  for (size_t i = e->n; i-- > 0;) {
    if (!e->t[i].seen) forget(e, i);
  }
  for (size_t i = 0; i < e->n; i++) {
    mdns_answer_t *srv = first_live(e->d, e->t[i].name, QTYPE_SRV, now);
    if (srv && srv->rdname && strlen(srv->rdname) <= ODO_MDNS_MAX_NAME)
      memcpy(e->t[i].target, srv->rdname, strlen(srv->rdname) + 1);
  }
}

/* ---- our own questions ---------------------------------------------------
 * libmdnsd 0.12 cannot unregister a query (its _q_done indexes the query
 * table with the cache table's size), so it asks only for the service's
 * PTRs; the SRV, TXT and A records of each instance are asked for here,
 * when missing or within 8 s of expiry, retried after 1, 2, 4... 60 s. */

#define REFRESH_MS 8000

/* When t's records need asking about next (ms), and which: bit 0 SRV, 1
 * TXT, 2 A of the target. */
static unsigned wanted(odo_mdns *e, tracked *t, uint64_t now, uint64_t *due) {
  unsigned long s = (unsigned long)(now / 1000);
  unsigned want = 0;
  uint64_t soon = UINT64_MAX;
  mdns_answer_t *srv = first_live(e->d, t->name, QTYPE_SRV, s);
  mdns_answer_t *txt = first_live(e->d, t->name, QTYPE_TXT, s);
  mdns_answer_t *a = NULL;
  if (srv && srv->rdname) {
    a = first_live(e->d, srv->rdname, QTYPE_A, s);
    if (!a) a = first_live(e->d, srv->rdname, QTYPE_AAAA, s);
  }
  mdns_answer_t *have[3] = {srv, txt, a};
  for (int k = 0; k < 3; k++) {
    if (k == 2 && !srv) break;
    if (!have[k]) { want |= 1u << k; continue; }
    uint64_t refresh = (uint64_t)have[k]->ttl * 1000 - REFRESH_MS;
    if (refresh <= now) want |= 1u << k;
    else if (refresh < soon) soon = refresh;
  }
  *due = want ? t->next_ask : soon;
  return want;
}

/* Builds one query packet for every instance due now (as many as fit). */
static int ask(odo_mdns *e, uint64_t now) {
  struct message *m = e->m;
  memset(m, 0, offsetof(struct message, _packet));
  int questions = 0;
  for (size_t i = 0; i < e->n && questions < 24; i++) {
    tracked *t = &e->t[i];
    uint64_t due;
    unsigned want = wanted(e, t, now, &due);
    if (!want) { t->tries = 0; continue; }
    if (due > now) continue;
    if (want & 1) { message_qd(m, t->name, QTYPE_SRV, QCLASS_IN); questions++; }
    if (want & 2) { message_qd(m, t->name, QTYPE_TXT, QCLASS_IN); questions++; }
    if ((want & 4) && t->target[0]) { message_qd(m, t->target, QTYPE_A, QCLASS_IN); questions++; }
    uint64_t wait = t->tries >= 6 ? 60000 : 1000u << t->tries;
    t->tries++;
    t->next_ask = now + wait;
  }
  return questions;
}

static uint64_t next_question(odo_mdns *e, uint64_t now) {
  uint64_t best = UINT64_MAX;
  for (size_t i = 0; i < e->n; i++) {
    uint64_t due;
    if (wanted(e, &e->t[i], now, &due) || due != UINT64_MAX) {
      if (due < best) best = due;
    }
  }
  return best;
}

/* ---- I/O ---------------------------------------------------------------- */

static int compact(struct resource *rr, int count, const uint8_t *keep) {
  int k = 0;
  for (int i = 0; i < count; i++) {
    if (keep[i]) rr[k++] = rr[i];
  }
  return k;
}

int odo_mdns_input(odo_mdns *e, const uint8_t *p, size_t n, struct in_addr from, uint16_t port,
                   const char **why) {
  const char *dummy;
  if (!why) why = &dummy;
  if (e->stopped) { *why = "the engine is stopped"; return -1; }
  if (odo_mdns_check(p, n, why)) return -1;
  if ((p[2] & 0x78) != 0) { *why = "not a standard query or response (opcode)"; return -1; }
  memset(e->in, 0, n);
  memcpy(e->in, p, n);
  memset(e->m, 0, sizeof *e->m);
  if (message_parse(e->m, e->in)) {
    memset(e->in, 0, n);
    *why = "libmdnsd could not parse it";
    return -1;
  }
  struct message *m = e->m;
  if (m->header.qr == 0) {
    /* a QU question (top bit of the class) is answered like a QM one */
    for (int i = 0; m->qd && i < m->qdcount; i++) m->qd[i].class &= 0x7FFF;
    mdnsd_in(e->d, m, from, port);
  } else if (m->header.rcode == 0) {
    /* answers and additionals together, so a PTR in one vouches for an
     * SRV in the other, and additionals get cached too */
    int count = 0;
    for (int i = 0; m->an && i < m->ancount; i++) e->all[count++] = m->an[i];
    for (int i = 0; m->ar && i < m->arcount; i++) e->all[count++] = m->ar[i];
    choose(e, e->all, count, e->keep);
    count = compact(e->all, count, e->keep);
    if (count) {
      m->an = e->all;
      m->ancount = (unsigned short)count;
      m->nscount = m->arcount = 0;
      /* 0.12 stores the sender's address in a cached PTR and then writes
       * it into the PTR's rdata when it sends the PTR as a known answer (a
       * malformed query that others drop): cache answers with no address */
      struct in_addr none = {0};
      mdnsd_in(e->d, m, none, port);
    }
  }
  memset(e->in, 0, n);
  track(e);
  return 0;
}

int odo_mdns_output(odo_mdns *e, const uint8_t **p, size_t *n, struct in_addr *to, uint16_t *port) {
  unsigned short nport;
  if (!mdnsd_out(e->d, e->m, to, &nport)) {
    if (e->stopped || !ask(e, now_ms())) return 0;
    to->s_addr = inet_addr("224.0.0.251");
    nport = htons(ODO_MDNS_PORT);
  }
  int len = message_packet_len(e->m);
  if (len <= 0 || (size_t)len > sizeof e->out) return 0;
  memcpy(e->out, message_packet(e->m), (size_t)len);
  *port = ntohs(nport);
  if (*port != ODO_MDNS_PORT) odo_mdns_cap_ttl(e->out, (size_t)len, ODO_MDNS_LEGACY_TTL);
  *p = e->out;
  *n = (size_t)len;
  return 1;
}

long odo_mdns_sleep_ms(odo_mdns *e) {
  struct timeval *tv = mdnsd_sleep(e->d);
  long ms = (long)tv->tv_sec * 1000 + (long)tv->tv_usec / 1000;
  if (ms < 0) ms = 0;
  if (!e->stopped) {
    uint64_t now = now_ms(), q = next_question(e, now);
    if (q != UINT64_MAX) {
      long ask_in = q <= now ? 0 : (long)(q - now);
      if (ask_in < ms) ms = ask_in;
    }
  }
  return ms;
}

void odo_mdns_stop(odo_mdns *e) {
  if (e->stopped) return;
  e->stopped = 1;
  mdnsd_shutdown(e->d);
}

size_t odo_mdns_capacity(const odo_mdns *e) { return e->max; }

size_t odo_mdns_instances(odo_mdns *e, odo_mdns_found *out, size_t max) {
  unsigned long now = now_s();
  size_t k = 0;
  if (!e->stopped) track(e);
  for (size_t i = 0; i < e->n && k < max; i++) {
    mdns_answer_t *srv = first_live(e->d, e->t[i].name, QTYPE_SRV, now);
    if (!srv || !srv->rdname || srv->srv.port == 0) continue;
    mdns_answer_t *a = first_live(e->d, srv->rdname, QTYPE_A, now);
    mdns_answer_t *a6 = a ? NULL : first_live(e->d, srv->rdname, QTYPE_AAAA, now);
    if (!a && !a6) continue;
    odo_mdns_found *f = &out[k];
    memset(f, 0, sizeof *f);
    if (a) inet_ntop(AF_INET, &a->ip, f->ip, sizeof f->ip);
    else inet_ntop(AF_INET6, &a6->ip6, f->ip, sizeof f->ip);
    f->name = e->t[i].name;
    f->target = srv->rdname;
    f->port = srv->srv.port;
    unsigned long exp = srv->ttl < (a ? a : a6)->ttl ? srv->ttl : (a ? a : a6)->ttl;
    mdns_answer_t *txt = first_live(e->d, e->t[i].name, QTYPE_TXT, now);
    if (txt && txt->rdata) {
      f->txt = txt->rdata;
      f->txt_len = txt->rdlen;
      if (txt->ttl < exp) exp = txt->ttl;
    }
    f->expires_in = (long)(exp - now);
    k++;
  }
  return k;
}
