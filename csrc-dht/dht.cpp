/*
 * odo.dht - a DHT node for peer discovery: a thin C++ layer over OpenDHT's
 * DhtRunner, with a Lua face.
 *
 * A separate module, never linked into odo.core: OpenDHT is GPL-3.0+,
 * odo.core is MIT (README "Discovery through a DHT").
 *
 * Threads. OpenDHT runs its own threads (the node's loop, the socket's
 * receiver) and calls our callbacks on them. Those callbacks only copy
 * what they got into a queue (under a mutex) and write to an eventfd of
 * this module's own; Lua watches that descriptor through its adapter and
 * drains the queue with :poll() on the main thread. Lua is never called
 * from OpenDHT's threads, and no callback touches the runner.
 *
 * Stopping. :shutdown() asks OpenDHT to stop (asynchronous: its callback
 * comes later, on its thread, and only queues a "shutdown" event);
 * :close() then joins OpenDHT's threads and deletes the runner on the
 * main thread. :close() before the shutdown finished (a timeout, __gc)
 * joins at once: OpenDHT cancels what is in flight, and calls nothing
 * after join() returns, so a node closed mid-lookup leaves no thread.
 *
 * Values. A value is ours when its type is VALUE_TYPE and its data is
 *   "ODO1" | node id (32 bytes) | port (u16) | issued at (u64, Unix ms)
 *   | ttl (u32, ms) | host length (u8) | host
 * (big-endian; docs/PROTOCOL.md "DHT values"). Anything else found under
 * a topic is counted (bad_values) and dropped here.
 *
 * Lua errors (longjmp) must not cross live C++ objects: each Lua function
 * reads its arguments first (misuse raises there), then does its C++ work
 * in a scope that catches every exception and ends before it raises.
 * Only a memory error while pushing results (poll's event, a stats
 * string) could skip a destructor: a leak, never a corruption.
 */
/***
 * odo.dht: a DHT node (OpenDHT, GPL-3.0+) for `odo.discovery.dht`, which
 * is what programs use; built apart from odo.core (`make dht`, or the
 * odo-journal-dht rock). Runtime failures return nil, "NAME: message",
 * NAME; misuse raises.
 * @module odo.dht
 */
#include <sys/eventfd.h>
#include <unistd.h>
#include <errno.h>
#include <string.h>

#include <atomic>
#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include <opendht/dhtrunner.h>
#include <opendht/value.h>

extern "C" {
#include <lua.h>
#include <lauxlib.h>
}

#if LUA_VERSION_NUM < 502
#define lua_newuserdatauv(L, n, u) lua_newuserdata(L, n)
#define luaL_setfuncs(L, l, n) luaL_register(L, NULL, l)
#define luaL_newlib(L, l) (lua_newtable(L), luaL_register(L, NULL, l))
#define lua_rawlen lua_objlen
#define luaL_setmetatable(L, name) (luaL_getmetatable(L, name), lua_setmetatable(L, -2))
#endif

namespace {

const char *const MT = "odo.dht.Node";
const dht::ValueType::Id VALUE_TYPE = 0x6f64; /* "od" */
const char MAGIC[4] = {'O', 'D', 'O', '1'};
const size_t FIXED = 4 + 32 + 2 + 8 + 4 + 1;   /* everything but the host */
const size_t MAX_HOST = 253;
const size_t MAX_QUEUED_RECORDS = 4096;        /* records waiting for :poll() */
const char *const KEY_PREFIX = "odo-journal/dht/v1/";

enum Kind { EV_STATUS, EV_VALUES, EV_DONE, EV_PUT, EV_PING, EV_SHUTDOWN };

struct Record {
  std::string host;
  std::string id; /* 32 raw bytes */
  unsigned port;
  uint64_t issued_ms;
  uint32_t ttl_ms;
};

struct Event {
  Kind kind;
  long long token = 0;
  bool ok = false;
  bool expired = false;
  int status = 0;
  std::string host;
  unsigned port = 0;
  std::vector<Record> recs;
};

/* What OpenDHT's threads and the main thread share; its callbacks hold it
 * by shared_ptr, so it outlives whichever ends last. */
struct Shared {
  std::mutex mu;
  std::deque<Event> queue;
  size_t queued_records = 0;
  int efd = -1;
  std::atomic<unsigned long long> bad{0}, dropped{0};

