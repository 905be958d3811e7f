/* sync_msg_fuzz.c - libFuzzer target for the sync message codec
 * (csrc/sync_msg.c).
 *
 * Input: a selector byte (the message type is 0x10 + selector % 7) | the
 * payload. The payload goes through that type's decoder; when it is
 * accepted, every item of its lists is read back, and the message encoded
 * from the decoded struct must be exactly the payload (decoders accept a
 * message only whole, so nothing is lost or invented). A refusal must say
 * why. Any broken promise aborts: a bug found is a crash.
 */
#include <stdio.h>
#include <stdlib.h>

#include "sync_msg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *what, int type) {
  fprintf(stderr, "sync_msg_fuzz: %s (%s)\n", what, odo_msg_name(type));
  abort();
}

/* Every item of a list section must read, and the reads must end at its
 * end. kind: 0 keys, 1 catalogue entries, 2 subscribe entries, 3 ids,
 * 4 events. */
static void walk(const odo_msg_list *l, int kind, int type) {
  odo_rd r;
  odo_rd_init(&r, l->p, l->len);
  for (uint32_t i = 0; i < l->count; i++) {
    int ok;
    const uint8_t *der;
    const char *id;
    size_t n;
    odo_msg_cat_entry c;
    odo_msg_sub_entry s;
    odo_event ev;
    switch (kind) {
    case 0: ok = odo_msg_key_next(&r, &der, &n); break;
    case 1: ok = odo_msg_cat_entry_next(&r, &c); break;
    case 2: ok = odo_msg_sub_entry_next(&r, &s); break;
    case 3: ok = odo_msg_id_next(&r, &id, &n); break;
    default: ok = odo_msg_event_next(&r, &ev); break;
    }
    if (!ok) fail("an item of an accepted message does not read", type);
  }
  if (odo_rd_left(&r) != 0) fail("a list section has bytes past its items", type);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  int type, ok;
  const uint8_t *p;
  size_t n;
  odo_err e = {0};
  odo_buf b;
  if (size < 1) return 0;
  type = ODO_MSG_CATALOGUE + data[0] % 7;
  p = data + 1;
  n = size - 1;
  odo_buf_init(&b);
  switch (type) {
  case ODO_MSG_CATALOGUE: {
    odo_msg_catalogue m;
    ok = odo_msg_catalogue_decode(p, n, &m, &e);
    if (ok) {
      walk(&m.keys, 0, type);
      walk(&m.entries, 1, type);
      odo_msg_catalogue_encode(&b, &m);
    }
    break;
  }
  case ODO_MSG_SUBSCRIBE: {
    odo_msg_subscribe m;
    ok = odo_msg_subscribe_decode(p, n, &m, &e);
    if (ok) {
      walk(&m.entries, 2, type);
      odo_msg_subscribe_encode(&b, &m);
    }
    break;
  }
  case ODO_MSG_UNSUBSCRIBE: {
    odo_msg_unsubscribe m;
    ok = odo_msg_unsubscribe_decode(p, n, &m, &e);
    if (ok) {
      walk(&m.ids, 3, type);
      odo_msg_unsubscribe_encode(&b, &m);
    }
    break;
  }
  case ODO_MSG_SNAPSHOT: {
    odo_msg_snapshot m;
    ok = odo_msg_snapshot_decode(p, n, &m, &e);
    if (ok) odo_msg_snapshot_encode(&b, &m);
    break;
  }
  case ODO_MSG_EVENTS: {
    odo_msg_events m;
    ok = odo_msg_events_decode(p, n, &m, &e);
    if (ok) {
      walk(&m.events, 4, type);
      odo_msg_events_encode(&b, &m);
    } else if (m.id_len != 0 && (m.id == NULL || (const uint8_t *)m.id != p + 1)) {
      fail("a refused EVENTS names a stream id that is not its own", type);
    }
    break;
  }
  case ODO_MSG_CAUGHT_UP: {
    odo_msg_caught_up m;
    ok = odo_msg_caught_up_decode(p, n, &m, &e);
    if (ok) odo_msg_caught_up_encode(&b, &m);
    break;
  }
  default: {
    odo_msg_refused m;
    ok = odo_msg_refused_decode(p, n, &m, &e);
    if (ok) odo_msg_refused_encode(&b, &m);
    break;
  }
  }
  if (ok) {
    if (b.failed) fail("an accepted message does not encode", type);
    if (b.len != n || (n && memcmp(b.p, p, n) != 0))
      fail("an accepted message re-encodes to different bytes", type);
  } else if (e.name == NULL || strcmp(e.name, "EPROTO") != 0 || e.msg[0] == '\0' ||
             memchr(e.msg, '\0', sizeof e.msg) == NULL) {
    fail("a refusal without a reason", type);
  }
  odo_buf_free(&b);
  return 0;
}
