/**
 * Trivial jobs run by 4 workers: Herald (submitted through SQL `herald.submit_job`, through
 * the job store the API calls, and over HTTP) side by side with graphile-worker 0.17 (its own
 * `add_job`), twice: with its default settings, and with its documented fast path (a local
 * queue of concurrency + 1 jobs, completions and failures batched with no delay). Same
 * Postgres, same worker count, same run. Jobs/s from first submit to last finish, and
 * submit-to-start latency; then both again paced at half of Herald's own maximum rate.
 *
 * A trivial Herald job is a handler that returns: the engine records its success (batched
 * with other finishing jobs). Every Herald run is checked for its events: each job must have
 * exactly queued → running → succeeded on `job:<id>`, and one `created` and one `finished` on
 * `jobs`.
 *
 * Herald runs with its exporter off, as graphile-worker runs with nothing beside it: the
 * exporter is not the job engine, and after the HTTP run it would export that run's 2,000
 * packages while the next run is measured (it did: paced submit→start p50 22 ms against 6).
 *
 * Ends with one line per ratio (`ratio: <what> = <x>x`).
 */
import { EventEmitter } from 'node:events';
import type pg from 'pg';
import { Logger as GraphileLogger, run as runGraphile, type WorkerEvents } from 'graphile-worker';
import { loadConfig } from '../src/config.ts';
import { createPool } from '../src/db/pool.ts';
import { startHerald } from '../src/herald.ts';
import { createLogger } from '../src/logger.ts';
import { benchDatabase, percentile, printTable, type Row } from './support.ts';

const JOBS = Number(process.env.BENCH_JOBS ?? 2000);
const PACED_MS = Number(process.env.BENCH_JOBS_PACED_MS ?? 4000);
const WORKERS = 4;
const PRODUCERS = 4;

interface Result {
  jobsPerS: number;
  p50: number;
  p99: number;
  /** Herald only: jobs whose events are not exactly the expected ones (0 is right). */
  badEvents?: number;
}

/** Wall-clock milliseconds with sub-millisecond precision (one process submits and runs). */
const now = () => performance.timeOrigin + performance.now();

function summarize(latencies: number[], elapsedMs: number): Result {
  const sorted = [...latencies].sort((a, b) => a - b);
  return { jobsPerS: latencies.length / (elapsedMs / 1000), p50: percentile(sorted, 50), p99: percentile(sorted, 99) };
}

/** Submits `n` jobs from PRODUCERS concurrent loops with `submit(i)`. */
async function submitAll(n: number, submit: (i: number) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: PRODUCERS }, async () => {
      while (next < n) await submit(next++);
    }),
  );
}

/** Submits at `perS` for PACED_MS (at most PRODUCERS in flight); returns how many. */
async function submitPaced(perS: number, submit: (i: number) => Promise<unknown>): Promise<number> {
  const n = Math.max(1, Math.round((perS * PACED_MS) / 1000));
  const t0 = performance.now();
  const inFlight = new Set<Promise<unknown>>();
  for (let i = 0; i < n; i++) {
    const due = t0 + (i * 1000) / perS;
    const wait = due - performance.now();
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    if (inFlight.size >= PRODUCERS) await Promise.race(inFlight);
    const p = submit(i).finally(() => inFlight.delete(p));
    inFlight.add(p);
  }
  await Promise.all(inFlight);
  return n;
}

/** A promise that resolves when `count()` reaches `n`. */
function counter(): { hit: () => void; reached: (n: number) => Promise<void> } {
  let seen = 0;
  let target = Number.POSITIVE_INFINITY;
  let done: () => void = () => undefined;
  return {
    hit: () => {
      if (++seen === target) done();
    },
    reached: (n) =>
      new Promise<void>((resolve) => {
        target = n;
        done = resolve;
        if (seen >= n) resolve();
      }),
  };
}

/** Jobs of `type` whose events are not exactly queued → running → succeeded plus created and finished. */
async function badEvents(pool: pg.Pool, type: string): Promise<number> {
  const { rows } = await pool.query<{ bad: number }>(
    `with per_job as (
       select j.id,
              (select string_agg(e.data->>'status', ',' order by e.id) from herald.events e
               where e.topic = 'job:' || j.id and e.type = 'status') as statuses,
              (select count(*) from herald.events e
               where e.topic = 'jobs' and (e.data->>'id')::bigint = j.id and e.type = 'created') as created,
              (select count(*) from herald.events e
               where e.topic = 'jobs' and (e.data->>'id')::bigint = j.id and e.type = 'finished') as finished
       from herald.jobs j where j.type = $1
     )
     select count(*) filter (where statuses is distinct from 'queued,running,succeeded' or created <> 1 or finished <> 1)::int as bad
     from per_job`,
    [type],
  );
  return rows[0]!.bad;
}

