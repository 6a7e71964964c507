/**
 * Reconnect storm: N WebSocket clients on one topic drop at once (a network blip, a proxy
 * restart) and reconnect together, each with its last id, while M events were committed in
 * between. Time until every client has every missed event exactly once, and the database
 * transactions the storm cost (`pg_stat_database.xact_commit + xact_rollback` of Herald's
 * database), with the catch-up window on (the default) and off (HERALD_CATCHUP_WINDOW_BYTES=0).
 * Orchestrator, Herald, the client fleet and Postgres are separate processes.
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

const CLIENTS = Number(process.env.BENCH_STORM_CLIENTS ?? 2000);
const MISSED = Number(process.env.BENCH_STORM_EVENTS ?? 200);
/** Each figure is the median of this many storms per variant (variants alternate). */
const REPEATS = Number(process.env.BENCH_STORM_REPEATS ?? 3);
const TOPIC = 'storm:all';
/** A directory: write a V8 CPU profile of the server during each storm there. */
const CPU_PROF_DIR = process.env.BENCH_CPU_PROF;
/**
 * PostgreSQL (15+) publishes a busy backend's counters at most once a second and an idle
 * one's within 10 s (PGSTAT_IDLE_INTERVAL): counters are read after 11 s of quiet, before
 * and after the storm.
 */
const STATS_SETTLE_MS = 11_000;
/**
 * Herald with its own background queries off (job workers, exporter, safety poll every 10
 * minutes), so the transactions counted are the storm's. The LISTEN connection's keep-alive
 * (one `SELECT 1` every 10 s) is left on and shows in the idle baseline.
 */
const QUIET = { workers: 0, exporter: false, safetyPollMs: 600_000 };
/**
 * The fleet's 2,000 clients all come from 127.0.0.1, one address: its share of read time
 * (HERALD_READ_SHARE_MS_PER_S) would pace the window-off storm's 2,000 table reads as one
 * client's. Off, so the storm compares the window with the table, not with the share.
 */
const ONE_ADDRESS = { readShareMsPerS: 0 };

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** Commits `n` events, one transaction each (independent producers); returns their ids. */
async function produce(pool: pg.Pool, n: number): Promise<number[]> {
  const ids: number[] = [];
  for (let i = 0; i < n; i++) {
    const { rows } = await pool.query<{ id: number }>('select herald.append($1::jsonb) as id', [JSON.stringify([{ topic: TOPIC, type: 'tick', data: { i } }])]);
    ids.push(rows[0]!.id);
  }
  return ids;
}

