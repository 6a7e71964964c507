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
 * The machine's disk flushes come and go (a commit's flush took 0.2 to 0.5 ms within minutes
 * here), so every system is measured BENCH_JOBS_REPEATS times (default 3), in rounds whose
 * order turns; a ratio is the median of its rounds' ratios, each pairing runs of one round.
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
const REPEATS = Number(process.env.BENCH_JOBS_REPEATS ?? 3);
const WORKERS = 4;
const PRODUCERS = 4;

interface Result {
  jobsPerS: number;
  /** Every job's submit→start, in ms. */
  latencies: number[];
  p50: number;
  p99: number;
  /** Herald only: jobs whose events are not exactly the expected ones (0 is right). */
  badEvents?: number;
}

/** Wall-clock milliseconds with sub-millisecond precision (one process submits and runs). */
const now = () => performance.timeOrigin + performance.now();

function summarize(latencies: number[], elapsedMs: number): Result {
  const sorted = [...latencies].sort((a, b) => a - b);
  return { jobsPerS: latencies.length / (elapsedMs / 1000), latencies, p50: percentile(sorted, 50), p99: percentile(sorted, 99) };
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
    // One pass over the events (a job's are found by its id, not looked up per job: the
    // check would otherwise grow with the square of the events a long run leaves behind).
    `with ev as (
       select case when e.topic = 'jobs' then (e.data->>'id')::bigint else substr(e.topic, 5)::bigint end as job,
              e.topic = 'jobs' as on_jobs, e.type, e.data->>'status' as status, e.id
       from herald.events e
       where (e.topic like 'job:%' and e.type = 'status') or (e.topic = 'jobs' and e.type in ('created', 'finished'))
     ), per_job as (
       select j.id,
              string_agg(ev.status, ',' order by ev.id) filter (where not ev.on_jobs) as statuses,
              count(*) filter (where ev.on_jobs and ev.type = 'created') as created,
              count(*) filter (where ev.on_jobs and ev.type = 'finished') as finished
       from herald.jobs j left join ev on ev.job = j.id
       where j.type = $1
       group by j.id
     )
     select count(*) filter (where statuses is distinct from 'queued,running,succeeded' or created <> 1 or finished <> 1)::int as bad
     from per_job`,
    [type],
  );
  return rows[0]!.bad;
}

type Via = 'sql' | 'api';

let heraldRuns = 0;

