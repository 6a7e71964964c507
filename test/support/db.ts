/** A database per test file, cloned from the migrated template. */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, inject } from 'vitest';
import { createPool } from '../../src/db/pool.ts';
import { createLogger } from '../../src/logger.ts';
import { TEMPLATE_DB, withDatabase } from './global-setup.ts';

export interface TestDatabase {
  url: string;
  name: string;
  drop(): Promise<void>;
}

async function admin<T>(fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: inject('adminUrl') });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

export async function createTestDatabase(): Promise<TestDatabase> {
  const name = `t_${randomBytes(6).toString('hex')}`;
  // CREATE DATABASE … TEMPLATE fails if another session is connected to the template.
  for (let attempt = 0; ; attempt++) {
    try {
      await admin((c) => c.query(`create database ${name} template ${TEMPLATE_DB}`));
      break;
    } catch (err) {
      if (attempt > 20 || !/being accessed by other users/.test((err as Error).message)) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return {
    name,
    url: withDatabase(inject('adminUrl'), name),
    drop: () => admin((c) => c.query(`drop database if exists ${name} with (force)`)).then(() => undefined),
  };
}

/** The highest event id in the log (0 when it is empty). */
export async function logHead(db: pg.Pool | pg.Client): Promise<number> {
  return Number((await db.query<{ h: string }>('select coalesce(max(id), 0) as h from herald.events')).rows[0]!.h);
}

/**
 * A database of this file's own and a pool on it, opened before its tests and dropped after:
 * `const t = useTestPool(); … t.pool.query(…)`. For files that need nothing else.
 */
export function useTestPool(max = 2): { readonly db: TestDatabase; readonly pool: pg.Pool } {
  const state = {} as { db: TestDatabase; pool: pg.Pool };
  beforeAll(async () => {
    state.db = await createTestDatabase();
    state.pool = createPool(state.db.url, max, createLogger('silent'));
  });
  afterAll(async () => {
    await state.pool?.end();
    await state.db?.drop();
  });
  return state;
}
