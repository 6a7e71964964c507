/**
 * Publishers (issue 15): N concurrent single-event HTTP publishers, each on its own
 * keep-alive connection, over `POST /v1/events` to Herald in its own process (the group
 * append joins what arrives while a flush is in flight), against the bare baseline in the
 * same run on the same PostgreSQL: N connections each looping a single-statement
 * INSERT + NOTIFY in autocommit. Targets at 64 and at 8 publishers: ≥ 3× the baseline's
 * events/s, publish p99 ≤ 50 ms. Afterwards every acknowledged id is read back: each must be
 * in the log exactly once, with its publisher's event.
 *
 * The publishers write HTTP/1.1 on their sockets directly, as a load generator does
 * (httpPublishers), so that the two cores go to Herald and PostgreSQL rather than to an HTTP
 * client; the table shows this process's CPU per publish beside Herald's.
 *
 * A third row calls the group append in this process (Appender.emit(), N concurrent callers,
 * its own connection, default settings): the same batching without HTTP, which shows what
 * of the remaining cost is HTTP's.
 *
 * The three run in alternating windows (baseline, HTTP, in-process, then in-process, HTTP,
 * baseline, …), REPEATS rounds, and each ratio is the median of the rounds': a machine whose
 * other load comes and goes (other processes' fsyncs, CPU) moves a round's windows alike.
 *
 * BENCH_PUBLISH_MS sets one window (default 2000, after a 300 ms warm-up); BENCH_PUBLISH_REPEATS
 * the pairs (default 5); BENCH_CPU_PROF=<dir> writes a CPU profile of Herald during the first
 * 64-publisher window.
 */
import { fork } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';
import { createPool } from '../src/db/pool.ts';
import { createLogger } from '../src/logger.ts';
import { peer } from './peers/ipc.ts';
import { benchDatabase, inProcessAppender, PLAIN_APPEND_SQL, PLAIN_EVENTS_SETUP_SQL, percentile, printTable, type Row } from './support.ts';

const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));
const WINDOW_MS = Number(process.env.BENCH_PUBLISH_MS ?? 2000);
const REPEATS = Number(process.env.BENCH_PUBLISH_REPEATS ?? 5);
const WARMUP_MS = 300;
const PUBLISHERS = [64, 8];
const TOKEN = 'bench-publish-publisher-token-0123';
const TARGET_RATIO = 3;
const TARGET_P99_MS = 50;

/** One window's result: events acknowledged, and each one's round trip in ms. */
interface Window {
  events: number;
  ms: number[];
}

/** Runs `step(publisher, i)` in a loop per publisher; counts and times only what ends inside the measured window. */
async function drive(publishers: number, step: (p: number, i: number) => Promise<void>): Promise<Window> {
  const start = performance.now() + WARMUP_MS;
  const end = start + WINDOW_MS;
  const out: Window = { events: 0, ms: [] };
  await Promise.all(
    Array.from({ length: publishers }, async (_, p) => {
      for (let i = 0; performance.now() < end; i++) {
        const t0 = performance.now();
        await step(p, i);
        const t1 = performance.now();
        if (t0 >= start && t1 <= end) {
          out.events++;
          out.ms.push(t1 - t0);
        }
      }
    }),
  );
  return out;
}

/**
 * A keep-alive HTTP/1.1 connection per publisher `p`: POST one event, resolve with its id.
 * Written on the socket directly, as load generators (wrk, autocannon) do, rather than with
 * node:http's client, which took 0.11–0.12 ms of this process's CPU per publish against
 * Herald's 0.13–0.17, on the same two cores: the bench measured its own client nearly as much
 * as Herald. Written directly: 0.03–0.04 ms (BENCHMARKS.md, issue 15 third round). One
 * request at a time per connection; a response is its status line, headers with a
 * Content-Length (Herald's answers all have one), and that many bytes of body.
 */
