/**
 * CatchUpReads on a real pool: round-robin by key, the per-key share of connections and of
 * read time, the bounded queue, the timeout, cancellation.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPool } from '../../src/db/pool.ts';
import { CatchUpReads, INTERNAL_READ_KEY } from '../../src/events/catch-up-reads.ts';
import { HeraldError } from '../../src/errors.ts';
import { createLogger } from '../../src/logger.ts';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';
import { until } from '../support/herald.ts';

let db: TestDatabase;
const pools: pg.Pool[] = [];

beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => {
  await Promise.all(pools.map((p) => p.end()));
  await db.drop();
});

function reads(max: number, queueMax: number, timeoutMs = 5000, shareMsPerS = 0): CatchUpReads {
  const pool = createPool(db.url, max, createLogger('silent'), { applicationName: 'herald-reads-test', statementTimeoutMs: timeoutMs });
  pools.push(pool);
  return new CatchUpReads({ pool, max, queueMax, timeoutMs, shareMsPerS, logger: createLogger('silent') });
}

describe('CatchUpReads', () => {
  it('serves waiting keys round-robin, one connection per key when the pool has one', async () => {
    const r = reads(1, 100);
    const started: string[] = [];
    const read = (name: string) =>
      r.run(
        async (c) => {
          started.push(name);
          await c.query('select pg_sleep(0.02)');
        },
        { key: name[0] },
      );
    await Promise.all(['A1', 'A2', 'A3', 'B1', 'B2', 'C1'].map(read));
    // A was first; each served key goes to the back of the round.
    expect(started).toEqual(['A1', 'A2', 'B1', 'C1', 'A3', 'B2']);
  });

  it('lets one key hold at most half the connections, so another key starts at once', async () => {
    const r = reads(4, 100);
    let release!: () => void;
    const gate = new Promise<void>((res) => (release = res));
    const busy = Array.from({ length: 5 }, () => r.run(() => gate, { key: 'greedy' }));
    await until(() => r.inFlight === 2 && r.waitingCount === 3);
    const other = r.run(async () => 'served', { key: 'other' });
    expect(await other).toBe('served');
    release();
    await Promise.all(busy);
  });

  it('refuses a read past queueMax with a retryable unavailable carrying retryAfterS', async () => {
    const r = reads(2, 2);
    let release!: () => void;
    const gate = new Promise<void>((res) => (release = res));
    const held = Array.from({ length: 3 }, () => r.run(() => gate, { key: 'k' }));
    await until(() => r.waitingCount === 2);
    const err = await r.run(async () => 'never', { key: 'k' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(HeraldError);
    expect(err).toMatchObject({ code: 'HERALD_ERR_UNAVAILABLE', retryable: true, httpStatus: 503, details: { retryAfterS: 1 } });
    release();
    await Promise.all(held);
  });

  it('turns a statement timeout into a retryable unavailable and keeps the connection usable', async () => {
    const r = reads(1, 10, 100);
    const err = await r.run((c) => c.query('select pg_sleep(2)'), { key: 'k' }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'HERALD_ERR_UNAVAILABLE', details: { retryAfterS: 1 } });
    expect((err as Error).message).toMatch(/longer than 100 ms/);
    expect((await r.run((c) => c.query<{ n: number }>('select 1 as n'), { key: 'k' })).rows[0]!.n).toBe(1);
  });

  it('an abort takes a queued read out of the queue, and cancels a running one in PostgreSQL', async () => {
    const r = reads(1, 10);
    const admin = new pg.Client({ connectionString: db.url });
    await admin.connect();
    const running = new AbortController();
    const queued = new AbortController();
    let queuedRan = false;
    const first = r.run((c) => c.query('select pg_sleep(30)'), { key: 'a', signal: running.signal }).catch((e: unknown) => e);
    const second = r
      .run(
        async () => {
          queuedRan = true;
        },
        { key: 'b', signal: queued.signal },
      )
      .catch((e: unknown) => e);
    const sleeping = async () =>
      Number(
        (
          await admin.query<{ n: string }>(
            "select count(*) as n from pg_stat_activity where application_name = 'herald-reads-test' and state = 'active' and query like 'select pg_sleep%'",
          )
        ).rows[0]!.n,
      );
    await until(async () => (await sleeping()) === 1 && r.waitingCount === 1);
    queued.abort(new Error('client left'));
    expect(await second).toMatchObject({ message: 'client left' });
    expect(r.waitingCount).toBe(0);
    const t0 = Date.now();
    running.abort(new Error('re-subscribed'));
    expect(await first).toMatchObject({ message: 're-subscribed' });
    await until(async () => (await sleeping()) === 0, 2000);
    expect(Date.now() - t0).toBeLessThan(2000);
    expect(queuedRan).toBe(false);
    expect(r.inFlight).toBe(0);
    await admin.end();
  });

  it('runs reads without parallel workers: one read, one backend', async () => {
    const r = reads(1, 10);
    const { rows } = await r.run((c) => c.query<{ max_parallel_workers_per_gather: string }>('show max_parallel_workers_per_gather'));
    expect(rows[0]!.max_parallel_workers_per_gather).toBe('0');
  });
});

describe("CatchUpReads: each key's share of read time", () => {
  // 500 ms a second, a bucket of 500 ms: a read of 1.5 s leaves its key 1 s in debt, which
  // takes 2 s to earn back.
  const SHARE_MS_PER_S = 500;

  it('charges each read its duration: past its share a key waits in its queue with a connection free, while another key reads at once', async () => {
    const r = reads(2, 100, 5000, SHARE_MS_PER_S);
    const started: string[] = [];
    const first = r.run((c) => c.query('select pg_sleep(1.5)'), { key: 'a' });
    // Queued behind it: with a pool of 2, one key holds one connection.
    let secondAt = 0;
    const second = r.run(
      async (c) => {
        secondAt = performance.now();
        started.push('a');
        await c.query('select 1');
      },
      { key: 'a' },
    );
    expect(r.heldMs('a')).toBe(0);
    await first;
    const doneAt = performance.now();
    const held = r.heldMs('a');
    expect(held).toBeGreaterThan(1900);
    expect(held).toBeLessThanOrEqual(3000);
    // Held, not running, though both connections are free.
    expect([r.inFlight, r.waitingCount, started]).toEqual([0, 1, []]);
    // Another key is not held, and is not queued behind it.
    await r.run(async () => started.push('b'), { key: 'b' });
    expect(started).toEqual(['b']);
    await second;
    expect(started).toEqual(['b', 'a']);
    expect(secondAt).toBeGreaterThanOrEqual(doneAt + held);
    expect(r.heldMs('b')).toBe(0);
  });

  it("a held read that is abandoned leaves the queue; reads within the share, and Herald's own, are never held", async () => {
    const r = reads(2, 100, 5000, SHARE_MS_PER_S);
    await r.run((c) => c.query('select pg_sleep(1.5)'), { key: 'a' });
    expect(r.heldMs('a')).toBeGreaterThan(0);
    const gone = new AbortController();
    const held = r.run(async () => 'never', { key: 'a', signal: gone.signal }).catch((e: unknown) => e);
    expect(r.waitingCount).toBe(1);
    gone.abort(new Error('client left'));
    expect(await held).toMatchObject({ message: 'client left' });
    expect(r.waitingCount).toBe(0);
    // A short read is within the bucket.
    await r.run((c) => c.query('select pg_sleep(0.05)'), { key: 'b' });
    expect(r.heldMs('b')).toBe(0);
    // Herald's own readers (job workers, the exporter) are not charged.
    await r.run((c) => c.query('select pg_sleep(1.5)'));
    expect(r.heldMs(INTERNAL_READ_KEY)).toBe(0);
    expect(await r.run(async () => 'at once')).toBe('at once');
  });

  it('with no share (0) nothing is charged', async () => {
    const r = reads(2, 100, 5000, 0);
    await r.run((c) => c.query('select pg_sleep(1.1)'), { key: 'a' });
    expect(r.heldMs('a')).toBe(0);
  });
});