async function until(what: string, check: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const t0 = Date.now();
  while (!(await check())) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

interface Storm {
  ms: number;
  wrong: number;
  xacts: number;
  idleXacts: number;
  cpuMs: number;
}

async function storm(dbUrl: string, pool: pg.Pool, stats: pg.Pool, datname: string, window: boolean): Promise<Storm> {
  const user = JSON.parse(process.env.BENCH_HERALD_CONFIG ?? '{}') as Record<string, unknown>;
  // The peer reads no environment (herald-server.ts): the setting goes in as its config.
  const herald = spawnPeer('./peers/herald-server.ts', {
    BENCH_DATABASE_URL: dbUrl,
    BENCH_HERALD_CONFIG: JSON.stringify({ ...QUIET, ...ONE_ADDRESS, ...user, ...(window ? {} : { catchUpWindowBytes: 0 }) }),
  });
  const clients = spawnPeer('./peers/storm-clients.ts');
  const xacts = async () =>
    Number((await stats.query<{ n: string }>('select xact_commit + xact_rollback as n from pg_stat_database where datname = $1', [datname])).rows[0]!.n);
  try {
    await Promise.all([herald.ready, clients.ready]);
    const url = `${(await herald.call<string>('url')).replace(/^http/, 'ws')}/v1/ws`;
    await clients.call('open', { url, n: CLIENTS, topic: TOPIC });
    // Live first, so every client has a real last id.
    const warm = await produce(pool, 20);
    await clients.call('reach', { last: warm.at(-1) });

    await clients.call('drop');
    await until('the server to see every client go', async () => (await herald.call<number>('connections')) === 0);
    const missed = await produce(pool, MISSED);
    await until('the Listener to publish the missed events', async () => (await herald.call<number>('head')) >= missed.at(-1)!);

    await sleep(STATS_SETTLE_MS);
    const before = await xacts();
    const profile = CPU_PROF_DIR ? `${CPU_PROF_DIR}/reconnect-window-${window ? 'on' : 'off'}-${Date.now()}.cpuprofile` : null;
    if (profile) await herald.call('profileStart');
    const cpu0 = await herald.call<Stats>('stats', { gc: false });
    const { ms, wrong } = await clients.call<{ ms: number; wrong: number }>('reconnect', { expected: missed });
    const cpu1 = await herald.call<Stats>('stats', { gc: false });
    if (profile) console.error(`profile: ${await herald.call<string>('profileStop', { file: profile })}`);
    await sleep(STATS_SETTLE_MS);
    const after = await xacts();
    // The same length of quiet, for what Herald and Postgres do on their own.
    await sleep(ms + STATS_SETTLE_MS);
    const idle = await xacts();
    const cpuMs = (cpu1.cpuUserUs + cpu1.cpuSystemUs - cpu0.cpuUserUs - cpu0.cpuSystemUs) / 1000;
    const r = { ms, wrong, xacts: after - before, idleXacts: idle - after, cpuMs };
    console.error(
      `reconnect storm, window ${window ? 'on' : 'off'}: ${Math.round(ms)} ms, ${r.xacts} transactions (${r.idleXacts} idle), server CPU ${Math.round(cpuMs)} ms, ${wrong} clients wrong`,
    );
    return r;
  } finally {
    herald.kill();
    clients.kill();
  }
}

export async function run(): Promise<Row[]> {
  const db = await benchDatabase();
  const pool = createPool(db.url, 4, createLogger('silent'));
  // Counters are read from another database, so reading them adds nothing to Herald's.
  const statsUrl = new URL(db.url);
  const datname = statsUrl.pathname.slice(1);
  statsUrl.pathname = '/template1';
  const stats = createPool(statsUrl.toString(), 1, createLogger('silent'));
  try {
    const runs: Record<'on' | 'off', Storm[]> = { on: [], off: [] };
    for (let rep = 0; rep < REPEATS; rep++) {
      runs.on.push(await storm(db.url, pool, stats, datname, true));
      runs.off.push(await storm(db.url, pool, stats, datname, false));
    }
    const rows: Row[] = (['on', 'off'] as const).map((w) => {
      const rs = runs[w];
      const xacts = median(rs.map((r) => r.xacts));
      return {
        'catch-up window': w === 'on' ? 'on (64 MiB default)' : 'off (HERALD_CATCHUP_WINDOW_BYTES=0)',
        clients: CLIENTS,
        'missed events': MISSED,
        'all caught up, ms': median(rs.map((r) => r.ms)),
        'worst run, ms': Math.max(...rs.map((r) => r.ms)),
        'clients not exactly once': Math.max(...rs.map((r) => r.wrong)),
        'db transactions': xacts,
        // Four decimals: the figure with the window is a few thousandths.
        'per client': (xacts / CLIENTS).toFixed(4),
        'idle baseline': median(rs.map((r) => r.idleXacts)),
        'server CPU ms': median(rs.map((r) => r.cpuMs)),
      };
    });
    printTable(
      `Reconnect storm: ${CLIENTS} WebSocket clients on one topic drop at once and reconnect with their last id, ${MISSED} events committed meanwhile (one transaction each); median of ${REPEATS} (targets: ≤ 2,000 ms, ≤ 0.05 transactions per client; idle baseline = transactions over the same length of quiet after the storm)`,
      rows,
    );
    return rows;
  } finally {
    await stats.end();
    await pool.end();
    await db.stop();
  }
}
