import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPool } from '../../src/db/pool.ts';
import { type JobJson, JobStore } from '../../src/jobs/store.ts';
import { createLogger } from '../../src/logger.ts';
import { createTestDatabase, logHead, type TestDatabase } from '../support/db.ts';

let db: TestDatabase;
let pool: ReturnType<typeof createPool>;
let store: JobStore;

beforeAll(async () => {
  db = await createTestDatabase();
  pool = createPool(db.url, 4, createLogger('silent'));
  store = new JobStore(pool);
});
afterAll(async () => {
  await pool.end();
  await db.drop();
});

describe('JobStore.claim', () => {
  it('reclaims a lapsed running job before a queued one with the same lock key (no livelock)', async () => {
    // The queued job has the lower id: a claim that only skipped *live* lock holders would
    // pick it, collide with the lapsed job on the running-lock index, and never progress.
    const queued = (await pool.query(`insert into herald.jobs (type, payload, lock_key, max_attempts) values ('t', '{}', 'package:k', 3) returning id`)).rows[0]
      .id;
    const lapsed = (
      await pool.query(
        `insert into herald.jobs (type, payload, lock_key, max_attempts, status, attempts, locked_by, locked_until, started_at)
         values ('t', '{}', 'package:k', 3, 'running', 1, 'dead-worker', now() - interval '1 minute', now()) returning id`,
      )
    ).rows[0].id;
    const first = await store.claim('w1/a', 5000);
    expect(first?.id).toBe(lapsed);
    expect(first?.attempts).toBe(2);
    // While it runs (live lease), the queued one must wait.
    expect(await store.claim('w1/b', 5000)).toBeNull();
    const tx = await pool.connect();
    await tx.query('begin');
    await store.complete(tx, lapsed, 'w1/a', null);
    await tx.query('commit');
    tx.release();
    expect((await store.claim('w1/c', 5000))?.id).toBe(queued);
  });

  it('a run that lost its lease cannot complete the job', async () => {
    const id = (await pool.query(`insert into herald.jobs (type, payload, max_attempts) values ('t', '{}', 3) returning id`)).rows[0].id;
    await store.claim('w2/old', 5000);
    await pool.query(`update herald.jobs set locked_until = now() - interval '1 second' where id = $1`, [id]);
    expect((await store.claim('w2/new', 5000))?.id).toBe(id);
    const tx = await pool.connect();
    await tx.query('begin');
    await expect(store.complete(tx, id, 'w2/old', null)).rejects.toMatchObject({ code: 'HERALD_ERR_UNAVAILABLE' });
    await tx.query('rollback');
    tx.release();
  });
});

describe('JobStore.cycle', () => {
  it('one claim for several slots takes the oldest runnable jobs, one per lock key, each with its own run id and running event', async () => {
    const insert = (lockKey: string | null) =>
      pool
        .query<{ id: number }>(`insert into herald.jobs (type, payload, lock_key, max_attempts) values ('c', '{}', $1, 3) returning id`, [lockKey])
        .then((r) => r.rows[0]!.id);
    const a1 = await insert('package:a');
    const a2 = await insert('package:a');
    const free = await insert(null);
    const b1 = await insert('package:b');
    const base = await logHead(pool);
    const { claimed, full } = await store.cycle([], ['w3/1', 'w3/2', 'w3/3', 'w3/4'], 5000);
    expect(claimed.map((c) => [c.job.id, c.runId, c.job.status])).toEqual([
      [a1, 'w3/1', 'running'],
      [free, 'w3/2', 'running'],
      [b1, 'w3/3', 'running'],
    ]);
    // Four candidates for four slots, one left behind for its key: more may be runnable.
    expect(full).toBe(true);
    const events = await pool.query(`select topic, data->>'status' as status, xmin::text as tx from herald.events where id > $1 order by id`, [base]);
    expect(events.rows.map((e) => [e.topic, e.status])).toEqual([
      [`job:${a1}`, 'running'],
      [`job:${free}`, 'running'],
      [`job:${b1}`, 'running'],
    ]);
    expect(new Set(events.rows.map((e) => e.tx)).size).toBe(1);
    // a2 waits for a1's key: nothing to claim until a1 ends.
    expect((await store.cycle([], ['w3/5'], 5000)).claimed).toEqual([]);
    // Outcomes and a claim in one statement: a1 succeeds, free fails for good, b1 is retried,
    // a run that lost its lease writes nothing; a1's key is still held when the claim looks.
    const { finished, claimed: next } = await store.cycle(
      [
        { jobId: a1, runId: 'w3/1', ok: true, result: { n: 1 } },
        { jobId: free, runId: 'w3/2', ok: false, error: 'bad', retryInMs: null },
        { jobId: b1, runId: 'w3/3', ok: false, error: 'again', retryInMs: 60_000 },
        { jobId: a2, runId: 'w3/gone', ok: true, result: null },
      ],
      ['w3/6'],
      5000,
    );
    expect(finished.map((j) => j && [j.id, j.status, j.result, j.error])).toEqual([
      [a1, 'succeeded', { n: 1 }, null],
      [free, 'failed', null, 'bad'],
      [b1, 'queued', null, 'again'],
      null,
    ]);
    expect(next).toEqual([]);
    const { claimed: after } = await store.cycle([], ['w3/7'], 5000);
    expect(after.map((c) => c.job.id)).toEqual([a2]);
  });
});