type Via = 'sql' | 'api';

/** Herald with WORKERS workers; `paced` submits at that rate instead of as fast as possible. */
async function herald(url: string, via: Via, paced?: number): Promise<Result> {
  const type = `bench-${via}${paced ? '-paced' : ''}`;
  const latencies: number[] = [];
  const finished = counter();
  const h = await startHerald(
    loadConfig({ port: 0, host: '127.0.0.1', databaseUrl: url, logLevel: 'warn', workers: WORKERS, retentionMaxAgeMs: 0, exporter: false }, {}),
    {
      skipMigrations: true,
      logger: createLogger('warn'),
      handlers: {
        [type]: {
          async run(job) {
            latencies.push(now() - (job.payload as { t: number }).t);
            finished.hit();
          },
        },
      },
    },
  );
  const pool = createPool(url, PRODUCERS, createLogger('silent'));
  try {
    const submit =
      via === 'sql'
        ? (i: number) => pool.query(`select herald.submit_job($1, $2::jsonb)`, [type, JSON.stringify({ i, t: now() })])
        : (i: number) => h.jobs.submit({ type, payload: { i, t: now() }, maxAttempts: 3 });
    const t0 = performance.now();
    let n = JOBS;
    if (paced) n = await submitPaced(paced, submit);
    else await submitAll(JOBS, submit);
    await finished.reached(n);
    const result = summarize(latencies, performance.now() - t0);
    // The last `finished` event commits with the success, just after the handler returned.
    await until(async () => (await h.jobs.counts()).running === 0);
    return { ...result, badEvents: await badEvents(pool, type) };
  } finally {
    await pool.end();
    await h.close();
  }
}

async function until(check: () => Promise<boolean>): Promise<void> {
  while (!(await check())) await new Promise((r) => setTimeout(r, 5));
}

/** The same work over HTTP: retract jobs (one UPDATE and one event each) on pre-made versions. */
async function heraldHttp(url: string): Promise<Result> {
  const h = await startHerald(
    loadConfig({ port: 0, host: '127.0.0.1', databaseUrl: url, logLevel: 'warn', workers: WORKERS, retentionMaxAgeMs: 0, exporter: false }, {}),
    {
      skipMigrations: true,
      logger: createLogger('warn'),
    },
  );
  const pool = createPool(url, PRODUCERS, createLogger('silent'));
  try {
    const token = await h.tokens.create('bench', false);
    // One package per job: jobs on one package share a lock key and would run one at a time.
    await pool.query(`insert into herald.packages (name) select 'bench-' || g from generate_series(1, $1) g`, [JOBS]);
    await pool.query(`insert into herald.package_owners (package, user_name) select 'bench-' || g, 'bench' from generate_series(1, $1) g`, [JOBS]);
    await pool.query(
      `insert into herald.versions (package, version, manifest, archive, size, sha256)
       select 'bench-' || g, '1.0.0', '{}', '\\x00', 1, repeat('0', 64) from generate_series(1, $1) g`,
      [JOBS],
    );
    const t0 = performance.now();
    await submitAll(JOBS, async (i) => {
      const res = await fetch(`${h.url}/api/v1/retract`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ name: `bench-${i + 1}`, version: '1.0.0' }),
      });
      if (res.status !== 201) throw new Error(`submit failed: ${res.status} ${await res.text()}`);
    });
    await until(async () => {
      const { rows } = await pool.query(`select count(*)::int as n from herald.jobs where type = 'retract' and status in ('succeeded', 'failed')`);
      return rows[0].n >= JOBS;
    });
    const elapsed = performance.now() - t0;
    const { rows } = await pool.query<{ ms: number }>(
      `select extract(epoch from (started_at - created_at)) * 1000 as ms from herald.jobs where type = 'retract'`,
    );
    return summarize(
      rows.map((r) => Number(r.ms)),
      elapsed,
    );
  } finally {
    await pool.end();
    await h.close();
  }
}

type GraphileMode = 'default' | 'fast path';

