/** A private, migrated PostgreSQL cluster for tests that stop and restart the server itself. */
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { type EmbeddedDatabase, startEmbeddedPostgres } from '../../src/db/embedded.ts';
import { migrate } from '../../src/db/migrate.ts';
import { createPool } from '../../src/db/pool.ts';
import { createLogger } from '../../src/logger.ts';
import { freePort } from './ports.ts';

/** Starts it and registers its removal in `cleanups` (run in reverse order). */
export async function startPrivateCluster(cleanups: (() => Promise<unknown>)[]): Promise<EmbeddedDatabase> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'herald-cluster-'));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  // Our own throwaway folder: opened so that, as root, the `postgres` user can keep the data here.
  await chmod(dir, 0o755);
  const cluster = await startEmbeddedPostgres({ dir: path.join(dir, 'pg'), port: await freePort(), settings: { fsync: 'off' } });
  cleanups.push(cluster.stop);
  const setup = createPool(cluster.url, 2, createLogger('silent'));
  await migrate(setup, createLogger('silent'));
  await setup.end();
  return cluster;
}
