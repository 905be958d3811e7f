#!/usr/bin/python3
"""bench/peers/redis_streams.py - Redis Streams' side of bench/peers.lua (one mode a
process; the servers are started and stopped by bench/peers.lua).

  redis_streams.py wait PORT                  waits (10 s) until the server answers PING
  redis_streams.py fill PORT N BYTES          XADDs N events of BYTES bytes to stream
                                      "bench", pipelined by 1000; prints
                                      "filled N <seconds>"
  redis_streams.py source PORT                prints "port PORT", then reads commands:
                                      live N / live_stop / quit, as
                                      bench/sync_peer.lua's source does
  redis_streams.py replica PRIMARY REPLICA N  prints "started <monotonic ns>", sends
                                      REPLICAOF to the replica server, polls
                                      (every 2 ms) until its link is up and
                                      XLEN is N, prints "caught_up <seconds>",
                                      then reads live events from the replica
                                      (XREAD BLOCK) and answers expect N / quit
                                      as bench/sync_peer.lua's replica does
  redis_streams.py produce PORT EVENTS BATCH WARM COUNT
                                      against a server with appendfsync always:
                                      WARM + COUNT XADDs one at a time (the
                                      latency of the COUNT), then EVENTS in
                                      pipelines of BATCH; prints
                                      "produce <events/s> <p50 ms> <p99 ms>"

Live events carry time.monotonic_ns() (CLOCK_MONOTONIC, the clock of
luv's uv.hrtime and Node's process.hrtime) taken just before the XADD.
"""
import sys
import threading
import time

import redis

STREAM = "bench"


def say(*words):
    sys.stdout.write(" ".join(str(w) for w in words) + "\n")
    sys.stdout.flush()


def conn(port):
    return redis.Redis(host="127.0.0.1", port=int(port))


def pct(xs, p):
    """The p-quantile of the sorted list xs, nearest rank (0 when empty)."""
    if not xs:
        return 0.0
    import math
    return xs[max(0, math.ceil(len(xs) * p) - 1)]


def summary(lat):
    lat = sorted(lat)
    mean = sum(lat) / len(lat) if lat else 0.0
    return "%.3f %.3f %.3f %.3f" % (pct(lat, 0.5), pct(lat, 0.99), lat[-1] if lat else 0.0, mean)


def wait(port):
    deadline = time.monotonic() + 10
    while True:
        try:
            conn(port).ping()
            return say("up")
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def fill(port, n, size):
    r, data, t0 = conn(port), b"x" * int(size), time.monotonic()
    left = int(n)
    while left > 0:
        p = r.pipeline(transaction=False)
        for _ in range(min(1000, left)):
            p.xadd(STREAM, {"d": data})
        left -= len(p.execute())
    say("filled", r.xlen(STREAM), "%.3f" % (time.monotonic() - t0))


class Live:
    """Appends N events at one per millisecond on a fixed schedule, in a
    thread; stop() ends it early."""

    def __init__(self, r, n):
        self.r, self.n, self.sent = r, n, 0
        threading.Thread(target=self.run, daemon=True).start()

    def stop(self):
        self.n = self.sent

    def run(self):
        t0 = time.monotonic_ns()
        while self.sent < self.n:
            due = t0 + self.sent * 1000000
            now = time.monotonic_ns()
            if due > now:
                time.sleep((due - now) / 1e9)
            self.r.xadd(STREAM, {"d": str(time.monotonic_ns())})
            self.sent += 1
        say("live_sent", self.sent)


def source(port):
    r, live = conn(port), None
    say("port", port)
    for line in sys.stdin:
        words = line.split()
        if words[:1] == ["live"] and len(words) == 2:
            live = Live(r, int(words[1]))
        elif words == ["live_stop"]:
            if live:
                live.stop()
        elif words == ["quit"]:
            return
        else:
            raise SystemExit("unknown command: " + line)


def replica(primary, port, n):
    r, n = conn(port), int(n)
    t0 = time.monotonic_ns()
    say("started", t0)
    r.replicaof("127.0.0.1", int(primary))
    while True:
        info = r.info("replication")
        if info.get("master_link_status") == "up" and not info.get("master_sync_in_progress") \
                and r.xlen(STREAM) >= n:
            break
        time.sleep(0.002)
    say("caught_up", "%.6f" % ((time.monotonic_ns() - t0) / 1e9))
    state = {"lat": [], "want": 0}
    lock = threading.Lock()
    last = r.xrevrange(STREAM, count=1)[0][0]

    def read():
        nonlocal last
        rr = conn(port)
        while True:
            for _, entries in rr.xread({STREAM: last}, block=0):
                now = time.monotonic_ns()
                with lock:
                    for eid, fields in entries:
                        last = eid
                        state["lat"].append((now - int(fields[b"d"])) / 1e6)
                    if state["want"] and len(state["lat"]) >= state["want"]:
                        say("live", len(state["lat"]), summary(state["lat"]))
                        state["lat"], state["want"] = [], 0
    threading.Thread(target=read, daemon=True).start()
    say("ready")
    for line in sys.stdin:
        words = line.split()
        if words[:1] == ["expect"] and len(words) == 2:
            with lock:
                state["lat"], state["want"] = [], int(words[1])
            say("expecting", words[1])
        elif words == ["quit"]:
            return
        else:
            raise SystemExit("unknown command: " + line)


def produce(port, events, batch, warm, count):
    r, data = conn(port), b"x" * 100
    events, batch, warm, count = int(events), int(batch), int(warm), int(count)
    lat = []
    for i in range(warm + count):
        t = time.monotonic_ns()
        r.xadd("produce", {"d": data})
        if i >= warm:
            lat.append((time.monotonic_ns() - t) / 1e6)
    lat.sort()
    t0, left = time.monotonic(), events
    while left > 0:
        p = r.pipeline(transaction=False)
        for _ in range(min(batch, left)):
            p.xadd("produce", {"d": data})
        left -= len(p.execute())
    say("produce", "%.0f" % (events / (time.monotonic() - t0)), "%.3f" % pct(lat, 0.5), "%.3f" % pct(lat, 0.99))


MODES = {"wait": wait, "fill": fill, "source": source, "replica": replica, "produce": produce}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in MODES:
        raise SystemExit(__doc__)
    MODES[sys.argv[1]](*sys.argv[2:])
