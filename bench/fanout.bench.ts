/**
 * Fan-out: one event to N WebSocket subscribers. (a) the ceiling, a bare `ws` server
 * broadcasting pre-built frames with no database; (b) Herald end to end, events committed
 * to Postgres and delivered by the Listener → Hub → Subscription → WsSession path. Server,
 * clients and orchestrator are separate processes; Postgres is a fourth.
 */
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';
import { createPool } from '../src/db/pool.ts';
import { createLogger } from '../src/logger.ts';
import { peer, type Stats } from './peers/ipc.ts';
import { benchDatabase, printTable, type Row } from './support.ts';

const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));
const spawnPeer = (file: string, env: Record<string, string> = {}) =>
  peer(fork(here(file), [], { execArgv: ['--import', 'tsx', '--expose-gc'], env: { ...process.env, ...env }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }));

const SIZES = (process.env.BENCH_FANOUT_SIZES ?? '100,1000,5000').split(',').map(Number);
const IDLE_CONNECTIONS = Number(process.env.BENCH_IDLE_CONNECTIONS ?? 10_000);
const PACED_CLIENTS = Number(process.env.BENCH_PACED_CLIENTS ?? 500);
const PACED_RATE = 200;
const PACED_SECONDS = Number(process.env.BENCH_PACED_SECONDS ?? 5);
/**
 * Deliveries per throughput run (events × recipients): 3 million take about 2 s, long
 * enough that one garbage collection or scheduling hiccup does not decide the figure.
 */
const TARGET_DELIVERIES = Number(process.env.BENCH_FANOUT_DELIVERIES ?? 3_000_000);
/** Each throughput figure is the median of this many runs (2 shared cores are noisy). */
const REPEATS = Number(process.env.BENCH_REPEATS ?? 5);
/** The same for the paced CPU windows, whose ratios move by ±10% from one run to the next. */
const PACED_REPEATS = Number(process.env.BENCH_PACED_REPEATS ?? REPEATS);
/** Which parts to run (all by default): throughput, paced, idle. */
const PARTS = new Set((process.env.BENCH_FANOUT_PARTS ?? 'throughput,paced,idle').split(','));
/** A directory: write V8 CPU profiles of both servers' paced windows there. */
const CPU_PROF_DIR = process.env.BENCH_CPU_PROF;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

const cpuUs = (a: Stats, b: Stats) => b.cpuUserUs + b.cpuSystemUs - (a.cpuUserUs + a.cpuSystemUs);

