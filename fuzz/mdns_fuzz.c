/* mdns_fuzz.c - libFuzzer target for everything we compile on the mDNS
 * receive path: the packet walk before libmdnsd's parser, the record
 * choice that bounds its cache, the instance tracking that turns records
 * into candidates, instance names, TXT strings and the legacy TTL cap
 * (csrc/mdns_wire.c, csrc/mdns_engine.c).
 *
 * Input: packets, each as u16be length | bytes (a short last one takes
 * what is left). A fresh engine that publishes "odo-fuzz" and browses
 * takes each packet as sent from 10.0.0.2, the odd ones from a legacy
 * port; after each, every instance found is checked and its TXT walked,
 * and what the engine has to send is drained and must pass the walk. Any
 * broken promise aborts: a bug found is a crash.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mdns_engine.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *what) {
  fprintf(stderr, "mdns_fuzz: %s\n", what);
  abort();
}

static void walk_txt(const uint8_t *rd, size_t len) {
  size_t off = 0, prev = 0;
  odo_txt_item it;
  int r;
  while ((r = odo_txt_next(rd, len, &off, &it)) == 1) {
    if (off <= prev || off > len) fail("TXT walk did not advance within the rdata");
    if (it.key < rd || it.key + it.key_len > rd + len || it.key_len == 0) fail("TXT key outside the rdata");
    if (it.value < rd || it.value + it.value_len > rd + len) fail("TXT value outside the rdata");
    prev = off;
  }
  if (r == 0 && off != len) fail("TXT walk ended early");
}

static void drain(odo_mdns *e) {
  const uint8_t *p;
  size_t n;
  struct in_addr to;
  uint16_t port;
  for (int i = 0; i < 64 && odo_mdns_output(e, &p, &n, &to, &port); i++) {
    const char *why;
    if (odo_mdns_check(p, n, &why)) {
      fprintf(stderr, "mdns_fuzz: we sent a packet we refuse: %s\n", why);
      abort();
    }
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* the pure helpers on the raw input */
  const char *why;
  uint8_t copy[ODO_MDNS_MAX_PACKET];
  if (odo_mdns_check(data, size, &why) == 0) {
    memcpy(copy, data, size);
    if (odo_mdns_cap_ttl(copy, size, ODO_MDNS_LEGACY_TTL)) fail("TTL cap refused a packet the walk took");
    if (odo_mdns_check(copy, size, &why)) fail("TTL cap broke a packet");
  }
  walk_txt(data, size);
  char name[300];
  size_t nl = size < sizeof name - 1 ? size : sizeof name - 1;
  memcpy(name, data, nl);
  name[nl] = 0;
  const char *label;
  size_t ll = odo_mdns_instance(name, ODO_MDNS_DEFAULT_SERVICE, &label);
  if (ll > 63 || (ll && label != name)) fail("instance label out of bounds");
  (void)odo_mdns_valid_name(name);

  static const uint8_t txt[] = "\x06id=abc\x09swarm=odo";
  odo_mdns_config c;
  memset(&c, 0, sizeof c);
  c.instance = "odo-fuzz._odo._tcp.local.";
  c.host = "odo-fuzz.local.";
  inet_pton(AF_INET, "10.0.0.1", &c.ip);
  c.port = 4000;
  c.txt = txt;
  c.txt_len = sizeof txt - 1;
  c.ttl = 120;
  c.max_instances = 4;
  c.browse = 1;
  char err[200];
  odo_mdns *e = odo_mdns_new(&c, err, sizeof err);
  if (!e) fail(err);
  drain(e);
  struct in_addr from;
  inet_pton(AF_INET, "10.0.0.2", &from);
  size_t off = 0;
  for (int k = 0; off < size; k++) {
    size_t len = size - off;
    if (len >= 2) {
      size_t want = (size_t)data[off] << 8 | data[off + 1];
      off += 2;
      len = size - off < want ? size - off : want;
    } else {
      off = size;
      len = 0;
    }
    odo_mdns_input(e, data + off, len, from, (k & 1) ? 40000 : ODO_MDNS_PORT, &why);
    off += len;
    odo_mdns_found found[8];
    size_t n = odo_mdns_instances(e, found, 8);
    if (n > 4) fail("more instances than max_instances");
    for (size_t i = 0; i < n; i++) {
      if (!found[i].name || !found[i].target || found[i].port == 0) fail("incomplete instance reported");
      if (strcmp(found[i].name, c.instance) == 0) fail("own instance reported");
      if (found[i].txt) walk_txt(found[i].txt, found[i].txt_len);
    }
    drain(e);
    (void)odo_mdns_sleep_ms(e);
  }
  odo_mdns_stop(e);
  drain(e);
  odo_mdns_free(e);
  return 0;
}