function httpPublishers(url: string, publishers: number) {
  const { hostname, port } = new URL(url);
  const head = (length: number) =>
    `POST /v1/events HTTP/1.1\r\nhost: ${hostname}:${port}\r\ncontent-type: application/json\r\nauthorization: Bearer ${TOKEN}\r\ncontent-length: ${length}\r\n\r\n`;
  const conns = Array.from({ length: publishers }, () => {
    const socket = net.connect(Number(port), hostname);
    socket.setNoDelay(true);
    let buffered: Buffer = Buffer.alloc(0);
    let waiting: { resolve: (id: number) => void; reject: (err: Error) => void } | null = null;
    const fail = (err: Error) => {
      const w = waiting;
      waiting = null;
      w?.reject(err);
    };
    socket.on('data', (chunk: Buffer) => {
      buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
      const end = buffered.indexOf('\r\n\r\n');
      if (end < 0) return;
      const header = buffered.subarray(0, end).toString('latin1');
      const length = Number(/\r\ncontent-length: *(\d+)/i.exec(header)?.[1] ?? Number.NaN);
      if (Number.isNaN(length)) return fail(new Error(`an answer without Content-Length: ${header}`));
      if (buffered.length < end + 4 + length) return;
      const body = buffered.subarray(end + 4, end + 4 + length).toString('utf8');
      buffered = buffered.subarray(end + 4 + length);
      const status = Number(header.slice(9, 12));
      const w = waiting;
      waiting = null;
      if (status === 201) w?.resolve((JSON.parse(body) as { ids: number[] }).ids[0]!);
      else w?.reject(new Error(`publish answered ${status}: ${body}`));
    });
    socket.on('error', fail);
    socket.on('close', () => fail(new Error('the connection closed')));
    return {
      socket,
      post: (body: string) =>
        new Promise<number>((resolve, reject) => {
          waiting = { resolve, reject };
          socket.write(head(Buffer.byteLength(body)) + body);
        }),
    };
  });
  return {
    post: (p: number, body: string) => conns[p]!.post(body),
    close: () => {
      for (const c of conns) c.socket.destroy();
    },
  };
}

/** Every acknowledged id is in the log once, with the event its publisher sent. */
async function checkAcknowledged(pool: pg.Pool, topic: string, acked: Map<number, string>): Promise<void> {
  const { rows } = await pool.query<{ id: number; data: string }>('select id, data::text as data from herald.events where topic = $1 order by id', [topic]);
  const found = new Map(rows.map((r) => [r.id, r.data]));
  if (found.size !== rows.length) throw new Error(`${topic}: an id appears twice`);
  for (const [id, data] of acked) {
    if (found.get(id) !== data) throw new Error(`${topic}: acknowledged id ${id} holds ${found.get(id)}, not ${data}`);
  }
}

const sortMs = (ms: number[]) => [...ms].sort((a, b) => a - b);
const median = (xs: number[]) => percentile(sortMs(xs), 50);

/** One row of the table: a variant's median window and its pooled latencies. */
function row(
  publishers: number,
  variant: string,
  perS: number[],
  ms: number[],
  more: { flush: number | string; cpu: number | string; client?: number | string; ratio: number },
): Row {
  const sorted = sortMs(ms);
  return {
    publishers,
    variant,
    'events/s': Math.round(median(perS)),
    'p50 ms': percentile(sorted, 50),
    'p99 ms': percentile(sorted, 99),
    'events/flush': more.flush,
    'herald CPU ms/event': more.cpu,
    'bench client CPU ms/event': more.client ?? '—',
    'ratio (median of pairs)': more.ratio,
  };
}

type Stats = { cpuUserUs: number; cpuSystemUs: number };