  ~Shared() {
    if (efd >= 0) close(efd);
  }
  void push(Event &&ev) {
    {
      std::lock_guard<std::mutex> lk(mu);
      if (queued_records + ev.recs.size() > MAX_QUEUED_RECORDS) {
        dropped += ev.recs.size();
        ev.recs.clear();
        if (ev.kind == EV_VALUES) return;
      }
      queued_records += ev.recs.size();
      queue.push_back(std::move(ev));
    }
    uint64_t one = 1;
    /* a full counter (never, in practice) still leaves it readable */
    ssize_t n = write(efd, &one, sizeof one);
    (void)n;
  }
};

struct Box {
  dht::DhtRunner *runner;
  std::shared_ptr<Shared> *shared;
  std::map<long long, std::pair<dht::InfoHash, std::shared_future<size_t>>> *listens;
  std::map<std::string, std::vector<dht::Value::Id>> *puts; /* topic -> announced value ids */
  long long next_token;
  bool shutting_down;
};

uint64_t now_ms() {
  using namespace std::chrono;
  return (uint64_t)duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

dht::InfoHash topic_hash(const std::string &topic) {
  return dht::InfoHash::get(std::string(KEY_PREFIX) + topic);
}

void put_be(std::vector<uint8_t> &out, uint64_t v, int bytes) {
  for (int i = bytes - 1; i >= 0; i--) out.push_back((uint8_t)(v >> (8 * i)));
}

uint64_t get_be(const uint8_t *p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; i++) v = (v << 8) | p[i];
  return v;
}

bool host_ok(const uint8_t *p, size_t n) {
  if (n == 0 || n > MAX_HOST) return false;
  for (size_t i = 0; i < n; i++) {
    uint8_t c = p[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == ':'
          || c == '-' || c == '%' || c == '_'))
      return false;
  }
  return true;
}

/* One value found under a topic -> a record, or false (not ours). */
bool decode(const dht::Value &v, Record &r) {
  const std::vector<uint8_t> &d = v.data;
  if (v.type != VALUE_TYPE || d.size() < FIXED + 1 || d.size() > FIXED + MAX_HOST) return false;
  const uint8_t *p = d.data();
  if (memcmp(p, MAGIC, 4) != 0) return false;
  size_t hlen = p[FIXED - 1];
  if (FIXED + hlen != d.size() || !host_ok(p + FIXED, hlen)) return false;
  r.id.assign((const char *)p + 4, 32);
  r.port = (unsigned)get_be(p + 36, 2);
  r.issued_ms = get_be(p + 38, 8);
  r.ttl_ms = (uint32_t)get_be(p + 46, 4);
  r.host.assign((const char *)p + FIXED, hlen);
  return r.port != 0 && r.ttl_ms != 0;
}

Event values_event(Shared &sh, long long token, const std::vector<std::shared_ptr<dht::Value>> &vals, bool expired) {
  Event ev;
  ev.kind = EV_VALUES;
  ev.token = token;
  ev.expired = expired;
  for (const auto &v : vals) {
    Record r;
    if (v && decode(*v, r)) ev.recs.push_back(std::move(r));
    else sh.bad++;
  }
  return ev;
}

/* An OpenDHT callback that queues one event of `kind` (its argument as ok).
 * It holds the shared state weakly: after close, it does nothing. */
std::function<void(bool)> notifier(const std::shared_ptr<Shared> &sh, Kind kind, long long token,
                                   const std::string &host = std::string(), unsigned port = 0) {
  std::weak_ptr<Shared> weak = sh;
  return [weak, kind, token, host, port](bool ok) {
    if (auto s = weak.lock()) {
      Event ev;
      ev.kind = kind;
      ev.token = token;
      ev.ok = ok;
      ev.host = host;
      ev.port = port;
      s->push(std::move(ev));
    }
  };
}

/* A value with a random id of our choosing (so it can be cancelled). */
std::shared_ptr<dht::Value> new_value(dht::ValueType::Id type, std::vector<uint8_t> &&bytes) {
  auto value = std::make_shared<dht::Value>(type, std::move(bytes));
  std::random_device rdev;
  value->id = ((dht::Value::Id)rdev() << 32 | rdev()) | 1; /* never INVALID_ID (0) */
  return value;
}

