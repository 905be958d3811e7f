// bench/peers/common.mjs - what the Node.js drivers of bench/peers.lua
// share: the npm prefix, output lines, the monotonic clock, and the two
// halves of bench/sync_peer.lua's line protocol (a source's "live N" /
// "live_stop", a replica's "expect N").
import { createInterface } from "node:readline";
import { createRequire } from "node:module";
import { resolve } from "node:path";

// require() from the npm prefix ODO_BENCH_NPM (default build/bench-npm)
export const requireNpm = createRequire(resolve(process.env.ODO_BENCH_NPM || "build/bench-npm", "package.json"));

export const say = (...w) => process.stdout.write(w.join(" ") + "\n");
// CLOCK_MONOTONIC in ns, as luv's uv.hrtime and Python's time.monotonic_ns
export const now = () => process.hrtime.bigint();
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export const seconds = (t0) => Number(now() - t0) / 1e9;

// The p-quantile of a sorted array, nearest rank (0 when empty).
export function pct(sorted, p) {
  return sorted.length ? sorted[Math.max(0, Math.ceil(sorted.length * p) - 1)] : 0;
}

// "<p50> <p99> <max> <mean>" of latencies in ms (sorts them).
function summary(lat) {
  lat.sort((a, b) => a - b);
  const mean = lat.length ? lat.reduce((a, b) => a + b, 0) / lat.length : 0;
  return [pct(lat, 0.5), pct(lat, 0.99), lat[lat.length - 1] || 0, mean].map((x) => x.toFixed(3)).join(" ");
}

// Calls fn(words) for each line on stdin until "quit" or its end.
export async function commands(fn) {
  for await (const line of createInterface({ input: process.stdin })) {
    if (line === "quit") return;
    fn(line.split(" "));
  }
}

// A source's commands until "quit": "live N" calls append(stamp) N times,
// one per millisecond on a fixed schedule (stamp: now() as a decimal
// string), then prints "live_sent N"; "live_stop" ends it early.
export async function liveSource(append) {
  let live = null;
  await commands((w) => {
    if (w[0] === "live" && w.length === 2) {
      const st = { n: Number(w[1]), sent: 0 }, t0 = now();
      live = st;
      const tick = () => {
        const due = Math.min(st.n, Number((now() - t0) / 1000000n) + 1);
        while (st.sent < due) {
          st.sent++;
          append(String(now()));
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
}

// A replica's live side: returns received(stamp), to call with each live
// event's stamp as it arrives, and run(), which prints "ready" and answers
// "expect N" until "quit": once N events arrived after it, prints
// "live <count> <p50> <p99> <max> <mean>" (ms).
export function liveReplica() {
  let lat = [], want = 0;
  return {
    received(stamp) {
      lat.push(Number(now() - BigInt(stamp)) / 1e6);
      if (want && lat.length >= want) {
        say("live", lat.length, summary(lat));
        lat = [];
        want = 0;
      }
    },
    async run() {
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
    },
  };
}

// Runs modes[process.argv[2]] with the other arguments; exits 0 when it
// resolves, 1 with the error on stderr when it fails.
export function main(name, modes) {
  const [mode, ...args] = process.argv.slice(2);
  if (!modes[mode]) {
    console.error(`usage: node bench/peers/${name}.mjs ${Object.keys(modes).join("|")} ...`);
    process.exit(2);
  }
  modes[mode](...args).then(() => process.exit(0), (e) => {
    console.error(`${name} ${mode}: ${e.stack || e}`);
    process.exit(1);
  });
}
