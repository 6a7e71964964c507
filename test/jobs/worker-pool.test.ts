/**
 * A worker process killed mid-job (SIGKILL, no goodbye): the job's lease lapses, another
 * worker claims it, and it succeeds exactly once; the dead worker's half-done transaction
 * leaves nothing behind. Batches: jobs claimed, logged and finished many to a commit still
 * get each of their events once and in order, also when a batch's connection is killed.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { HeraldError } from '../../src/errors.ts';
import { buildArchive } from '../../src/registry/archive.ts';
import { blockPublishes } from '../support/blocker.ts';
import { createTestDatabase } from '../support/db.ts';
import { startTestHerald, until } from '../support/herald.ts';
import { HERALD_BIN, trackProcesses } from '../support/processes.ts';

const BIN = HERALD_BIN;
const { children, cleanups } = trackProcesses();

describe('worker pool', () => {
  it('a worker process killed mid-job: the job is retried after the lease and succeeds once', async () => {
    const db = await createTestDatabase();
    cleanups.push(db.drop);
    // This process serves the API but runs no workers (yet).
    const api = await startTestHerald(db.url, { workers: 0 });
    cleanups.push(api.close);
    const token = await api.tokens.create('carol', false);

    const worker = spawn(process.execPath, [BIN, 'worker'], {
      env: {
        PATH: process.env.PATH ?? '',
        DATABASE_URL: db.url,
        HERALD_WORKERS: '1',
        HERALD_JOB_LEASE_MS: '1000',
        LOG_LEVEL: 'info',
        HERALD_LOG_FORMAT: 'json',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.add(worker);
    let out = '';
    worker.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    await until(() => out.includes('herald worker'), 30_000, 'worker process to start');
    const workerId = /herald worker (w-[0-9a-f]+)/.exec(out)![1]!;

    // Block publishes inside their effects transaction, so the worker is mid-job when killed.
    const blocker = await blockPublishes(db.url);

    const body = await buildArchive({ 'manifest.json': JSON.stringify({ name: 'crashy', version: '1.0.0', dependencies: {} }) });
    const res = await fetch(`${api.url}/api/v1/publish?name=crashy&version=1.0.0`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/gzip' },
      body: new Uint8Array(body),
    });
    const { jobId } = (await res.json()) as { jobId: number };
    const row = async () =>
      (await api.ctx.pool.query('select status, locked_by, attempts from herald.jobs where id = $1', [jobId])).rows[0] as {
        status: string;
        locked_by: string | null;
        attempts: number;
      };
    await until(
      async () => {
        const r = await row();
        return r.status === 'running' && (r.locked_by ?? '').startsWith(`${workerId}/`);
      },
      15_000,
      'the worker process to claim the job',
    );
    await until(
      async () => (await api.ctx.pool.query(`select 1 from pg_stat_activity where wait_event_type = 'Lock' and datname = current_database()`)).rowCount! > 0,
      15_000,
      'the job to block on the lock',
    );

    worker.kill('SIGKILL');
    await once(worker, 'exit');
    await blocker.release();

    // A new worker pool (in this process) takes over once the lease lapses.
    const rescuer = await startTestHerald(db.url, { workers: 1, jobLeaseMs: 1000, jobPollMs: 200 });
    cleanups.push(rescuer.close);
    await until(async () => (await row()).status === 'succeeded', 20_000, 'the job to succeed after the lease');
    const final = await row();
    expect(final.attempts).toBe(2);
    expect(final.locked_by).toBeNull();
    const versions = await api.ctx.pool.query(`select count(*)::int as n from herald.versions where package = 'crashy'`);
    expect(versions.rows[0].n).toBe(1);
    const published = await api.ctx.pool.query(`select count(*)::int as n from herald.events where topic = 'package:crashy' and type = 'published'`);
    expect(published.rows[0].n).toBe(1);
    const statuses = await api.ctx.pool.query(`select data->>'status' as s from herald.events where topic = $1 and type = 'status' order by id`, [
      `job:${jobId}`,
    ]);
    expect(statuses.rows.map((r) => r.s)).toEqual(['queued', 'running', 'running', 'succeeded']);
  });
});

describe('timeouts and the health-check ping', () => {
  it('a job over its per-type time limit is stopped, retried, and failed after its attempts; the store is untouched', async () => {
    const db = await createTestDatabase();
    cleanups.push(db.drop);
    let runs = 0;
    const h = await startTestHerald(
      db.url,
      { workers: 1, jobTimeoutsMs: { stuck: 300 }, jobMaxAttempts: 2, jobRetryBackoffMs: 0 },
      {
        handlers: {
          stuck: {
            async run(_job, jc) {
              runs++;
              await jc.log('info', 'starting something slow');
              await new Promise((r) => setTimeout(r, 5000));
              await jc.commit(async () => 'should never commit');
            },
          },
        },
      },
    );
    cleanups.push(h.close);
    const { job } = await h.jobs.submit({ type: 'stuck', payload: {}, maxAttempts: 2 });
    await until(async () => (await h.jobs.get(job.id))!.status === 'failed', 15_000, 'the job to fail');
    const final = (await h.jobs.get(job.id))!;
    expect(final.attempts).toBe(2);
    expect(final.error).toMatch(/timed out after 300 ms/);
    expect(final.result).toBeNull();
    expect(runs).toBe(2);
  });

  it('pings HERALD_HEALTHCHECK_URL while healthy', async () => {
    const hits: string[] = [];
    const server = (await import('node:http')).createServer((req, res) => {
      hits.push(req.url!);
      res.end('ok');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    cleanups.push(() => new Promise((r) => server.close(r)));
    const db = await createTestDatabase();
    cleanups.push(db.drop);
    const port = (server.address() as { port: number }).port;
    const h = await startTestHerald(db.url, { workers: 0, healthcheckUrl: `http://127.0.0.1:${port}/ping/abc`, healthcheckIntervalMs: 1000 });
    cleanups.push(h.close);
    await until(() => hits.length >= 2, 10_000, 'two pings');
    expect(hits.every((u) => u === '/ping/abc')).toBe(true);
    // The URL identifies the check: it never reaches the logs.
    expect(h.logs.join('')).not.toContain('/ping/abc');
  });
});

/** The line a run whose outcome could not be written leaves (a lost connection is an internal error, retried). */
const FAILED_LINE = 'log:attempt 1 failed: internal error (details in the server log); retrying';

