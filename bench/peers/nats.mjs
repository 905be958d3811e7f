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
import { createInterface } from "node:readline";
import { createRequire } from "node:module";
import { resolve } from "node:path";

const require = createRequire(resolve(process.env.ODO_BENCH_NPM || "build/bench-npm", "package.json"));
const { connect, StorageType, DeliverPolicy } = require("nats");

const say = (...w) => process.stdout.write(w.join(" ") + "\n");
const now = () => process.hrtime.bigint();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function pct(sorted, p) {
  return sorted.length ? sorted[Math.max(0, Math.ceil(sorted.length * p) - 1)] : 0;
}
function summary(lat) {
  lat.sort((a, b) => a - b);
  const mean = lat.length ? lat.reduce((a, b) => a + b, 0) / lat.length : 0;
  return [pct(lat, 0.5), pct(lat, 0.99), lat[lat.length - 1] || 0, mean].map((x) => x.toFixed(3)).join(" ");
}

async function commands(fn) {
  for await (const line of createInterface({ input: process.stdin })) {
    if (line === "quit") return;
    fn(line.split(" "));
  }
}

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
  say("filled", info.state.messages, (Number(now() - t0) / 1e9).toFixed(3));
  await nc.close();
}

async function source(url) {
  const nc = await open(url);
  const js = nc.jetstream();
  let live = null;
  say("port", url);
  await commands((w) => {
    if (w[0] === "live" && w.length === 2) {
      const n = Number(w[1]), t0 = now(), st = { n, sent: 0 };
      live = st;
      const tick = () => {
        const due = Math.min(st.n, Number((now() - t0) / 1000000n) + 1);
        while (st.sent < due) {
          st.sent++;
          js.publish("bench.live", new TextEncoder().encode(String(now()))).catch((e) => {
            console.error("nats source: " + e.message);
            process.exit(1);
          });
        }
        if (st.sent >= st.n) return say("live_sent", st.sent);
        setTimeout(tick, 1);
      };
      setTimeout(tick, 1);
    } else if (w[0] === "live_stop") {
      if (live) live.n = live.sent;
    } else {
      throw new Error("unknown command: " + w.join(" "));
    }
  });
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
  say("caught_up", (Number(now() - t0) / 1e9).toFixed(6));
  const js = nc.jetstream();
  const consumer = await js.consumers.get("MIRROR", { deliver_policy: DeliverPolicy.New });
  const msgs = await consumer.consume();
  let lat = [], want = 0;
  (async () => {
    for await (const m of msgs) {
      lat.push(Number(now() - BigInt(new TextDecoder().decode(m.data))) / 1e6);
      if (want && lat.length >= want) {
        say("live", lat.length, summary(lat));
        lat = [];
        want = 0;
      }
    }
  })();
  say("ready");
  await commands((w) => {
    if (w[0] === "expect" && w.length === 2) {
      lat = [];
      want = Number(w[1]);
      say("expecting", w[1]);
    } else {
      throw new Error("unknown command: " + w.join(" "));
    }
  });
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
  const rate = Number(events) / (Number(now() - t0) / 1e9);
  say("produce", rate.toFixed(0), pct(lat, 0.5).toFixed(3), pct(lat, 0.99).toFixed(3));
  await nc.close();
}

const modes = { wait, fill, source, replica, produce };
const [mode, ...args] = process.argv.slice(2);
if (!modes[mode]) {
  console.error("usage: node bench/peers/nats.mjs wait|fill|source|replica|produce ...");
  process.exit(2);
}
modes[mode](...args).then(() => process.exit(0), (e) => {
  console.error(`nats ${mode}: ${e.stack || e}`);
  process.exit(1);
});
