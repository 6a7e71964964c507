/**
 * Trivial jobs run by 4 workers: Herald (submitted through the HTTP API and through SQL
 * `herald.submit_job`) side by side with graphile-worker 0.17 (its own `add_job`), same
 * Postgres, same worker count, same run. Jobs/s from first submit to last finish, and
 * submit-to-start latency.
 */
import { createPool } from '../src/db/pool.ts';
import { run as runGraphile } from 'graphile-worker';
import { loadConfig } from '../src/config.ts';
import { startHerald } from '../src/herald.ts';
import { createLogger } from '../src/logger.ts';
import { benchDatabase, percentile, printTable, type Row } from './support.ts';

const JOBS = Number(process.env.BENCH_JOBS ?? 2000);
const WORKERS = 4;
const PRODUCERS = 4;

interface Result {
  jobsPerS: number;
  p50: number;
  p99: number;
}

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

async function herald(url: string, via: 'sql' | 'api'): Promise<Result> {
  const latencies: number[] = [];
  let done: () => void;
  const all = new Promise<void>((r) => (done = r));
  const h = await startHerald(loadConfig({ port: 0, host: '127.0.0.1', databaseUrl: url, logLevel: 'warn', workers: WORKERS, retentionMaxAgeMs: 0 }, {}), {
    skipMigrations: true,
    logger: createLogger('warn'),
    handlers: {
      'bench-noop': {
        async run(job, jc) {
          latencies.push(Date.now() - (job.payload as { t: number }).t);
          await jc.commit(async () => null);
          if (latencies.length === JOBS) done();
        },
      },
    },
  });
  const pool = createPool(url, PRODUCERS, createLogger('silent'));
  try {
    const t0 = performance.now();
    if (via === 'sql') {
      await submitAll(JOBS, (i) => pool.query(`select herald.submit_job('bench-noop', $1::jsonb)`, [JSON.stringify({ i, t: Date.now() })]));
    } else {
      // Through the job store the HTTP routes call; see below for why not over HTTP.
      await submitAll(JOBS, (i) => h.jobs.submit({ type: 'bench-noop', payload: { i, t: Date.now() }, maxAttempts: 3 }));
    }
    await all;
    return summarize(latencies, performance.now() - t0);
  } finally {
    await pool.end();
    await h.close();
  }
}

/** The same work over HTTP: retract jobs (one UPDATE and one event each) on pre-made versions. */
async function heraldHttp(url: string): Promise<Result> {
  const h = await startHerald(loadConfig({ port: 0, host: '127.0.0.1', databaseUrl: url, logLevel: 'warn', workers: WORKERS, retentionMaxAgeMs: 0 }, {}), {
    skipMigrations: true,
    logger: createLogger('warn'),
  });
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
    for (;;) {
      const { rows } = await pool.query(`select count(*)::int as n from herald.jobs where type = 'retract' and status in ('succeeded', 'failed')`);
      if (rows[0].n >= JOBS) break;
      await new Promise((r) => setTimeout(r, 5));
    }
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

async function graphile(url: string): Promise<Result> {
  const latencies: number[] = [];
  let done: () => void;
  const all = new Promise<void>((r) => (done = r));
  const runner = await runGraphile({
    connectionString: url,
    concurrency: WORKERS,
    noHandleSignals: true,
    pollInterval: 2000,
    logger: new (await import('graphile-worker')).Logger(() => () => undefined),
    taskList: {
      'bench-noop': async (payload) => {
        latencies.push(Date.now() - (payload as { t: number }).t);
        if (latencies.length === JOBS) done();
      },
    },
  });
  const pool = createPool(url, PRODUCERS, createLogger('silent'));
  try {
    const t0 = performance.now();
    await submitAll(JOBS, (i) => pool.query(`select graphile_worker.add_job('bench-noop', $1::json)`, [JSON.stringify({ i, t: Date.now() })]));
    await all;
    return summarize(latencies, performance.now() - t0);
  } finally {
    await pool.end();
    await runner.stop();
  }
}

export async function run(): Promise<Row[]> {
  const db = await benchDatabase();
  try {
    const rows: Row[] = [];
    const add = (name: string, r: Result) =>
      rows.push({ system: name, jobs: JOBS, 'jobs/s': Math.round(r.jobsPerS), 'submit→start p50 ms': r.p50, 'submit→start p99 ms': r.p99 });
    add('graphile-worker 0.17 (add_job)', await graphile(db.url));
    add('herald (SQL herald.submit_job)', await herald(db.url, 'sql'));
    add('herald (JobStore.submit, as the API)', await herald(db.url, 'api'));
    add('herald (HTTP POST /api/v1/retract)', await heraldHttp(db.url));
    printTable(`Jobs: ${JOBS} trivial jobs, ${WORKERS} workers, ${PRODUCERS} concurrent submitters, one Postgres`, rows);
    return rows;
  } finally {
    await db.stop();
  }
}
