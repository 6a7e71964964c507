/**
 * Starts one throwaway embedded PostgreSQL (or uses TEST_DATABASE_URL), migrates a template
 * database once, and provides the admin URL. Each test file clones the template
 * (test/support/db.ts), so files are isolated and migrations run once per suite.
 */
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import type { TestProject } from 'vitest/node';
import { startEmbeddedPostgres } from '../../src/db/embedded.ts';
import { migrate } from '../../src/db/migrate.ts';
import { createLogger } from '../../src/logger.ts';
import { freePort } from './ports.ts';

export const TEMPLATE_DB = 'herald_template';

declare module 'vitest' {
  export interface ProvidedContext {
    /** URL of the maintenance database on the test server. */
    adminUrl: string;
  }
}

export function withDatabase(url: string, db: string): string {
  const u = new URL(url);
  u.pathname = `/${db}`;
  return u.toString();
}

export default async function setup(project: TestProject) {
  let adminUrl = process.env.TEST_DATABASE_URL;
  let stop: (() => Promise<void>) | undefined;
  let dir: string | undefined;
  if (!adminUrl) {
    dir = await mkdtemp(path.join(os.tmpdir(), 'herald-test-'));
    // Our own throwaway folder (mkdtemp makes it 0700): opened so that, as root, the
    // `postgres` user can keep the data here rather than under /var/lib/herald.
    await chmod(dir, 0o755);
    const db = await startEmbeddedPostgres({
      dir: path.join(dir, 'pg'),
      port: await freePort(),
      persistent: false,
      // Throwaway data: durability buys nothing here and fsync costs seconds.
      settings: { fsync: 'off', synchronous_commit: 'off', full_page_writes: 'off', max_connections: '400' },
      onNotice: (message) => console.warn(message),
    });
    adminUrl = db.url;
    stop = db.stop;
  }
  const teardown = async () => {
    await stop?.();
    if (dir) await rm(dir, { recursive: true, force: true });
  };
  try {
    const admin = new pg.Client({ connectionString: adminUrl });
    await admin.connect();
    await admin.query(`drop database if exists ${TEMPLATE_DB}`);
    await admin.query(`create database ${TEMPLATE_DB}`);
    await admin.end();
    const pool = new pg.Pool({ connectionString: withDatabase(adminUrl, TEMPLATE_DB), max: 1 });
    await migrate(pool, createLogger('silent')).finally(() => pool.end());
  } catch (err) {
    // vitest runs no teardown when setup throws: a running server would keep it from exiting.
    await teardown();
    throw err;
  }
  project.provide('adminUrl', adminUrl);
  return teardown;
}