int fail(lua_State *L, const char *name, const std::string &msg) {
  lua_pushnil(L);
  lua_pushfstring(L, "%s: %s", name, msg.c_str());
  lua_pushstring(L, name);
  return 3;
}

/* Runs fn, the C++ part of a Lua function that starts an operation, with
 * its exceptions caught; then pushes the operation's token, or nil,
 * "EIO: what", "EIO". */
template <typename F> int token_or_fail(lua_State *L, long long token, F &&fn) {
  std::string err;
  {
    try {
      fn();
    } catch (const std::exception &e) {
      err = e.what();
    }
  }
  if (!err.empty()) return fail(L, "EIO", err);
  lua_pushinteger(L, token);
  return 1;
}

Box *check_box(lua_State *L) {
  Box *b = (Box *)luaL_checkudata(L, 1, MT);
  if (!b->runner) luaL_error(L, "attempt to use a closed DHT node");
  return b;
}

const char *status_name(int s) {
  switch ((dht::NodeStatus)s) {
  case dht::NodeStatus::Connected: return "connected";
  case dht::NodeStatus::Connecting: return "connecting";
  default: return "disconnected";
  }
}

/* Joins OpenDHT's threads and frees everything (main thread only, never
 * from a callback). Idempotent. */
void finish(Box *b) {
  if (b->runner) {
    try {
      b->runner->join();
    } catch (...) {
    }
    delete b->runner;
    b->runner = nullptr;
  }
  delete b->listens;
  b->listens = nullptr;
  delete b->puts;
  b->puts = nullptr;
  delete b->shared; /* the eventfd closes with the last holder */
  b->shared = nullptr;
}

/*** Starts a DHT node (odo.dht.new).
 * opts: port (0: any), bind (IPv4 address, default "0.0.0.0"), bind6
 * (IPv6 address; none: no IPv6), network (OpenDHT network id, integer),
 * expiry_ms (how long our values live on nodes of ours),
 * peer_discovery (OpenDHT's multicast discovery; default false).
 * Returns the node, or nil, "NAME: message", NAME.
 * @function new
 */
int l_new(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_getfield(L, 1, "port");
  lua_Integer port = luaL_optinteger(L, -1, 0);
  lua_getfield(L, 1, "bind");
  const char *bind4 = luaL_optstring(L, -1, "0.0.0.0");
  lua_getfield(L, 1, "bind6");
  const char *bind6 = luaL_optstring(L, -1, NULL);
  lua_getfield(L, 1, "network");
  lua_Integer network = luaL_checkinteger(L, -1);
  lua_getfield(L, 1, "expiry_ms");
  lua_Integer expiry = luaL_optinteger(L, -1, 600000);
  lua_getfield(L, 1, "peer_discovery");
  bool peer_discovery = lua_toboolean(L, -1);
  lua_pop(L, 6);
  luaL_argcheck(L, port >= 0 && port <= 65535, 1, "port must be 0..65535");
  luaL_argcheck(L, network >= 0 && network <= 0xffffffffLL, 1, "network must be 0..4294967295");
  luaL_argcheck(L, expiry > 0, 1, "expiry_ms must be positive");

  Box *b = (Box *)lua_newuserdatauv(L, sizeof(Box), 0);
  memset(b, 0, sizeof *b);
  std::string err, name = "EIO";
  {
    try {
      auto sh = std::make_shared<Shared>();
      sh->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
      if (sh->efd < 0) throw std::runtime_error(std::string("eventfd: ") + strerror(errno));
      dht::DhtRunner::Config config;
      config.dht_config.node_config.network = (dht::NetId)network;
      config.threaded = true;
      config.peer_discovery = peer_discovery;
      config.peer_publish = peer_discovery;
      name = "EINVAL";
      config.bind4.setFamily(AF_INET);
      config.bind4.setAddress(bind4); /* throws on what is not an IPv4 address */
      config.bind4.setPort((in_port_t)port);
      if (bind6) {
        config.bind6.setFamily(AF_INET6);
        config.bind6.setAddress(bind6);
        config.bind6.setPort((in_port_t)port);
      }
      name = "EIO";
      dht::DhtRunner::Context context;
      std::weak_ptr<Shared> weak = sh;
      context.statusChangedCallback = [weak](dht::NodeStatus s4, dht::NodeStatus s6) {
        if (auto s = weak.lock()) {
          Event ev;
          ev.kind = EV_STATUS;
          ev.status = (int)std::max(s4, s6);
          s->push(std::move(ev));
        }
      };
      auto runner = std::make_unique<dht::DhtRunner>();
      std::string where = std::string(bind4) + ":" + std::to_string(port);
      name = "EADDRINUSE";
      try {
        runner->run(config, std::move(context));
      } catch (const std::exception &e) {
        throw std::runtime_error("cannot bind the DHT's UDP socket to " + where + ": " + e.what());
      }
      if (runner->getBoundPort(AF_INET) == 0) {
        runner->join();
        throw std::runtime_error("cannot bind the DHT's UDP socket to " + where
                                 + " (in use, or not an address of this host)");
      }
      name = "EIO";
      runner->registerType(dht::ValueType(VALUE_TYPE, "odo-journal peer", std::chrono::milliseconds(expiry)));
      b->shared = new std::shared_ptr<Shared>(sh);
      b->listens = new std::map<long long, std::pair<dht::InfoHash, std::shared_future<size_t>>>();
      b->puts = new std::map<std::string, std::vector<dht::Value::Id>>();
      b->runner = runner.release();
      b->next_token = 1;
    } catch (const std::exception &e) {
      err = e.what();
      finish(b);
    }
  }
  if (!b->runner) return fail(L, name.c_str(), err);
  luaL_setmetatable(L, MT);
  return 1;
}