describe('JobStore.submit, many at once', () => {
  /** `job:<id>` and `jobs` events of these jobs: topic, type, job id, and the transaction that wrote each. */
  async function submitEvents(ids: number[]) {
    const { rows } = await pool.query<{ topic: string; type: string; job: number; tx: string }>(
      `select topic, type, (data->>'id')::bigint as job, xmin::text as tx from herald.events
       where (data->>'id')::bigint = any($1::bigint[]) and type in ('status', 'created') order by id`,
      [ids],
    );
    return rows;
  }

  it('concurrent submissions share one commit: each gets its own job, ids and events in submission order', async () => {
    const batch = new JobStore(pool);
    // The first goes alone at once; the nine that come while it is in flight go together.
    const results = await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        batch.submit({ type: 'many-at-once', payload: { i }, maxAttempts: 2, archive: i === 5 ? Buffer.from([i]) : undefined }),
      ),
    );
    const ids = results.map((r) => r.job.id);
    expect(results.map((r) => [r.created, r.job.payload, r.job.status])).toEqual(Array.from({ length: 10 }, (_, i) => [true, { i }, 'queued']));
    expect(ids).toEqual([...ids].sort((a, b) => a - b));
    expect(await store.input(ids[5]!)).toEqual(Buffer.from([5]));
    expect(await store.input(ids[4]!)).toBeNull();
    const events = await submitEvents(ids);
    expect(events.map((e) => [e.topic, e.type, e.job])).toEqual(
      ids.flatMap((id) => [
        [`job:${id}`, 'status', id],
        ['jobs', 'created', id],
      ]),
    );
    // Events of a job commit with it; the nine that gathered committed together.
    expect(new Set(events.slice(2).map((e) => e.tx)).size).toBe(1);
    await batch.close();
  });

  it('a duplicate key folds into the job holding it; a refused submission fails alone', async () => {
    const batch = new JobStore(pool);
    const first = batch.submit({ type: 'many-dedupe', payload: {}, maxAttempts: 1 });
    const [a, b, bad, c] = await Promise.allSettled([
      batch.submit({ type: 'many-dedupe', payload: { n: 1 }, dedupeKey: 'same-key', maxAttempts: 1 }),
      batch.submit({ type: 'many-dedupe', payload: { n: 2 }, dedupeKey: 'same-key', maxAttempts: 1 }),
      // herald.jobs refuses the type: the batch is written again one by one.
      batch.submit({ type: 'Not A Type', payload: {}, maxAttempts: 1 }),
      batch.submit({ type: 'many-dedupe', payload: { n: 3 }, maxAttempts: 1 }),
    ]);
    await first;
    if (a.status !== 'fulfilled' || b.status !== 'fulfilled' || c.status !== 'fulfilled') throw new Error('a good submission failed');
    // In one batch, in order: the first writes the job, the second gets it.
    const [made, folded] = a.value.created ? [a.value, b.value] : [b.value, a.value];
    expect([made.created, folded.created, folded.job.id]).toEqual([true, false, made.job.id]);
    expect(folded.job.payload).toEqual(made.job.payload);
    expect(c.value.created).toBe(true);
    expect(bad.status).toBe('rejected');
    expect((await pool.query(`select count(*)::int as n from herald.jobs where type = 'many-dedupe'`)).rows[0].n).toBe(3);
    const mine = await submitEvents([made.job.id]);
    const theirs = await submitEvents([c.value.job.id]);
    expect(mine.map((e) => [e.topic, e.type, e.job])).toEqual([
      [`job:${made.job.id}`, 'status', made.job.id],
      ['jobs', 'created', made.job.id],
    ]);
    expect(theirs.map((e) => [e.topic, e.type, e.job])).toEqual([
      [`job:${c.value.job.id}`, 'status', c.value.job.id],
      ['jobs', 'created', c.value.job.id],
    ]);
    // The refused one was split out: the others were written again one by one.
    expect(mine[0]!.tx).not.toBe(theirs[0]!.tx);
    await batch.close();
    await expect(batch.submit({ type: 'many-dedupe', payload: {}, maxAttempts: 1 })).rejects.toMatchObject({ code: 'HERALD_ERR_SHUTTING_DOWN' });
  });
});

describe('herald.job_json', () => {
  it('is planned inline (herald.iso declared as volatile as its body), with JavaScript timestamps', async () => {
    const { rows } = await pool.query<{ 'QUERY PLAN': string }>(`explain (verbose, costs off) select herald.job_json(j) from herald.jobs j`);
    const plan = rows.map((r) => r['QUERY PLAN']).join('\n');
    expect(plan).toContain('to_char(');
    expect(plan).not.toContain('iso(');
    const at = new Date('2026-12-02T07:04:05.678Z');
    const { rows: jobs } = await pool.query<{ job: JobJson }>(
      `with j as (insert into herald.jobs (type, payload, max_attempts, created_at) values ('iso-check', '{}', 1, $1) returning *)
       select herald.job_json(j) as job from j`,
      [at],
    );
    expect([jobs[0]!.job.createdAt, jobs[0]!.job.startedAt, jobs[0]!.job.finishedAt]).toEqual([at.toISOString(), null, null]);
  });
});