async function waitForCount(clients: ReturnType<typeof spawnPeer>, want: number, timeoutMs = 180_000): Promise<number> {
  const t0 = performance.now();
  for (;;) {
    const n = await clients.call<number>('count');
    if (n >= want) return performance.now() - t0;
    if (performance.now() - t0 > timeoutMs) throw new Error(`clients got ${n} of ${want} deliveries`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

/** Commits `count` events, in transactions of `batch`, each carrying the send time `t`. */
async function produce(pool: pg.Pool, count: number, batch: number, topicOf: (i: number) => string): Promise<void> {
  for (let i = 0; i < count; i += batch) {
    const t = performance.timeOrigin + performance.now();
    const events = Array.from({ length: Math.min(batch, count - i) }, (_, j) => ({ topic: topicOf(i + j), type: 'tick', data: { t, n: i + j } }));
    await pool.query('select herald.append($1::jsonb)', [JSON.stringify(events)]);
  }
}

/** One commit per event, `perSecond` a second on a time-based schedule, as independent producers would. */
async function paced(pool: pg.Pool, perSecond: number, seconds: number): Promise<number> {
  const t0 = Date.now();
  let sent = 0;
  const inflight = new Set<Promise<unknown>>();
  while (Date.now() - t0 < seconds * 1000) {
    const due = Math.floor(((Date.now() - t0) / 1000) * perSecond) - sent;
    for (let i = 0; i < due; i++) {
      const t = performance.timeOrigin + performance.now();
      const p = pool.query('select herald.append($1::jsonb)', [JSON.stringify([{ topic: 'bench:all', type: 'tick', data: { t, n: sent + i } }])]);
      inflight.add(p);
      void p.finally(() => inflight.delete(p));
    }
    sent += Math.max(0, due);
    await new Promise((r) => setTimeout(r, 5));
  }
  await Promise.all(inflight);
  return sent;
}

export async function run(): Promise<Row[]> {
  const db = await benchDatabase();
  const raw = spawnPeer('./peers/raw-server.ts');
  const herald = spawnPeer('./peers/herald-server.ts', { BENCH_DATABASE_URL: db.url });
  const clients = spawnPeer('./peers/clients.ts');
  const pool = createPool(db.url, 4, createLogger('silent'));
  try {
    await Promise.all([raw.ready, herald.ready, clients.ready]);
    const rawUrl = await raw.call<string>('url');
    const heraldUrl = `${(await herald.call<string>('url')).replace(/^http/, 'ws')}/v1/ws`;

    // Throughput
    const rows: Row[] = [];
    for (const n of PARTS.has('throughput') ? SIZES : []) {
      for (const own of [false, true]) {
        // One topic: every event to every client. Own topics: each event to one client.
        const events = own ? Math.min(50_000, Math.max(n * 4, 10_000)) : Math.max(50, Math.round(TARGET_DELIVERIES / n));
        const deliveries = own ? events : events * n;

        const rawRates: number[] = [];
        const heraldRates: number[] = [];
        for (let rep = 0; rep < REPEATS; rep++) {
          await clients.call('open', { url: rawUrl, n });
          await clients.call('reset');
          const r0 = performance.now();
          await raw.call('burst', { count: events, own, chunk: 100 });
          await waitForCount(clients, deliveries);
          rawRates.push(deliveries / ((performance.now() - r0) / 1000));
          await clients.call('closeAll');

          await clients.call('open', { url: heraldUrl, n, herald: true, own });
          await clients.call('reset');
          const h0 = performance.now();
          await produce(pool, events, 100, own ? (i) => `bench:${i % n}` : () => 'bench:all');
          const committedMs = performance.now() - h0;
          await waitForCount(clients, deliveries);
          heraldRates.push(deliveries / ((performance.now() - h0) / 1000));
          await clients.call('closeAll');
          console.error(
            `fanout run: ${n} clients, ${own ? 'own topics' : 'one topic'}: raw ${Math.round(rawRates.at(-1)!)}/s, herald ${Math.round(heraldRates.at(-1)!)}/s (commits took ${Math.round(committedMs)} ms; table fallbacks so far: ${await herald.call<number>('fallbacks')})`,
          );
        }

        const a = median(rawRates);
        const b = median(heraldRates);
        // b/a within each repetition (raw and Herald run back to back), then the median.
        const ba = median(heraldRates.map((h, i) => h / rawRates[i]!));
        rows.push({
          clients: n,
          topics: own ? 'one each' : 'all on one',
          events,
          'raw ws deliveries/s': Math.round(a),
          'herald deliveries/s': Math.round(b),
          'b/a': ba,
        });
        console.error(`fanout: ${n} clients, ${own ? 'own topics' : 'one topic'}: raw ${Math.round(a)}/s, herald ${Math.round(b)}/s`);
      }
    }
    printTable(
      `Fan-out throughput (deliveries/s, median of ${REPEATS}; b/a = Herald end to end ÷ bare ws broadcast, paired within each repetition, median)`,
      rows,
    );

    // Below saturation: CPU per delivery and commit-to-client latency. Windows alternate
    // between the servers; each figure is the median of REPEATS windows.
    const pacedRows: Row[] = [];
    if (PARTS.has('paced')) {
      type Side = 'raw ws' | 'raw ws, same commits' | 'herald';
      const window = async (side: Side, n: number, profile: string | null) => {
        const server = side === 'herald' ? herald : raw;
        await clients.call('open', { url: side === 'herald' ? heraldUrl : rawUrl, n, herald: side === 'herald' });
        await clients.call('reset', { latency: true });
        if (profile) await server.call('profileStart');
        const before = await server.call<Stats>('stats', { gc: false });
        // The raw server has no database, but on 2 shared cores Postgres committing 200
        // events a second (and Herald's listener reading them) slows everything else down:
        // this variant puts the same commit stream beside the raw server, so the two servers
        // are compared under the same machine load.
        const background = side === 'raw ws, same commits' ? paced(pool, PACED_RATE, PACED_SECONDS) : null;
        const sent =
          side === 'herald'
            ? await paced(pool, PACED_RATE, PACED_SECONDS)
            : await raw.call<number>('paced', { perSecond: PACED_RATE, seconds: PACED_SECONDS, own: false });
        await background;
        await waitForCount(clients, sent * n, 30_000);
        const after = await server.call<Stats>('stats', { gc: false });
        if (profile) console.error(`profile: ${await server.call<string>('profileStop', { file: profile })}`);
        const deliveries = await clients.call<number>('count');
        const lat = await clients.call<{ n: number; p50: number; p99: number }>('latencies');
        await clients.call('closeAll');
        return { events: sent, deliveries, cpuUs: cpuUs(before, after), p50: lat.p50, p99: lat.p99 };
      };
      const sides: Side[] = ['raw ws', 'raw ws, same commits', 'herald'];
      type Window = Awaited<ReturnType<typeof window>>;
      const runs = new Map<string, Window[]>();
      for (let rep = 0; rep < PACED_REPEATS; rep++) {
        for (const n of [PACED_CLIENTS, 1]) {
          for (const side of sides) {
            const profile =
              CPU_PROF_DIR && rep === 0 && n > 1 && side !== 'raw ws, same commits'
                ? `${CPU_PROF_DIR}/${side === 'herald' ? 'herald' : 'raw'}-paced.cpuprofile`
                : null;
            const w = await window(side, n, profile);
            runs.set(`${side}/${n}`, [...(runs.get(`${side}/${n}`) ?? []), w]);
            console.error(
              `paced ${side}, ${n} clients: ${w.events} events, ${w.deliveries} deliveries, ${(w.cpuUs / w.deliveries).toFixed(2)} CPU µs per delivery`,
            );
          }
        }
      }
      // CPU per delivery at PACED_CLIENTS, split into a fixed cost per event (the 1-client
      // windows) and the marginal cost of each further recipient (the slope between the two).
      // Ratios are taken within each repetition (the windows of one repetition are minutes
      // apart at most, so a slow spell of the machine affects both sides), then the median.
      const series = (side: Side, n: number) => runs.get(`${side}/${n}`)!;
      const perDelivery = (side: Side) => series(side, PACED_CLIENTS).map((w) => w.cpuUs / w.deliveries);
      const perEvent = (side: Side) => series(side, 1).map((w) => w.cpuUs / w.events);
      const marginal = (side: Side) => series(side, PACED_CLIENTS).map((w, i) => (w.cpuUs / w.events - perEvent(side)[i]!) / (PACED_CLIENTS - 1));
      const ratio = (xs: number[], ys: number[]) => median(xs.map((x, i) => x / ys[i]!));
      for (const side of sides) {
        pacedRows.push({
          server: side,
          deliveries: series(side, PACED_CLIENTS)[0]!.deliveries,
          'CPU µs per delivery': median(perDelivery(side)),
          'ratio to raw ws': ratio(perDelivery(side), perDelivery('raw ws')),
          'ratio to raw ws, same commits': ratio(perDelivery(side), perDelivery('raw ws, same commits')),
          'fixed CPU µs per event': median(perEvent(side)),
          'marginal CPU µs per recipient': median(marginal(side)),
          'marginal ratio to raw ws': ratio(marginal(side), marginal('raw ws')),
          'latency p50 ms': median(series(side, PACED_CLIENTS).map((w) => w.p50)),
          'latency p99 ms': median(series(side, PACED_CLIENTS).map((w) => w.p99)),
        });
      }
      printTable(
        `Below saturation: ${PACED_CLIENTS} clients × ${PACED_RATE} events/s for ${PACED_SECONDS} s, median of ${PACED_REPEATS} (ratios paired within each repetition; Herald: one commit per event; CPU is the server process only, not Postgres; fixed = the 1-client window's CPU per event; marginal = (CPU per event at ${PACED_CLIENTS} clients − at 1) ÷ ${PACED_CLIENTS - 1}; latency is commit-to-client for Herald, send-to-client for raw ws)`,
        pacedRows,
      );
    }

    // Idle connections, on fresh server processes: after the runs above a server's heap and
    // allocator hold memory they no longer use, which would hide the cost of a connection.
    const idleRows: Row[] = [];
    for (const side of PARTS.has('idle') ? (['raw ws', 'herald'] as const) : []) {
      const server = side === 'raw ws' ? spawnPeer('./peers/raw-server.ts') : spawnPeer('./peers/herald-server.ts', { BENCH_DATABASE_URL: db.url });
      try {
        await server.ready;
        const url = side === 'raw ws' ? await server.call<string>('url') : `${(await server.call<string>('url')).replace(/^http/, 'ws')}/v1/ws`;
        const before = await server.call<Stats>('stats');
        const held = await clients.call<number>('open', { url, n: IDLE_CONNECTIONS, herald: side === 'herald', own: true });
        await new Promise((r) => setTimeout(r, 1000));
        const after = await server.call<Stats>('stats');
        idleRows.push({
          server: side,
          'connections held': held,
          'RSS before MiB': before.rss / 2 ** 20,
          'RSS after MiB': after.rss / 2 ** 20,
          'KiB per connection': (after.rss - before.rss) / 1024 / held,
        });
        await clients.call('closeAll');
      } finally {
        server.kill();
      }
    }
    printTable(`Idle connections (${IDLE_CONNECTIONS}; Herald connections are subscribed, each to its own topic)`, idleRows);
    return [...rows, ...pacedRows, ...idleRows];
  } finally {
    raw.kill();
    herald.kill();
    clients.kill();
    await pool.end();
    await db.stop();
  }
}