/*** The descriptor that becomes readable when events are queued.
 * @function node:fd
 */
int l_fd(lua_State *L) {
  Box *b = check_box(L);
  lua_pushinteger(L, (*b->shared)->efd);
  return 1;
}

/*** The UDP port the node is bound to (IPv4).
 * @function node:port
 */
int l_port(lua_State *L) {
  Box *b = check_box(L);
  lua_pushinteger(L, b->runner->getBoundPort(AF_INET));
  return 1;
}

/*** Node statistics: {status, good, dubious, cached, incoming, bad_values,
 * dropped, node_id}.
 * @function node:stats
 */
int l_stats(lua_State *L) {
  Box *b = check_box(L);
  dht::NodeStats s4, s6;
  std::string id;
  {
    try {
      s4 = b->runner->getNodesStats(AF_INET);
      s6 = b->runner->getNodesStats(AF_INET6);
      id = b->runner->getNodeId().toString();
    } catch (...) {
    }
  }
  Shared &sh = **b->shared;
  lua_createtable(L, 0, 8);
  lua_pushinteger(L, s4.good_nodes + s6.good_nodes);
  lua_setfield(L, -2, "good");
  lua_pushinteger(L, s4.dubious_nodes + s6.dubious_nodes);
  lua_setfield(L, -2, "dubious");
  lua_pushinteger(L, s4.cached_nodes + s6.cached_nodes);
  lua_setfield(L, -2, "cached");
  lua_pushinteger(L, s4.incoming_nodes + s6.incoming_nodes);
  lua_setfield(L, -2, "incoming");
  lua_pushinteger(L, (lua_Integer)sh.bad.load());
  lua_setfield(L, -2, "bad_values");
  lua_pushinteger(L, (lua_Integer)sh.dropped.load());
  lua_setfield(L, -2, "dropped");
  lua_pushstring(L, id.c_str());
  lua_setfield(L, -2, "node_id");
  return 1;
}

/*** The IPv4 address other DHT nodes see this one at (the most reported),
 * or nil while none has told.
 * @function node:public_address
 */
int l_public_address(lua_State *L) {
  Box *b = check_box(L);
  std::string addr;
  {
    try {
      auto list = b->runner->getPublicAddress(AF_INET);
      if (!list.empty()) addr = list.front().toString();
    } catch (...) {
    }
  }
  /* SockAddr::toString gives "ip:port" for IPv4 */
  size_t colon = addr.rfind(':');
  if (colon != std::string::npos) addr.resize(colon);
  if (addr.empty()) lua_pushnil(L);
  else lua_pushstring(L, addr.c_str());
  return 1;
}

/*** Pings a DHT node at host:port to join through it; a "ping" event
 * follows (ok = whether it answered). Returns true, or nil, err, name
 * when host:port does not resolve.
 * @function node:bootstrap
 */
