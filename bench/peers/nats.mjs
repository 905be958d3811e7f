// bench/peers/nats.mjs - NATS JetStream's side of bench/peers.lua (one mode
// a process; the servers are started and stopped by bench/peers.lua). The
// nats.js client comes from the npm prefix ODO_BENCH_NPM (bench/peers.lua
// installs it into build/bench-npm).
//
//   nats.mjs wait URL                 waits (10 s) until the server answers
//   nats.mjs fill URL N BYTES         makes stream BENCH (subjects bench.>,
//                                     file storage) and publishes N events of
//                                     BYTES bytes with acknowledgement, 1000
//                                     in flight; prints "filled N <seconds>"
//   nats.mjs source URL               prints "port URL", then reads commands:
//                                     live N / live_stop / quit, as
//                                     bench/sync_peer.lua's source does
//   nats.mjs replica LEAF_URL DOMAIN N
//                                     on the leaf server (its own JetStream
//                                     domain): waits until the hub's API
//                                     ($JS.<DOMAIN>.API) answers through the
//                                     leaf link, prints "started <ns>", makes
//                                     stream MIRROR mirroring BENCH there,
//                                     polls (every 5 ms) until it holds N,
//                                     prints "caught_up <seconds>", then reads
//                                     live events from MIRROR (an ordered
//                                     consumer from "new") and answers
//                                     expect N / quit as sync_peer's replica
//   nats.mjs produce URL EVENTS BATCH WARM COUNT
//                                     stream PRODUCE (file storage): WARM +
//                                     COUNT publishes awaited one at a time
//                                     (latency of the COUNT), then EVENTS in
//                                     groups of BATCH awaited together; prints
//                                     "produce <events/s> <p50 ms> <p99 ms>"
//
// Live events carry process.hrtime.bigint() (CLOCK_MONOTONIC, as luv's
// uv.hrtime) taken just before the publish.
import { requireNpm, say, now, sleep, seconds, pct, commands, liveSource, liveReplica, main } from "./common.mjs";

const { connect, StorageType, DeliverPolicy } = requireNpm("nats");

const open = (url) => connect({ servers: url, maxReconnectAttempts: 0 });

async function wait(url) {
  const deadline = Date.now() + 10000;
  for (;;) {
    try {
      const nc = await open(url);
      await nc.close();
      return say("up");
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await sleep(20);
    }
  }
}

async function fill(url, n, size) {
  const nc = await open(url);
  const jsm = await nc.jetstreamManager();
  await jsm.streams.add({ name: "BENCH", subjects: ["bench.>"], storage: StorageType.File });
  const js = nc.jetstream(), data = new Uint8Array(Number(size)).fill(120), t0 = now();
  let left = Number(n);
  while (left > 0) {
    const k = Math.min(1000, left), acks = [];
    for (let i = 0; i < k; i++) acks.push(js.publish("bench.e", data));
    await Promise.all(acks);
    left -= k;
  }
  const info = await jsm.streams.info("BENCH");
  say("filled", info.state.messages, seconds(t0).toFixed(3));
  await nc.close();
}

async function source(url) {
  const nc = await open(url);
  const js = nc.jetstream();
  say("port", url);
  await liveSource((stamp) => js.publish("bench.live", new TextEncoder().encode(stamp)).catch((e) => {
    console.error("nats source: " + e.message);
    process.exit(1);
  }));
  await nc.close();
}

async function replica(url, domain, n) {
  const nc = await open(url);
  for (let i = 0; ; i++) { // the leaf link is up once the hub's API answers through it
    try {
      await nc.request(`$JS.${domain}.API.INFO`, new Uint8Array(0), { timeout: 500 });
      break;
    } catch (e) {
      if (i > 100) throw e;
      await sleep(50);
    }
  }
  const jsm = await nc.jetstreamManager();
  const t0 = now();
  say("started", t0);
  await jsm.streams.add({ name: "MIRROR", storage: StorageType.File,
    mirror: { name: "BENCH", external: { api: `$JS.${domain}.API` } } });
  while ((await jsm.streams.info("MIRROR")).state.messages < Number(n)) await sleep(5);
  say("caught_up", seconds(t0).toFixed(6));
  const js = nc.jetstream();
  const consumer = await js.consumers.get("MIRROR", { deliver_policy: DeliverPolicy.New });
  const msgs = await consumer.consume();
  const live = liveReplica();
  (async () => {
    for await (const m of msgs) live.received(new TextDecoder().decode(m.data));
  })();
  await live.run();
  await msgs.close();
  await nc.close();
}

async function produce(url, events, batch, warm, count) {
  const nc = await open(url);
  const jsm = await nc.jetstreamManager();
  await jsm.streams.add({ name: "PRODUCE", subjects: ["produce.>"], storage: StorageType.File });
  const js = nc.jetstream(), data = new Uint8Array(100).fill(120), lat = [];
  for (let i = 0; i < Number(warm) + Number(count); i++) {
    const t = now();
    await js.publish("produce.e", data);
    if (i >= Number(warm)) lat.push(Number(now() - t) / 1e6);
  }
  lat.sort((a, b) => a - b);
  const t0 = now();
  let left = Number(events);
  while (left > 0) {
    const k = Math.min(Number(batch), left), acks = [];
    for (let i = 0; i < k; i++) acks.push(js.publish("produce.e", data));
    await Promise.all(acks);
    left -= k;
  }
  const rate = Number(events) / seconds(t0);
  say("produce", rate.toFixed(0), pct(lat, 0.5).toFixed(3), pct(lat, 0.99).toFixed(3));
  await nc.close();
}

main("nats", { wait, fill, source, replica, produce });
