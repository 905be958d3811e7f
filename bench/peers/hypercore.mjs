// bench/peers/hypercore.mjs - Hypercore's side of bench/peers.lua (one mode
// a process). Hypercore comes from the npm prefix ODO_BENCH_NPM
// (bench/peers.lua installs it into build/bench-npm).
//
//   hypercore.mjs fill DIR N BYTES   a new core in DIR; appends N blocks of
//                                    BYTES bytes, 1000 per append; prints
//                                    "filled N <seconds>"
//   hypercore.mjs source DIR         opens the core in DIR, serves
//                                    replication on 127.0.0.1 (a free port;
//                                    plain TCP carrying Hypercore's own Noise
//                                    stream), prints "port <port> <key hex>
//                                    <length>", then reads commands:
//                                    live N / live_stop / quit, as
//                                    bench/sync_peer.lua's source does
//   hypercore.mjs replica DIR PORT KEY N LIMIT_S
//                                    prints "started <ns>", opens a new core
//                                    of KEY in DIR, connects, downloads
//                                    everything in order (and on, live) until
//                                    contiguousLength is N (polled every
//                                    2 ms), prints "caught_up <seconds>";
//                                    after LIMIT_S seconds short of N it
//                                    prints "partial <seconds> <blocks>"
//                                    instead, stops, and waits for "quit".
//                                    After "caught_up" it
//                                    reads live blocks (a live read
//                                    stream) and answers expect N / quit as
//                                    sync_peer's replica does
//
// Live blocks carry process.hrtime.bigint() (CLOCK_MONOTONIC, as luv's
// uv.hrtime) taken just before the append.
import { createInterface } from "node:readline";
import { createRequire } from "node:module";
import { resolve } from "node:path";
import net from "node:net";

const require = createRequire(resolve(process.env.ODO_BENCH_NPM || "build/bench-npm", "package.json"));
const Hypercore = require("hypercore");

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

async function fill(dir, n, size) {
  const core = new Hypercore(dir);
  await core.ready();
  const block = Buffer.alloc(Number(size), 120), t0 = now();
  let left = Number(n);
  while (left > 0) {
    const k = Math.min(1000, left);
    await core.append(new Array(k).fill(block));
    left -= k;
  }
  say("filled", core.length, (Number(now() - t0) / 1e9).toFixed(3));
  await core.close();
}

async function source(dir) {
  const core = new Hypercore(dir);
  await core.ready();
  const server = net.createServer((socket) => {
    const s = core.replicate(false);
    socket.on("error", () => {});
    s.on("error", () => {});
    socket.pipe(s).pipe(socket);
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  say("port", server.address().port, core.key.toString("hex"), core.length);
  let live = null;
  await commands((w) => {
    if (w[0] === "live" && w.length === 2) {
      const st = { n: Number(w[1]), sent: 0 }, t0 = now();
      live = st;
      const tick = () => {
        const due = Math.min(st.n, Number((now() - t0) / 1000000n) + 1);
        while (st.sent < due) {
          st.sent++;
          core.append(Buffer.from(String(now()))).catch((e) => {
            console.error("hypercore source: " + e.message);
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
  server.close();
  await core.close();
}

async function replica(dir, port, key, n, limit) {
  const t0 = now();
  say("started", t0);
  const core = new Hypercore(dir, Buffer.from(key, "hex"));
  await core.ready();
  const socket = net.connect(Number(port), "127.0.0.1");
  const s = core.replicate(true);
  socket.on("error", () => {});
  s.on("error", () => {});
  socket.pipe(s).pipe(socket);
  core.download({ start: 0, end: -1, linear: true });
  while (core.contiguousLength < Number(n)) {
    if (Number(now() - t0) / 1e9 > Number(limit)) {
      say("partial", (Number(now() - t0) / 1e9).toFixed(6), core.contiguousLength);
      socket.destroy();
      await commands(() => {});
      await core.close();
      return;
    }
    await sleep(2);
  }
  say("caught_up", (Number(now() - t0) / 1e9).toFixed(6));
  let lat = [], want = 0, closing = false;
  const rs = core.createReadStream({ start: core.contiguousLength, live: true });
  (async () => {
    for await (const data of rs) {
      lat.push(Number(now() - BigInt(data.toString())) / 1e6);
      if (want && lat.length >= want) {
        say("live", lat.length, summary(lat));
        lat = [];
        want = 0;
      }
    }
  })().catch((e) => {
    if (closing) return;
    console.error("hypercore replica: " + e.message);
    process.exit(1);
  });
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
  closing = true;
  rs.destroy();
  socket.destroy();
  await core.close();
}

const modes = { fill, source, replica };
const [mode, ...args] = process.argv.slice(2);
if (!modes[mode]) {
  console.error("usage: node bench/peers/hypercore.mjs fill|source|replica ...");
  process.exit(2);
}
modes[mode](...args).then(() => process.exit(0), (e) => {
  console.error(`hypercore ${mode}: ${e.stack || e}`);
  process.exit(1);
});