/** A job's events on `job:<id>`, in id order: `status:<status>` or `log:<message>`, with the commit (xmin) of each. */
async function jobEvents(pool: pg.Pool, jobId: number): Promise<{ what: string; tx: string }[]> {
  const { rows } = await pool.query<{ what: string; tx: string }>(
    `select case type when 'status' then 'status:' || (data->>'status') else type || ':' || (data->>'message') end as what, xmin::text as tx
     from herald.events where topic = $1 order by id`,
    [`job:${jobId}`],
  );
  return rows;
}

/** How many `created` and `finished` events `jobs` has for each job id. */
async function jobsTopicCounts(pool: pg.Pool): Promise<Map<number, string[]>> {
  const { rows } = await pool.query<{ id: number; types: string[] }>(
    `select (data->>'id')::bigint as id, array_agg(type order by id) as types from herald.events where topic = 'jobs' group by 1`,
  );
  return new Map(rows.map((r) => [r.id, r.types]));
}

describe('batches', () => {
  it('every job of a batch gets queued → running → succeeded or failed once, in order, with its log lines in order', async () => {
    const db = await createTestDatabase();
    cleanups.push(db.drop);
    const h = await startTestHerald(
      db.url,
      { workers: 4 },
      {
        handlers: {
          'batch-ok': {
            async run(job, jc) {
              for (const n of [1, 2, 3]) await jc.log('info', `job ${job.id} line ${n}`);
            },
          },
          'batch-bad': {
            async run(job, jc) {
              await jc.log('warn', `job ${job.id} about to fail`);
              throw new HeraldError('HERALD_ERR_BAD_REQUEST', `job ${job.id} refused`);
            },
          },
          'batch-effects': {
            async run(job, jc) {
              await jc.log('info', `job ${job.id} committing`);
              await jc.commit(async (tx) => (await tx.query('select $1::int as n', [job.id])).rows[0].n);
            },
          },
        },
      },
    );
    cleanups.push(h.close);
    const pool = h.ctx.pool;
    // All in one commit, so the pool finds them together and claims a slot-full at a time.
    const types = Array.from({ length: 24 }, (_, i) => ['batch-ok', 'batch-ok', 'batch-bad', 'batch-effects'][i % 4]!);
    const { rows } = await pool.query<{ id: number }>(
      `select herald.submit_job(t, '{}', null, 1) as id from unnest($1::text[]) with ordinality u(t, n) order by n`,
      [types],
    );
    const ids = rows.map((r) => r.id);
    await until(
      async () => {
        const c = await h.jobs.counts();
        return c.succeeded + c.failed === ids.length;
      },
      20_000,
      'every job to finish',
    );

    const commits = { running: new Map<string, number>(), final: new Map<string, number>(), log: new Map<string, number>() };
    const bump = (m: Map<string, number>, tx: string) => m.set(tx, (m.get(tx) ?? 0) + 1);
    for (const [i, id] of ids.entries()) {
      const events = await jobEvents(pool, id);
      const expected = {
        'batch-ok': ['status:queued', 'status:running', ...[1, 2, 3].map((n) => `log:job ${id} line ${n}`), 'status:succeeded'],
        'batch-bad': ['status:queued', 'status:running', `log:job ${id} about to fail`, `log:failed: job ${id} refused`, 'status:failed'],
        'batch-effects': ['status:queued', 'status:running', `log:job ${id} committing`, 'status:succeeded'],
      }[types[i]!]!;
      expect(events.map((e) => e.what)).toEqual(expected);
      bump(commits.running, events[1]!.tx);
      bump(commits.final, events.at(-1)!.tx);
      for (const e of events.filter((e) => e.what.startsWith('log:'))) bump(commits.log, e.tx);
      const job = (await h.jobs.get(id))!;
      expect(job.status).toBe(types[i] === 'batch-bad' ? 'failed' : 'succeeded');
      expect(job.attempts).toBe(1);
      if (types[i] === 'batch-effects') expect(job.result).toBe(id);
    }
    // `jobs` carries each job's creation and end once.
    const topic = await jobsTopicCounts(pool);
    for (const id of ids) expect(topic.get(id)).toEqual(['created', 'finished']);
    // And the work really went in batches: several jobs claimed, finished, logged per commit.
    const most = (m: Map<string, number>) => Math.max(...m.values());
    // A claim takes the 4 free slots and 4 more (HERALD_JOB_PREFETCH defaults to HERALD_WORKERS).
    expect(most(commits.running)).toBe(8);
    expect(most(commits.final)).toBeGreaterThan(1);
    expect(most(commits.log)).toBeGreaterThan(1);
    expect((await pool.query('select count(*)::int as n from herald.pending')).rows[0].n).toBe(0);
  });

  it("lines handed to commit() are written in its transaction, after log()'s, with the effects; rolled back, they are not written at all", async () => {
    const db = await createTestDatabase();
    cleanups.push(db.drop);
    const h = await startTestHerald(
      db.url,
      { workers: 2 },
      {
        handlers: {
          'lines-commit': {
            async run(job, jc) {
              void jc.log('info', 'before');
              await jc.commit(
                async (tx) => {
                  await tx.query(`select herald.emit('lines:' || $1::text, 'effect', '{}')`, [job.id]);
                },
                {
                  lines: [
                    { level: 'info', message: 'one' },
                    { level: 'debug', message: 'two' },
                  ],
                },
              );
            },
          },
          'lines-rollback': {
            async run(_job, jc) {
              await jc.commit(
                async () => {
                  throw new HeraldError('HERALD_ERR_BAD_REQUEST', 'refused');
                },
                { lines: [{ level: 'info', message: 'one' }] },
              );
            },
          },
        },
      },
    );
    cleanups.push(h.close);
    const pool = h.ctx.pool;
    const { rows } = await pool.query<{ id: number }>(
      `select herald.submit_job(t, '{}', null, 1)::int as id from unnest(array['lines-commit', 'lines-rollback']) with ordinality u(t, n) order by n`,
    );
    const [committed, rolledBack] = rows.map((r) => r.id) as [number, number];
    await until(
      async () => {
        const c = await h.jobs.counts();
        return c.succeeded + c.failed === 2;
      },
      10_000,
      'both jobs to finish',
    );
    // One transaction: the lines, the handler's effect and the success; log()'s line before it.
    const events = await jobEvents(pool, committed);
    expect(events.map((e) => e.what)).toEqual(['status:queued', 'status:running', 'log:before', 'log:one', 'log:two', 'status:succeeded']);
    const effect = await pool.query<{ id: number; tx: string }>(`select id::int, xmin::text as tx from herald.events where topic = $1`, [`lines:${committed}`]);
    expect(effect.rows).toHaveLength(1);
    expect(new Set([events[3]!.tx, events[4]!.tx, events[5]!.tx, effect.rows[0]!.tx]).size).toBe(1);
    expect(events[2]!.tx).not.toBe(events[3]!.tx);
    // Written after the effects, just before the success: the effect's event comes first.
    const logIds = await pool.query<{ id: number }>(`select id::int from herald.events where topic = $1 and type = 'log' order by id`, [`job:${committed}`]);
    expect(effect.rows[0]!.id).toBeLessThan(logIds.rows[1]!.id);
    // Levels as stored (info 20, debug 10): each line's own.
    const levels = await pool.query<{ level: number }>(`select level from herald.job_logs where job_id = $1 order by id`, [committed]);
    expect(levels.rows.map((r) => r.level)).toEqual([20, 20, 10]);
    // Rolled back with the effects: the line is not there, the failure is.
    expect((await jobEvents(pool, rolledBack)).map((e) => e.what)).toEqual(['status:queued', 'status:running', 'log:failed: refused', 'status:failed']);
    const lines = await pool.query<{ message: string }>(`select message from herald.job_logs where job_id = $1 order by id`, [rolledBack]);
    expect(lines.rows.map((r) => r.message)).toEqual(['failed: refused']);
    expect((await pool.query('select count(*)::int as n from herald.pending')).rows[0].n).toBe(0);
  });

  it.each([
    { prefetch: 2, claimed: 4 },
    { prefetch: 0, claimed: 2 },
  ])(
    'prefetch $prefetch: $claimed jobs claimed at once, never more than 2 handlers; each waiting one starts when a slot frees',
    async ({ prefetch, claimed }) => {
      const db = await createTestDatabase();
      cleanups.push(db.drop);
      const gates = new Map<number, () => void>();
      const started: number[] = [];
      let inHandler = 0;
      let mostInHandler = 0;
      const h = await startTestHerald(
        db.url,
        { workers: 2, jobPrefetch: prefetch },
        {
          handlers: {
            gated: {
              async run(job) {
                started.push(job.id);
                mostInHandler = Math.max(mostInHandler, ++inHandler);
                await new Promise<void>((r) => gates.set(job.id, r));
                inHandler--;
              },
            },
          },
        },
      );
      cleanups.push(h.close);
      const pool = h.ctx.pool;
      const { rows } = await pool.query<{ id: number }>(`select herald.submit_job('gated', '{}') as id from generate_series(1, 6) order by 1`);
      const ids = rows.map((r) => r.id);
      const statuses = async () =>
        (await pool.query<{ status: string }>(`select status from herald.jobs where id = any($1::bigint[]) order by id`, [ids])).rows.map((r) => r.status);
      await until(async () => started.length === 2 && (await statuses()).filter((s) => s === 'running').length === claimed, 10_000, 'the first claims');
      // The oldest two run; the next `prefetch` are claimed (running, leased) and wait here.
      expect(started).toEqual(ids.slice(0, 2));
      expect(await statuses()).toEqual([...Array(claimed).fill('running'), ...Array(6 - claimed).fill('queued')]);
      // A slot frees: the oldest waiting job starts in it.
      gates.get(ids[0]!)!();
      await until(() => started.length === 3, 10_000, 'the third job to start');
      expect(started[2]).toBe(ids[2]);
      for (let n = 1; n < 6; n++) {
        await until(() => gates.has(ids[n]!), 10_000, `job ${ids[n]} to start`);
        gates.get(ids[n]!)!();
      }
      await until(async () => (await statuses()).every((s) => s === 'succeeded'), 10_000, 'every job to succeed');
      expect(started).toEqual(ids);
      expect(mostInHandler).toBe(2);
      for (const id of ids) expect((await jobEvents(pool, id)).map((e) => e.what)).toEqual(['status:queued', 'status:running', 'status:succeeded']);
    },
  );

  it('shutdown gives back a prefetched job that has not started: queued again at once, its attempt returned', async () => {
    const db = await createTestDatabase();
    cleanups.push(db.drop);
    let open: () => void = () => undefined;
    const gate = new Promise<void>((r) => (open = r));
    const started: number[] = [];
    const h = await startTestHerald(
      db.url,
      { workers: 1, jobPrefetch: 1, shutdownGraceMs: 10_000 },
      {
        handlers: {
          slow: {
            async run(job) {
              started.push(job.id);
              await gate;
            },
          },
        },
      },
    );
    const reader = new pg.Pool({ connectionString: db.url, max: 1 });
    cleanups.push(() => reader.end());
    const { rows } = await reader.query<{ id: number }>(`select herald.submit_job('slow', '{}', null, 1)::int as id from generate_series(1, 2) order by 1`);
    const [first, second] = rows.map((r) => r.id) as [number, number];
    const job = async (id: number) =>
      (
        await reader.query<{ status: string; attempts: number; started_at: Date | null }>(
          `select status, attempts, started_at from herald.jobs where id = $1`,
          [id],
        )
      ).rows[0]!;
    await until(async () => started.length === 1 && (await job(second)).status === 'running', 10_000, 'one job running, one claimed ahead');
    expect(started).toEqual([first]);
    // Shutdown while the first runs: the second is given back at once, the first finishes in the grace period.
    const closed = h.close();
    await until(async () => (await job(second)).status === 'queued', 10_000, 'the prefetched job to be given back');
    open();
    await closed;
    expect(started).toEqual([first]);
    expect(await job(first)).toMatchObject({ status: 'succeeded', attempts: 1 });
    // Its attempt returned: with max_attempts 1 it still gets its one run.
    expect(await job(second)).toEqual({ status: 'queued', attempts: 0, started_at: null });
    expect((await jobEvents(reader, second)).map((e) => e.what)).toEqual(['status:queued', 'status:running', 'status:queued']);
    // Another worker takes it and runs it once.
    const next = await startTestHerald(db.url, { workers: 1 }, { handlers: { slow: { run: async (j) => void started.push(j.id) } } });
    cleanups.push(next.close);
    await until(async () => (await job(second)).status === 'succeeded', 10_000, 'the second job to run elsewhere');
    expect(started).toEqual([first, second]);
    expect(await job(second)).toMatchObject({ attempts: 1 });
  });

  it("a batch's connection killed mid-write: nothing lost or doubled; the lease lapses and the job runs again", async () => {
    const db = await createTestDatabase();
    cleanups.push(db.drop);
    let open: () => void = () => undefined;
    const gate = new Promise<void>((r) => (open = r));
    let waiting = 0;
    // Nothing but the runs' own writes while the test kills writes: no prefetch (with places
    // to prefetch into, the pool tries a claim on every timer), and the timer far off (the
    // lease's lapse, 3 s after the claim, is the first thing it waits for). A claim of its
    // own could otherwise be the blocked write the test kills.
    const h = await startTestHerald(
      db.url,
      { workers: 4, jobPrefetch: 0, jobLeaseMs: 3000, jobPollMs: 60_000, jobRetryBackoffMs: 0 },
      {
        handlers: {
          fault: {
            async run(job, jc) {
              await jc.log('info', `run ${job.attempts} start`);
              if (job.attempts === 1) {
                waiting++;
                await gate;
              }
              await jc.log('info', `run ${job.attempts} end`);
            },
          },
        },
      },
    );
    cleanups.push(h.close);
    const pool = h.ctx.pool;
    const { rows } = await pool.query<{ id: number }>(`select herald.submit_job('fault', '{}') as id from generate_series(1, 4) order by 1`);
    const ids = rows.map((r) => r.id);
    await until(() => waiting === 4, 10_000, 'four runs at the gate');

    // Every write of outcomes and claims touches herald.job_inputs: holding it makes each such
    // write wait, while log lines (which do not touch it) go through.
    const locker = new pg.Client({ connectionString: db.url });
    locker.on('error', () => undefined);
    await locker.connect();
    cleanups.push(() => locker.end());
    await locker.query('begin');
    await locker.query('lock table herald.job_inputs in share mode');
    // A terminated backend can still be listed, waiting, for a moment: never the same one twice.
    const killed: number[] = [];
    const killBlockedWrite = async () => {
      let pid = 0;
      await until(
        async () => {
          // By its lock, not its text: a prepared statement waits for its locks before
          // pg_stat_activity shows it.
          const r = await locker.query<{ pid: number }>(
            `select pid from pg_locks
             where locktype = 'relation' and not granted and relation = 'herald.job_inputs'::regclass
               and database = (select oid from pg_database where datname = current_database()) and pid <> all($1::int[])`,
            [killed],
          );
          pid = r.rows[0]?.pid ?? 0;
          return pid > 0;
        },
        10_000,
        'a blocked job write',
      );
      killed.push(pid);
      await locker.query('select pg_terminate_backend($1)', [pid]);
    };
    open();
    // The batch with the four successes dies mid-write, then the batch with their failures:
    // nothing is recorded for those runs, only their leases are left, and those lapse.
    await killBlockedWrite();
    await killBlockedWrite();
    await locker.query('commit');

    await until(async () => (await h.jobs.counts()).succeeded === ids.length, 20_000, 'every job to succeed');
    const topic = await jobsTopicCounts(pool);
    for (const id of ids) {
      // Run 1's lines and the line its failure left (lines are their own writes), then run 2
      // whole: no `succeeded` or `queued` from the killed writes, and the lapsed lease shows
      // nothing but the next claim's `running`.
      expect((await jobEvents(pool, id)).map((e) => e.what)).toEqual([
        'status:queued',
        'status:running',
        'log:run 1 start',
        'log:run 1 end',
        FAILED_LINE,
        'status:running',
        'log:run 2 start',
        'log:run 2 end',
        'status:succeeded',
      ]);
      expect(topic.get(id)).toEqual(['created', 'finished']);
      const job = (await h.jobs.get(id))!;
      expect(job.status).toBe('succeeded');
      expect(job.attempts).toBe(2);
    }
    expect((await pool.query('select count(*)::int as n from herald.pending')).rows[0].n).toBe(0);
  });
});
