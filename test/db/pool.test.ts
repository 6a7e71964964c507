import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPool } from '../../src/db/pool.ts';
import { createLogger } from '../../src/logger.ts';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => {
  await db.drop();
});

describe('createPool', () => {
  it('a checked-out client whose backend is terminated between queries (57P01) raises no unhandled error; its next query fails and release(err) discards it', async () => {
    const pool = createPool(db.url, 2, createLogger('silent'));
    try {
      const client = await pool.connect();
      // pg-pool's own listener is on idle clients only; without one here, the 'error' event
      // below would be an uncaught exception (vitest reports it and the run fails).
      expect(client.listenerCount('error')).toBeGreaterThan(0);
      const { rows } = await client.query<{ pid: number }>('select pg_backend_pid() as pid');
      const pid = rows[0]!.pid;
      // 'end' comes after the client has read the FATAL 57P01 and emitted its 'error' (which
      // events.once() would turn into a rejection: a plain listener waits for 'end' alone).
      const ended = new Promise((resolve) => client.once('end', resolve));
      await pool.query('select pg_terminate_backend($1)', [pid]);
      await ended;
      const err = await client.query('select 1').catch((e: unknown) => e as Error);
      expect(err).toBeInstanceOf(Error);
      client.release(err as Error);
      expect((await pool.query<{ one: number }>('select 1 as one')).rows).toEqual([{ one: 1 }]);
    } finally {
      await pool.end();
    }
  });

  it('genericPlans: every connection of the pool plans generically; other pools keep the server default', async () => {
    const generic = createPool(db.url, 2, createLogger('silent'), { genericPlans: true });
    const plain = createPool(db.url, 1, createLogger('silent'));
    try {
      const mode = async (p: typeof plain) => (await p.query<{ plan_cache_mode: string }>('show plan_cache_mode')).rows[0]!.plan_cache_mode;
      // Two at once: two connections.
      expect(await Promise.all([mode(generic), mode(generic)])).toEqual(['force_generic_plan', 'force_generic_plan']);
      expect(generic.totalCount).toBe(2);
      expect(await mode(plain)).toBe('auto');
    } finally {
      await generic.end();
      await plain.end();
    }
  });
});
