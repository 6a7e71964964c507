/**
 * sql/017: a log line's job is checked once per statement (a transition-table trigger), not
 * by a foreign key once per line. The same rule, error and cascade as the key, and the same
 * locking: a job cannot be deleted under a line being written for it, nor a line written for a
 * job being deleted.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { JobStore } from '../../src/jobs/store.ts';
import { logHead, useTestPool } from '../support/db.ts';
import { until } from '../support/herald.ts';

const t = useTestPool();
let a: pg.Client;
let b: pg.Client;
let store: JobStore;

beforeAll(async () => {
  store = new JobStore(t.pool);
  a = new pg.Client({ connectionString: t.db.url });
  b = new pg.Client({ connectionString: t.db.url });
  await Promise.all([a.connect(), b.connect()]);
});
afterAll(async () => {
  await Promise.all([a?.end(), b?.end()]);
});

const newJob = async () => Number((await t.pool.query<{ id: string }>(`select herald.submit_job('logs-check', '{}') as id`)).rows[0]!.id);
const head = () => logHead(t.pool);
const lineCount = async (jobId: number) =>
  (await t.pool.query<{ n: number }>('select count(*)::int as n from herald.job_logs where job_id = $1', [jobId])).rows[0]!.n;
/** Whether backend `pid` waits for a lock. */
const waitsForLock = async (pid: number) =>
  (await t.pool.query<{ w: string | null }>('select wait_event_type as w from pg_stat_activity where pid = $1', [pid])).rows[0]?.w === 'Lock';
const pidOf = async (c: pg.Client) => Number((await c.query<{ pid: number }>('select pg_backend_pid() as pid')).rows[0]!.pid);

const KEY_ERROR = { code: '23503', constraint: 'job_logs_job_id_fkey', table: 'job_logs' };

describe('herald.job_logs: each line belongs to a job', () => {
  it('a batch with one line for a missing job is refused whole, with the foreign key’s error; nothing is written, no event appended', async () => {
    const job = await newJob();
    const missing = job + 1_000_000;
    const before = await head();
    const err = await store
      .writeLogs([
        { jobId: job, level: 'info', message: 'kept out with the rest' },
        { jobId: missing, level: 'info', message: 'no such job' },
      ])
      .catch((e: unknown) => e);
    expect(err).toMatchObject({ ...KEY_ERROR, detail: `Key (job_id)=(${missing}) is not present in table "jobs".` });
    expect(await lineCount(job)).toBe(0);
    expect(await head()).toBe(before);
    // The same lines without the stranger are written, each with its event.
    const ids = await store.writeLogs([{ jobId: job, level: 'warn', message: 'written' }]);
    expect(ids).toHaveLength(1);
    expect(await lineCount(job)).toBe(1);
    const { rows } = await t.pool.query('select topic, type, data from herald.events where id > $1 order by id', [before]);
    expect(rows).toEqual([{ topic: `job:${job}`, type: 'log', data: expect.objectContaining({ id: ids[0], level: 'warn', message: 'written' }) }]);
  });

  it('a line moved to a missing job is refused; a job’s id cannot change', async () => {
    const job = await newJob();
    const [id] = await store.writeLogs([{ jobId: job, level: 'info', message: 'x' }]);
    await expect(t.pool.query('update herald.job_logs set job_id = $2 where id = $1', [id, job + 1_000_000])).rejects.toMatchObject(KEY_ERROR);
    await expect(t.pool.query('update herald.jobs set id = default where id = $1', [job])).rejects.toMatchObject({ code: '23503', table: 'jobs' });
    // An update that leaves job_id as it is passes.
    await t.pool.query(`update herald.job_logs set message = 'y' where id = $1`, [id]);
    expect((await t.pool.query('select job_id, message from herald.job_logs where id = $1', [id])).rows).toEqual([{ job_id: job, message: 'y' }]);
  });

  it("deleting jobs deletes their lines and no other job's", async () => {
    const [gone, kept] = [await newJob(), await newJob()];
    await store.writeLogs([
      { jobId: gone, level: 'info', message: '1' },
      { jobId: kept, level: 'info', message: '2' },
      { jobId: gone, level: 'info', message: '3' },
    ]);
    await t.pool.query('delete from herald.jobs where id = $1', [gone]);
    expect(await lineCount(gone)).toBe(0);
    expect(await lineCount(kept)).toBe(1);
  });

  it('a delete waits for a line being written for its job, then removes it too', async () => {
    const job = await newJob();
    const bPid = await pidOf(b);
    await a.query('begin');
    await a.query(`insert into herald.job_logs (job_id, level, message) values ($1, 20, 'in flight')`, [job]);
    const deleting = b.query('delete from herald.jobs where id = $1', [job]);
    await until(() => waitsForLock(bPid), 5000, 'the delete to wait for the writer');
    await a.query('commit');
    await deleting;
    expect(await lineCount(job)).toBe(0);
  });

  it('a line written for a job being deleted waits, then is refused', async () => {
    const job = await newJob();
    const aPid = await pidOf(a);
    await b.query('begin');
    await b.query('delete from herald.jobs where id = $1', [job]);
    const writing = a.query(`insert into herald.job_logs (job_id, level, message) values ($1, 20, 'too late')`, [job]).catch((e: unknown) => e);
    await until(() => waitsForLock(aPid), 5000, 'the writer to wait for the delete');
    await b.query('commit');
    expect(await writing).toMatchObject(KEY_ERROR);
    expect(await lineCount(job)).toBe(0);
  });
});