int l_bootstrap(lua_State *L) {
  Box *b = check_box(L);
  const char *host = luaL_checkstring(L, 2);
  lua_Integer port = luaL_checkinteger(L, 3);
  luaL_argcheck(L, port > 0 && port <= 65535, 3, "port must be 1..65535");
  std::string err;
  {
    try {
      auto addrs = dht::SockAddr::resolve(host, std::to_string(port));
      if (addrs.empty()) {
        err = std::string("cannot resolve DHT bootstrap host ") + host;
      } else {
        b->runner->bootstrap(std::move(addrs), notifier(*b->shared, EV_PING, 0, host, (unsigned)port));
      }
    } catch (const std::exception &e) {
      err = e.what();
    }
  }
  if (!err.empty()) return fail(L, "ENOTFOUND", err);
  lua_pushboolean(L, 1);
  return 1;
}

/* Reads a 64-hex-digit node id into 32 bytes; false when it is not one. */
bool unhex_id(const char *s, size_t n, uint8_t out[32]) {
  if (n != 64) return false;
  for (size_t i = 0; i < 64; i++) {
    int c = s[i], v;
    if (c >= '0' && c <= '9') v = c - '0';
    else if (c >= 'a' && c <= 'f') v = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F') v = c - 'A' + 10;
    else return false;
    if (i % 2 == 0) out[i / 2] = (uint8_t)(v << 4);
    else out[i / 2] |= (uint8_t)v;
  }
  return true;
}

/*** Announces {host, port, node id} under topic, once (call again before
 * ttl_ms passes). (topic, host, port, id_hex, ttl_ms); returns a token,
 * and a "put" event with it follows (ok = stored somewhere).
 * @function node:announce
 */
int l_announce(lua_State *L) {
  Box *b = check_box(L);
  size_t tlen, hlen, idlen;
  const char *topic = luaL_checklstring(L, 2, &tlen);
  const char *host = luaL_checklstring(L, 3, &hlen);
  lua_Integer port = luaL_checkinteger(L, 4);
  const char *id = luaL_checklstring(L, 5, &idlen);
  lua_Integer ttl = luaL_checkinteger(L, 6);
  uint8_t raw[32];
  luaL_argcheck(L, host_ok((const uint8_t *)host, hlen), 3, "not a host name or IP address");
  luaL_argcheck(L, port > 0 && port <= 65535, 4, "port must be 1..65535");
  luaL_argcheck(L, unhex_id(id, idlen, raw), 5, "not a node id (64 hex digits)");
  luaL_argcheck(L, ttl > 0 && ttl <= 0xffffffffLL, 6, "ttl_ms must be 1..4294967295");
  long long token = b->next_token++;
  return token_or_fail(L, token, [&]() {
    std::vector<uint8_t> data(MAGIC, MAGIC + 4);
    data.insert(data.end(), raw, raw + 32);
    put_be(data, (uint64_t)port, 2);
    put_be(data, now_ms(), 8);
    put_be(data, (uint64_t)ttl, 4);
    put_be(data, hlen, 1);
    data.insert(data.end(), host, host + hlen);
    auto value = new_value(VALUE_TYPE, std::move(data));
    std::string key(topic, tlen);
    auto &ids = (*b->puts)[key];
    ids.push_back(value->id);
    if (ids.size() > 8) ids.erase(ids.begin());
    b->runner->put(topic_hash(key), value, notifier(*b->shared, EV_PUT, token));
  });
}

/*** Puts arbitrary bytes under topic with a value type of the caller's
 * (topic, type, data): how specs and interoperability tests write values
 * that are not ours. Returns true.
 * @function node:put_raw
 */
int l_put_raw(lua_State *L) {
  Box *b = check_box(L);
  size_t tlen, dlen;
  const char *topic = luaL_checklstring(L, 2, &tlen);
  lua_Integer type = luaL_checkinteger(L, 3);
  const char *data = luaL_checklstring(L, 4, &dlen);
  luaL_argcheck(L, type >= 0 && type <= 0xffff, 3, "type must be 0..65535");
  {
    try {
      std::vector<uint8_t> bytes((const uint8_t *)data, (const uint8_t *)data + dlen);
      auto value = new_value((dht::ValueType::Id)type, std::move(bytes));
      b->runner->put(topic_hash(std::string(topic, tlen)), value, [](bool) {});
    } catch (...) {
    }
  }
  lua_pushboolean(L, 1);
  return 1;
}

