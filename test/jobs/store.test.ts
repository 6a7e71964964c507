import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPool } from '../../src/db/pool.ts';
import { JobStore } from '../../src/jobs/store.ts';
import { createLogger } from '../../src/logger.ts';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';

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
