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
import net from "node:net";
import { requireNpm, say, now, sleep, seconds, commands, liveSource, liveReplica, main } from "./common.mjs";

const Hypercore = requireNpm("hypercore");

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
  say("filled", core.length, seconds(t0).toFixed(3));
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
  await liveSource((stamp) => core.append(Buffer.from(stamp)).catch((e) => {
    console.error("hypercore source: " + e.message);
    process.exit(1);
  }));
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
    if (seconds(t0) > Number(limit)) {
      say("partial", seconds(t0).toFixed(6), core.contiguousLength);
      socket.destroy();
      await commands(() => {});
      await core.close();
      return;
    }
    await sleep(2);
  }
  say("caught_up", seconds(t0).toFixed(6));
  let closing = false;
  const rs = core.createReadStream({ start: core.contiguousLength, live: true });
  const live = liveReplica();
  (async () => {
    for await (const data of rs) live.received(data.toString());
  })().catch((e) => {
    if (closing) return;
    console.error("hypercore replica: " + e.message);
    process.exit(1);
  });
  await live.run();
  closing = true;
  rs.destroy();
  socket.destroy();
  await core.close();
}

main("hypercore", { fill, source, replica });