/*** Stops announcing under topic (values already stored expire).
 * @function node:unannounce
 */
int l_unannounce(lua_State *L) {
  Box *b = check_box(L);
  size_t tlen;
  const char *topic = luaL_checklstring(L, 2, &tlen);
  {
    try {
      std::string key(topic, tlen);
      auto it = b->puts->find(key);
      if (it != b->puts->end()) {
        for (auto vid : it->second) b->runner->cancelPut(topic_hash(key), vid);
        b->puts->erase(it);
      }
    } catch (...) {
    }
  }
  return 0;
}

/*** Looks topic up once; returns a token: "values" events with it, then
 * a "done" event.
 * @function node:lookup
 */
int l_lookup(lua_State *L) {
  Box *b = check_box(L);
  size_t tlen;
  const char *topic = luaL_checklstring(L, 2, &tlen);
  long long token = b->next_token++;
  return token_or_fail(L, token, [&]() {
    std::weak_ptr<Shared> weak = *b->shared;
    b->runner->get(
        topic_hash(std::string(topic, tlen)),
        [weak, token](const std::vector<std::shared_ptr<dht::Value>> &vals) {
          if (auto s = weak.lock()) s->push(values_event(*s, token, vals, false));
          return true;
        },
        notifier(*b->shared, EV_DONE, token));
  });
}

/*** Listens to topic: "values" events with the returned token for every
 * value that appears (expired = false) or expires (expired = true).
 * @function node:listen
 */
int l_listen(lua_State *L) {
  Box *b = check_box(L);
  size_t tlen;
  const char *topic = luaL_checklstring(L, 2, &tlen);
  long long token = b->next_token++;
  return token_or_fail(L, token, [&]() {
    std::weak_ptr<Shared> weak = *b->shared;
    auto h = topic_hash(std::string(topic, tlen));
    auto fut = b->runner->listen(h, [weak, token](const std::vector<std::shared_ptr<dht::Value>> &vals, bool expired) {
      if (auto s = weak.lock()) s->push(values_event(*s, token, vals, expired));
      return true;
    });
    (*b->listens)[token] = std::make_pair(h, fut.share());
  });
}

/*** Stops a listen (its token).
 * @function node:unlisten
 */
int l_unlisten(lua_State *L) {
  Box *b = check_box(L);
  long long token = (long long)luaL_checkinteger(L, 2);
  {
    try {
      auto it = b->listens->find(token);
      if (it != b->listens->end()) {
        b->runner->cancelListen(it->second.first, it->second.second);
        b->listens->erase(it);
      }
    } catch (...) {
    }
  }
  return 0;
}

/*** Starts a graceful stop; a "shutdown" event follows, then call
 * :close(). Idempotent.
 * @function node:shutdown
 */
int l_shutdown(lua_State *L) {
  Box *b = check_box(L);
  if (b->shutting_down) return 0;
  b->shutting_down = true;
  {
    try {
      auto done = notifier(*b->shared, EV_SHUTDOWN, 0);
      b->runner->shutdown([done]() { done(true); }, true);
    } catch (...) {
    }
  }
  return 0;
}

void push_event(lua_State *L, const Event &ev) {
  static const char *const kinds[] = {"status", "values", "done", "put", "ping", "shutdown"};
  lua_createtable(L, 0, 6);
  lua_pushstring(L, kinds[ev.kind]);
  lua_setfield(L, -2, "kind");
  if (ev.token) {
    lua_pushinteger(L, ev.token);
    lua_setfield(L, -2, "token");
  }
  lua_pushboolean(L, ev.ok);
  lua_setfield(L, -2, "ok");
  switch (ev.kind) {
  case EV_STATUS:
    lua_pushstring(L, status_name(ev.status));
    lua_setfield(L, -2, "status");
    break;
  case EV_PING:
    lua_pushstring(L, ev.host.c_str());
    lua_setfield(L, -2, "host");
    lua_pushinteger(L, ev.port);
    lua_setfield(L, -2, "port");
    break;
  case EV_VALUES: {
    lua_pushboolean(L, ev.expired);
    lua_setfield(L, -2, "expired");
    lua_createtable(L, (int)ev.recs.size(), 0);
    int i = 1;
    for (const Record &r : ev.recs) {
      static const char hexd[] = "0123456789abcdef";
      char hex[64];
      for (size_t k = 0; k < 32; k++) {
        hex[2 * k] = hexd[(uint8_t)r.id[k] >> 4];
        hex[2 * k + 1] = hexd[(uint8_t)r.id[k] & 15];
      }
      lua_createtable(L, 0, 5);
      lua_pushlstring(L, r.host.data(), r.host.size());
      lua_setfield(L, -2, "host");
      lua_pushinteger(L, r.port);
      lua_setfield(L, -2, "port");
      lua_pushlstring(L, hex, 64);
      lua_setfield(L, -2, "id");
      lua_pushnumber(L, (lua_Number)r.issued_ms);
      lua_setfield(L, -2, "issued_ms");
      lua_pushinteger(L, r.ttl_ms);
      lua_setfield(L, -2, "ttl_ms");
      lua_rawseti(L, -2, i++);
    }
    lua_setfield(L, -2, "values");
    break;
  }
  default: break;
  }
}