/** Herald with WORKERS workers; `paced` submits at that rate instead of as fast as possible. */
async function herald(url: string, via: Via, paced?: number): Promise<Result> {
  // Its own type per run: the events check looks at this run's jobs only.
  const type = `bench-${via}${paced ? '-paced' : ''}-${++heraldRuns}`;
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

/** Median of `xs`. */
const median = (xs: number[]) =>
  percentile(
    [...xs].sort((a, b) => a - b),
    50,
  );

/** One system's runs over the rounds: jobs/s per round and every job's latency. */
interface Runs {
  perS: number[];
  latencies: number[];
  bad: number;
}

const runs = (): Runs => ({ perS: [], latencies: [], bad: 0 });

function record(into: Runs, r: Result & { latencies: number[] }): void {
  into.perS.push(r.jobsPerS);
  into.latencies.push(...r.latencies);
  into.bad += r.badEvents ?? 0;
}

export async function run(): Promise<Row[]> {
  const db = await benchDatabase();
  try {
    const systems = {
      gDefault: runs(),
      gFast: runs(),
      sql: runs(),
      api: runs(),
      pacedHerald: runs(),
      pacedGraphile: runs(),
    };
    const ratios = { sqlDefault: [] as number[], sqlFast: [] as number[], apiDefault: [] as number[], apiFast: [] as number[] };
    let half = 0;
    for (let round = 0; round < REPEATS; round++) {
      // Each round measures every system once, in an order that turns each round, so a trend
      // in the machine's load (its disk's flushes come and go) favours none; a ratio pairs
      // systems of the same round.
      const steps: (() => Promise<void>)[] = [
        async () => record(systems.gDefault, await graphile(db.url, 'default')),
        async () => record(systems.gFast, await graphile(db.url, 'fast path')),
        async () => record(systems.sql, await herald(db.url, 'sql')),
        async () => record(systems.api, await herald(db.url, 'api')),
      ];
      for (let k = 0; k < steps.length; k++) await steps[(k + round) % steps.length]!();
      const at = (r: Runs) => r.perS[round]!;
      ratios.sqlDefault.push(at(systems.sql) / at(systems.gDefault));
      ratios.sqlFast.push(at(systems.sql) / at(systems.gFast));
      ratios.apiDefault.push(at(systems.api) / at(systems.gDefault));
      ratios.apiFast.push(at(systems.api) / at(systems.gFast));
      // Half of Herald's own maximum (the first round's SQL run), not at saturation.
      half ||= Math.max(1, Math.round(at(systems.sql) / 2));
      record(systems.pacedHerald, await herald(db.url, 'sql', half));
      record(systems.pacedGraphile, await graphile(db.url, 'fast path', half));
    }
    const rows: Row[] = [];
    const add = (name: string, r: Runs, jobs: number | string = JOBS) => {
      const sorted = [...r.latencies].sort((a, b) => a - b);
      rows.push({
        system: name,
        jobs,
        'jobs/s (median)': Math.round(median(r.perS)),
        'each round': r.perS.map((x) => Math.round(x)).join(' '),
        'submit→start p50 ms': Number(percentile(sorted, 50).toFixed(2)),
        'submit→start p99 ms': Number(percentile(sorted, 99).toFixed(2)),
        'bad events': r === systems.gDefault || r === systems.gFast || r === systems.pacedGraphile ? '' : r.bad,
      });
    };
    add('graphile-worker 0.17, default (add_job)', systems.gDefault);
    add('graphile-worker 0.17, fast path (add_job)', systems.gFast);
    add('herald (SQL herald.submit_job)', systems.sql);
    add('herald (JobStore.submit, as the API)', systems.api);
    add(`herald (SQL), paced at ${half}/s`, systems.pacedHerald, `${half}/s`);
    add(`graphile-worker fast path, paced at ${half}/s`, systems.pacedGraphile, `${half}/s`);
    // Last, once: its 2,000 packages and versions stay in the database.
    const http = await heraldHttp(db.url);
    rows.push({
      system: 'herald (HTTP POST /api/v1/retract)',
      jobs: JOBS,
      'jobs/s (median)': Math.round(http.jobsPerS),
      'each round': Math.round(http.jobsPerS),
      'submit→start p50 ms': Number(http.p50.toFixed(2)),
      'submit→start p99 ms': Number(http.p99.toFixed(2)),
      'bad events': '',
    });
    printTable(
      `Jobs: ${JOBS} trivial jobs, ${WORKERS} workers, ${PRODUCERS} concurrent submitters, one Postgres; ${REPEATS} rounds (jobs/s: median round; latencies: every job of every round); paced runs ${PACED_MS} ms`,
      rows,
    );
    const bad = systems.sql.bad + systems.api.bad + systems.pacedHerald.bad;
    console.log(
      `\nstatus events: ${bad === 0 ? 'every Herald job had queued → running → succeeded, created and finished, once each' : `${bad} jobs with missing or extra events`}`,
    );
    const paced = [...systems.pacedHerald.latencies].sort((a, b) => a - b);
    console.log(`submit→start p50 at half of Herald's maximum rate (${half}/s) = ${percentile(paced, 50).toFixed(2)} ms (target ≤ 5 ms)`);
    const line = (what: string, xs: number[]) => console.log(`ratio: ${what} = ${times(median(xs))} (rounds ${xs.map((x) => x.toFixed(2)).join(' ')})`);
    line('jobs/s herald ÷ graphile-worker default', ratios.sqlDefault);
    line('jobs/s herald ÷ graphile-worker fast path', ratios.sqlFast);
    line('jobs/s herald (JobStore.submit) ÷ graphile-worker default', ratios.apiDefault);
    line('jobs/s herald (JobStore.submit) ÷ graphile-worker fast path', ratios.apiFast);
    return rows;
  } finally {
    await db.stop();
  }
}
