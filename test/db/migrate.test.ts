import pg from 'pg';
import { createPool } from '../../src/db/pool.ts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listMigrations, migrate } from '../../src/db/migrate.ts';
import { createLogger } from '../../src/logger.ts';
import { inject } from 'vitest';
import { withDatabase } from '../support/global-setup.ts';

const name = `m_${Date.now().toString(36)}`;
let admin: pg.Client;

beforeAll(async () => {
  admin = new pg.Client({ connectionString: inject('adminUrl') });
  await admin.connect();
  await admin.query(`create database ${name}`);
});
afterAll(async () => {
  await admin.query(`drop database if exists ${name} with (force)`);
  await admin.end();
});

describe('migrations', () => {
  it('two runners starting together apply each migration exactly once', async () => {
    const url = withDatabase(inject('adminUrl'), name);
    const pools = [createPool(url, 2, createLogger('silent')), createPool(url, 2, createLogger('silent'))];
    const results = await Promise.all(pools.map((p) => migrate(p, createLogger('silent'))));
    const all = (await listMigrations()).map((m) => m.id);
    expect(results.flat().sort()).toEqual(all);
    const { rows } = await pools[0]!.query('select id, name from herald.migrations order by id');
    expect(rows.map((r) => r.id)).toEqual(all);
    expect(rows[0]).toEqual({ id: 1, name: 'events' });
    // A third run is a no-op.
    expect(await migrate(pools[0]!, createLogger('silent'))).toEqual([]);
    const epoch = await pools[0]!.query('select epoch::text from herald.meta');
    expect(epoch.rows[0].epoch).toMatch(/^[0-9a-f-]{36}$/);
    await Promise.all(pools.map((p) => p.end()));
  });

  it('migration files are numbered, unique and named in snake_case', async () => {
    const list = await listMigrations();
    expect(list.length).toBeGreaterThan(0);
    expect(list.map((m) => m.file)).toEqual([...list.map((m) => m.file)].sort());
    for (const m of list) expect(m.file).toMatch(/^\d{3}_[a-z0-9_]+\.sql$/);
  });
});