/*** Every queued event, oldest first: an array of {kind = "status" |
 * "values" | "done" | "put" | "ping" | "shutdown", ...}. Clears the
 * descriptor's readiness.
 * @function node:poll
 */
int l_poll(lua_State *L) {
  Box *b = (Box *)luaL_checkudata(L, 1, MT);
  lua_newtable(L);
  if (!b->shared) return 1;
  Shared &sh = **b->shared;
  uint64_t n;
  ssize_t r = read(sh.efd, &n, sizeof n);
  (void)r;
  int i = 1;
  for (;;) {
    Event ev;
    {
      std::lock_guard<std::mutex> lk(sh.mu);
      if (sh.queue.empty()) break;
      ev = std::move(sh.queue.front());
      sh.queue.pop_front();
      sh.queued_records -= ev.recs.size();
    }
    push_event(L, ev);
    lua_rawseti(L, -2, i++);
  }
  return 1;
}

/*** Joins OpenDHT's threads and frees the node (also __gc and __close).
 * Idempotent. Call it from the loop, after the "shutdown" event or when
 * waiting longer is pointless.
 * @function node:close
 */
int l_close(lua_State *L) {
  Box *b = (Box *)luaL_checkudata(L, 1, MT);
  finish(b);
  return 0;
}

int l_tostring(lua_State *L) {
  Box *b = (Box *)luaL_checkudata(L, 1, MT);
  lua_pushfstring(L, "odo.dht.Node (%s)", b->runner ? "open" : "closed");
  return 1;
}

const luaL_Reg methods[] = {
    {"fd", l_fd},
    {"port", l_port},
    {"stats", l_stats},
    {"public_address", l_public_address},
    {"bootstrap", l_bootstrap},
    {"announce", l_announce},
    {"unannounce", l_unannounce},
    {"put_raw", l_put_raw},
    {"lookup", l_lookup},
    {"listen", l_listen},
    {"unlisten", l_unlisten},
    {"shutdown", l_shutdown},
    {"poll", l_poll},
    {"close", l_close},
    {NULL, NULL},
};

/*** The wall clock in Unix milliseconds (what values' issued_ms use).
 * @function now_ms
 */
int l_now_ms(lua_State *L) {
  lua_pushnumber(L, (lua_Number)now_ms());
  return 1;
}

const luaL_Reg functions[] = {
    {"new", l_new},
    {"now_ms", l_now_ms},
    {NULL, NULL},
};

} // namespace

extern "C" int luaopen_odo_dht(lua_State *L);

/* odo.dht: new(opts), now_ms(), VALUE_TYPE, KEY_PREFIX. */
extern "C" int luaopen_odo_dht(lua_State *L) {
  if (luaL_newmetatable(L, MT)) {
    luaL_setfuncs(L, methods, 0);
    lua_pushvalue(L, -1);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, l_close);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, l_tostring);
    lua_setfield(L, -2, "__tostring");
  }
  lua_pop(L, 1);
  luaL_newlib(L, functions);
  lua_pushinteger(L, VALUE_TYPE);
  lua_setfield(L, -2, "VALUE_TYPE");
  lua_pushstring(L, KEY_PREFIX);
  lua_setfield(L, -2, "KEY_PREFIX");
  return 1;
}