/** graphile-worker 0.17 with concurrency WORKERS, default settings or its documented fast path. */
async function graphile(url: string, mode: GraphileMode, paced?: number): Promise<Result> {
  const task = `bench_${mode === 'default' ? 'default' : 'fast'}${paced ? '_paced' : ''}`;
  const latencies: number[] = [];
  const finished = counter();
  const events: WorkerEvents = new EventEmitter();
  let localQueue = false;
  events.on('localQueue:init', () => (localQueue = true));
  // graphile-worker's own pool has no 'error' listener: when the benchmark's PostgreSQL stops
  // at the end, an idle client's 57P01 was an unhandled 'error' that crashed the run after its
  // results. A pool of ours (createPool listens on every client) is ended after the runner.
  const graphilePool = createPool(url, WORKERS + 4, createLogger('silent'));
  const runner = await runGraphile({
    pgPool: graphilePool,
    concurrency: WORKERS,
    noHandleSignals: true,
    pollInterval: 2000,
    events,
    logger: new GraphileLogger(() => () => undefined),
    // https://worker.graphile.org/docs/performance#batching: "a good starting point is often
    // concurrentJobs + 1"; a batch delay of 0 still batches what finishes together.
    ...(mode === 'fast path' ? { preset: { worker: { localQueue: { size: WORKERS + 1 }, completeJobBatchDelay: 0, failJobBatchDelay: 0 } } } : {}),
    taskList: {
      [task]: async (payload) => {
        latencies.push(now() - (payload as { t: number }).t);
        finished.hit();
      },
    },
  });
  if (localQueue !== (mode === 'fast path')) throw new Error(`graphile-worker ${mode}: the local queue is ${localQueue ? 'on' : 'off'}`);
  const pool = createPool(url, PRODUCERS, createLogger('silent'));
  try {
    const submit = (i: number) => pool.query(`select graphile_worker.add_job($1, $2::json)`, [task, JSON.stringify({ i, t: now() })]);
    const t0 = performance.now();
    let n = JOBS;
    if (paced) n = await submitPaced(paced, submit);
    else await submitAll(JOBS, submit);
    await finished.reached(n);
    return summarize(latencies, performance.now() - t0);
  } finally {
    await pool.end();
    await runner.stop();
    await graphilePool.end();
  }
}

/** `x` as a ratio line's number. */
const times = (x: number) => `${x.toFixed(2)}x`;

export async function run(): Promise<Row[]> {
  const db = await benchDatabase();
  try {
    const rows: Row[] = [];
    const add = (name: string, r: Result, jobs: number | string = JOBS) =>
      rows.push({
        system: name,
        jobs,
        'jobs/s': Math.round(r.jobsPerS),
        'submit→start p50 ms': Number(r.p50.toFixed(2)),
        'submit→start p99 ms': Number(r.p99.toFixed(2)),
        'bad events': r.badEvents ?? '',
      });
    const gDefault = await graphile(db.url, 'default');
    add('graphile-worker 0.17, default (add_job)', gDefault);
    const gFast = await graphile(db.url, 'fast path');
    add('graphile-worker 0.17, fast path (add_job)', gFast);
    const sql = await herald(db.url, 'sql');
    add('herald (SQL herald.submit_job)', sql);
    const api = await herald(db.url, 'api');
    add('herald (JobStore.submit, as the API)', api);
    // Half of Herald's own maximum (the SQL run above), not at saturation.
    const half = Math.max(1, Math.round(sql.jobsPerS / 2));
    const pacedHerald = await herald(db.url, 'sql', half);
    add(`herald (SQL), paced at ${half}/s`, pacedHerald, `${half}/s`);
    const pacedGraphile = await graphile(db.url, 'fast path', half);
    add(`graphile-worker fast path, paced at ${half}/s`, pacedGraphile, `${half}/s`);
    // Last: its 2,000 packages and versions stay in the database.
    add('herald (HTTP POST /api/v1/retract)', await heraldHttp(db.url));
    printTable(`Jobs: ${JOBS} trivial jobs, ${WORKERS} workers, ${PRODUCERS} concurrent submitters, one Postgres; paced runs ${PACED_MS} ms`, rows);
    const bad = [sql, api, pacedHerald].reduce((n, r) => n + (r.badEvents ?? 0), 0);
    console.log(
      `\nstatus events: ${bad === 0 ? 'every Herald job had queued → running → succeeded, created and finished, once each' : `${bad} jobs with missing or extra events`}`,
    );
    console.log(`submit→start p50 at half of Herald's maximum rate (${half}/s) = ${pacedHerald.p50.toFixed(2)} ms (target ≤ 5 ms)`);
    console.log(`ratio: jobs/s herald ÷ graphile-worker default = ${times(sql.jobsPerS / gDefault.jobsPerS)}`);
    console.log(`ratio: jobs/s herald ÷ graphile-worker fast path = ${times(sql.jobsPerS / gFast.jobsPerS)}`);
    console.log(`ratio: jobs/s herald (JobStore.submit) ÷ graphile-worker default = ${times(api.jobsPerS / gDefault.jobsPerS)}`);
    console.log(`ratio: jobs/s herald (JobStore.submit) ÷ graphile-worker fast path = ${times(api.jobsPerS / gFast.jobsPerS)}`);
    return rows;
  } finally {
    await db.stop();
  }
}
