/**
 * `npm run schema:dump`: migrates a fresh embedded PostgreSQL with sql/NNN_*.sql and writes the
 * catalog snapshot (src/db/schema-dump.ts) to sql/schema.sql. Run it after adding a migration
 * and commit the result with it; test/db/schema-dump.test.ts fails until then.
 */
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { startEmbeddedPostgres } from '../src/db/embedded.ts';
import { migrate, SCHEMA_DUMP_FILE, SQL_DIR } from '../src/db/migrate.ts';
import { createPool } from '../src/db/pool.ts';
import { dumpSchema } from '../src/db/schema-dump.ts';
import { createLogger } from '../src/logger.ts';
import { freePort } from '../test/support/ports.ts';

const dir = await mkdtemp(path.join(os.tmpdir(), 'herald-schema-'));
try {
  // Our own throwaway folder (mkdtemp makes it 0700): opened so that, as root, the `postgres`
  // user keeps the data here rather than under /var/lib/herald.
  await chmod(dir, 0o755);
  const db = await startEmbeddedPostgres({ dir: path.join(dir, 'pg'), port: await freePort(), persistent: false, settings: { fsync: 'off' } });
  try {
    const pool = createPool(db.url, 1, createLogger('silent'));
    try {
      await migrate(pool, createLogger('silent'));
      const file = path.join(SQL_DIR, SCHEMA_DUMP_FILE);
      await writeFile(file, await dumpSchema(pool));
      console.log(`${path.relative(process.cwd(), file)} written`);
    } finally {
      await pool.end();
    }
  } finally {
    await db.stop();
  }
} finally {
  await rm(dir, { recursive: true, force: true });
}