export async function run(): Promise<Row[]> {
  const db = await benchDatabase();
  const pool = createPool(db.url, Math.max(...PUBLISHERS) + 2, createLogger('silent'));
  const child = fork(here('./peers/herald-server.ts'), [], {
    execArgv: ['--import', 'tsx'],
    env: {
      ...process.env,
      BENCH_DATABASE_URL: db.url,
      BENCH_HERALD_CONFIG: JSON.stringify({ workers: 0, exporter: false, publishTokens: [TOKEN], ...JSON.parse(process.env.BENCH_HERALD_CONFIG ?? '{}') }),
    },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const herald = peer(child);
  const rows: Row[] = [];
  const ratios: string[] = [];
  const ownAppender = inProcessAppender(db.url);
  const { appender } = ownAppender;
  try {
    await pool.query(PLAIN_EVENTS_SETUP_SQL);
    await herald.ready;
    const url = await herald.call<string>('url');
    for (const n of PUBLISHERS) {
      const topic = `publish:n${n}`;
      const acked = new Map<number, string>();
      const publishers = httpPublishers(url, n);
      const baseline = { perS: [] as number[], ms: [] as number[] };
      const pub = { perS: [] as number[], ms: [] as number[], cpuUs: 0, clientUs: 0 };
      const pairRatios: number[] = [];
      const inProcess = { perS: [] as number[], ms: [] as number[], ratios: [] as number[], flushes: appender.flushes, appended: appender.appended };
      let seq = 0;
      const runBaseline = async () => {
        const w = await drive(n, async (p, i) => {
          await pool.query(PLAIN_APPEND_SQL, [`plain:${p % 16}`, `{"p":${p},"i":${i}}`]);
        });
        baseline.perS.push(w.events / (WINDOW_MS / 1000));
        baseline.ms.push(...w.ms);
      };
      const runHerald = async (profile: boolean) => {
        if (profile) setTimeout(() => void herald.call('profileStart'), WARMUP_MS);
        const cpu0 = await herald.call<Stats>('stats', { gc: false });
        const client0 = process.cpuUsage();
        const w = await drive(n, async (p) => {
          // As jsonb writes it back (keys by length, then bytes), so the read-back compares text.
          const data = `{"i": ${seq++}, "p": ${p}}`;
          const id = await publishers.post(p, `{"topic":"${topic}","type":"t","data":${data}}`);
          acked.set(id, data);
        });
        const client = process.cpuUsage(client0);
        pub.clientUs += client.user + client.system;
        const cpu1 = await herald.call<Stats>('stats', { gc: false });
        if (profile)
          console.log(
            `cpu profile: ${await herald.call('profileStop', { file: path.resolve(process.env.BENCH_CPU_PROF!, `publish-herald-${n}.cpuprofile`) })}`,
          );
        pub.perS.push(w.events / (WINDOW_MS / 1000));
        pub.ms.push(...w.ms);
        pub.cpuUs += cpu1.cpuUserUs + cpu1.cpuSystemUs - cpu0.cpuUserUs - cpu0.cpuSystemUs;
      };
      const runInProcess = async () => {
        const w = await drive(n, async (p, i) => {
          await appender.emit({ topic: `inproc:n${n}`, type: 't', data: { i, p } });
        });
        inProcess.perS.push(w.events / (WINDOW_MS / 1000));
        inProcess.ms.push(...w.ms);
      };
      for (let r = 0; r < REPEATS; r++) {
        // Whichever goes first alternates, so a trend in the machine's load favours none.
        if (r % 2 === 0) {
          await runBaseline();
          await runHerald(r === 0 && n === 64 && Boolean(process.env.BENCH_CPU_PROF));
          await runInProcess();
        } else {
          await runInProcess();
          await runHerald(false);
          await runBaseline();
        }
        pairRatios.push(pub.perS[r]! / baseline.perS[r]!);
        inProcess.ratios.push(inProcess.perS[r]! / baseline.perS[r]!);
      }
      publishers.close();
      await checkAcknowledged(pool, topic, acked);
      // herald.append stamps one `at` per statement: distinct stamps are the flushes.
      const { rows: flushRows } = await pool.query<{ events: number; flushes: number }>(
        'select count(*)::int as events, count(distinct at)::int as flushes from herald.events where topic = $1',
        [topic],
      );
      const { events, flushes } = flushRows[0]!;
      const published = sortMs(pub.ms);
      const direct = sortMs(inProcess.ms);
      rows.push(
        row(n, 'baseline: INSERT + NOTIFY, 1 statement per event', baseline.perS, baseline.ms, { flush: '—', cpu: '—', ratio: 1 }),
        row(n, 'Herald: POST /v1/events, keep-alive', pub.perS, pub.ms, {
          flush: events / Math.max(1, flushes),
          // Every publish of the windows, warm-ups included, as the CPU was read around them.
          cpu: pub.cpuUs / 1000 / Math.max(1, acked.size),
          // This process, publishers and all, over the same windows: the load generator's share of the two cores.
          client: pub.clientUs / 1000 / Math.max(1, acked.size),
          ratio: median(pairRatios),
        }),
        row(n, 'Appender.emit() in process (no HTTP)', inProcess.perS, inProcess.ms, {
          flush: (appender.appended - inProcess.appended) / Math.max(1, appender.flushes - inProcess.flushes),
          cpu: '—',
          ratio: median(inProcess.ratios),
        }),
      );
      ratios.push(
        `ratio: events/s Appender.emit() in process ÷ INSERT+NOTIFY, ${n} callers = ${median(inProcess.ratios).toFixed(2)}x (no target: the group append without HTTP; p99 ${percentile(direct, 99).toFixed(1)} ms)`,
      );
      ratios.push(
        `ratio: events/s POST /v1/events ÷ INSERT+NOTIFY, ${n} publishers = ${median(pairRatios).toFixed(2)}x (target ≥ ${TARGET_RATIO}x; pairs ${pairRatios.map((x) => x.toFixed(2)).join(' ')}; publish p99 ${percentile(published, 99).toFixed(1)} ms, target ≤ ${TARGET_P99_MS} ms)`,
      );
    }
    printTable(
      `Publishers: single-event publishers over HTTP (keep-alive) vs INSERT + NOTIFY from as many connections, ${REPEATS} alternating pairs of ${WINDOW_MS} ms windows (events/s: median window; latencies: all windows); every acknowledged id read back once with its event`,
      rows,
    );
    console.log('');
    for (const r of ratios) console.log(r);
    return rows;
  } finally {
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await exited;
    await ownAppender.close();
    await pool.end();
    await db.stop();
  }
}
