import { randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { cp, mkdtemp, readdir, readFile, rm, unlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { migrate, SQL_DIR } from '../../src/db/migrate.ts';
import { createPool } from '../../src/db/pool.ts';
import { EXIT_CODES, exitCodeOf, HeraldError } from '../../src/errors.ts';
import { createLogger } from '../../src/logger.ts';
import { createTestDatabase } from '../support/db.ts';
import { withDatabase } from '../support/global-setup.ts';

// The naming rule, written out here rather than taken from the runner, so that a runner that
// skips or misreads a file disagrees with this listing.
const NAME_RULE = /^(\d{3})_([a-z0-9_]+)\.sql$/;
const DUMP = 'schema.sql';
/** How many migrations sql/ holds, for the cases below that add one after the last. */
const KNOWN = readdirSync(SQL_DIR).filter((f) => NAME_RULE.test(f)).length;
const pad = (id: number) => String(id).padStart(3, '0');

interface Expected {
  id: number;
  name: string;
  breaking: boolean;
}

/** sql/ read directly: every migration file with the id, name and marker its text gives. */
async function filesInSqlDir(dir = SQL_DIR): Promise<Expected[]> {
  const out: Expected[] = [];
  for (const file of await readdir(dir)) {
    if (file === DUMP) continue;
    const m = NAME_RULE.exec(file);
    if (!m) throw new Error(`sql/${file} does not follow NNN_snake_case.sql`);
    const text = await readFile(path.join(dir, file), 'utf8');
    out.push({ id: Number.parseInt(m[1]!, 10), name: m[2]!, breaking: text.startsWith('--! breaking-change\n') });
  }
  return out.sort((a, b) => a.id - b.id);
}

let admin: pg.Client;
const created: string[] = [];
const tmpDirs: string[] = [];
const logger = createLogger('silent');

/** The URL of a new, empty database (not the migrated template). */
async function emptyDatabaseUrl(): Promise<string> {
  const name = `m_${randomBytes(6).toString('hex')}`;
  await admin.query(`create database ${name}`);
  created.push(name);
  return withDatabase(inject('adminUrl'), name);
}

/** A pool on a new, empty database, ended after the test. */
async function emptyDatabase(): Promise<pg.Pool> {
  return track(createPool(await emptyDatabaseUrl(), 2, logger));
}

/** A copy of sql/ that a test may add files to. */
async function sqlCopy(): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'herald-sql-'));
  tmpDirs.push(dir);
  await cp(SQL_DIR, dir, { recursive: true });
  return dir;
}

async function hasHeraldSchema(pool: pg.Pool): Promise<boolean> {
  const { rows } = await pool.query(`select to_regnamespace('herald') is not null as present`);
  return rows[0].present;
}

const pools: pg.Pool[] = [];
function track(pool: pg.Pool): pg.Pool {
  pools.push(pool);
  return pool;
}

beforeAll(async () => {
  admin = new pg.Client({ connectionString: inject('adminUrl') });
  await admin.connect();
});
afterEach(async () => {
  await Promise.all(pools.splice(0).map((p) => p.end()));
});
afterAll(async () => {
  for (const name of created) await admin.query(`drop database if exists ${name} with (force)`);
  await admin.end();
  for (const dir of tmpDirs) await rm(dir, { recursive: true, force: true });
});

describe('migration files', () => {
  it('every file in sql/ is a migration named NNN_snake_case.sql or the schema dump, numbered 1..N', async () => {
    const files = await filesInSqlDir();
    expect(files.length).toBeGreaterThanOrEqual(10);
    expect(files.map((f) => f.id)).toEqual(files.map((_, i) => i + 1));
  });

  it('the runner applies exactly the files in sql/, in id order, recording each name and breaking flag', async () => {
    const expected = await filesInSqlDir();
    const pool = await emptyDatabase();
    expect(await migrate(pool, logger)).toEqual(expected.map((f) => f.id));
    const { rows } = await pool.query('select id, name, breaking from herald.migrations order by id');
    expect(rows).toEqual(expected);
    expect(rows[0]).toEqual({ id: 1, name: 'events', breaking: false });
  });

  it.for([
    [`${pad(KNOWN + 1)}_two-words.sql`, 'is not a migration'],
    [`${KNOWN + 1}_short_id.sql`, 'is not a migration'],
    [`${pad(KNOWN + 1)}_Upper.sql`, 'is not a migration'],
    ['notes.txt', 'is not a migration'],
    [`${pad(KNOWN + 1)}_backup.sql.orig`, 'is not a migration'],
    [`${pad(KNOWN + 2)}_gap.sql`, `without gaps or repeats: ${pad(KNOWN + 2)}_gap.sql should be number ${KNOWN + 1}`],
    ['010_twin.sql', 'without gaps or repeats: 010_migration_breaking.sql and 010_twin.sql share id 10'],
  ] as const)('a stray file %s in sql/ is refused before the database is touched', async ([file, message]) => {
    const dir = await sqlCopy();
    await writeFile(path.join(dir, file), 'create table herald.stray (id int);\n');
    const pool = await emptyDatabase();
    const err = await migrate(pool, logger, dir).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(HeraldError);
    expect((err as HeraldError).code).toBe('HERALD_ERR_CONFIG');
    expect((err as HeraldError).message).toContain(message);
    expect((err as HeraldError).message).toContain(file);
    expect(await hasHeraldSchema(pool)).toBe(false);
  });

  it('a hidden file in sql/ (an editor swap file) is ignored', async () => {
    const dir = await sqlCopy();
    await writeFile(path.join(dir, `.${pad(KNOWN + 1)}_next.sql.swp`), 'not sql at all');
    const pool = await emptyDatabase();
    expect(await migrate(pool, logger, dir)).toEqual((await filesInSqlDir()).map((f) => f.id));
  });

  it('an unknown --! marker is refused', async () => {
    const dir = await sqlCopy();
    await writeFile(path.join(dir, `${pad(KNOWN + 1)}_typo.sql`), '--! breaking change\ncreate table herald.typo (id int);\n');
    const pool = await emptyDatabase();
    await expect(migrate(pool, logger, dir)).rejects.toThrow(`${pad(KNOWN + 1)}_typo.sql starts with the unknown marker "--! breaking change"`);
    expect(await hasHeraldSchema(pool)).toBe(false);
  });
});

describe('migrate', () => {
  it('two runners starting together apply each migration exactly once', async () => {
    const url = await emptyDatabaseUrl();
    const runners = [track(createPool(url, 2, logger)), track(createPool(url, 2, logger))];
    const results = await Promise.all(runners.map((p) => migrate(p, logger)));
    const all = (await filesInSqlDir()).map((f) => f.id);
    // One runner applied everything and the other nothing, in whichever order they got the lock.
    expect(results.map((r) => r.length).sort((a, b) => a - b)).toEqual([0, all.length]);
    const pool = runners[0]!;
    expect(results.flat()).toEqual(all);
    const { rows } = await pool.query('select id, name from herald.migrations order by id');
    expect(rows.map((r) => r.id)).toEqual(all);
    expect(rows[0]).toEqual({ id: 1, name: 'events' });
    // A third run is a no-op.
    expect(await migrate(pool, logger)).toEqual([]);
    const epoch = await pool.query('select epoch::text from herald.meta');
    expect(epoch.rows[0].epoch).toMatch(/^[0-9a-f-]{36}$/);
  });

  it('a migration whose first line is --! breaking-change is recorded as breaking', async () => {
    const dir = await sqlCopy();
    await writeFile(path.join(dir, `${pad(KNOWN + 1)}_drops_things.sql`), '--! breaking-change\ncreate table herald.breaking_probe (id int);\n');
    await writeFile(path.join(dir, `${pad(KNOWN + 2)}_adds_things.sql`), '-- not breaking\ncreate table herald.additive_probe (id int);\n');
    const pool = await emptyDatabase();
    const expected = await filesInSqlDir(dir);
    expect(expected.slice(-2)).toEqual([
      { id: KNOWN + 1, name: 'drops_things', breaking: true },
      { id: KNOWN + 2, name: 'adds_things', breaking: false },
    ]);
    expect(await migrate(pool, logger, dir)).toEqual(expected.map((f) => f.id));
    const { rows } = await pool.query('select id, name, breaking from herald.migrations order by id');
    expect(rows).toEqual(expected);
    // The migration's own SQL ran in the same transaction as its row.
    expect((await pool.query(`select to_regclass('herald.breaking_probe') is not null as present`)).rows[0].present).toBe(true);
  });

  it('a failed migration leaves neither its row nor its changes, and names the file', async () => {
    const dir = await sqlCopy();
    await writeFile(path.join(dir, `${pad(KNOWN + 1)}_half_done.sql`), 'create table herald.half (id int);\nselect no_such_function();\n');
    const pool = await emptyDatabase();
    const err = await migrate(pool, logger, dir).catch((e: unknown) => e);
    expect((err as HeraldError).code).toBe('HERALD_ERR_CONFIG');
    expect((err as HeraldError).message).toMatch(new RegExp(`^migration ${pad(KNOWN + 1)}_half_done\\.sql failed: .*no_such_function`));
    const { rows } = await pool.query('select max(id)::int as id from herald.migrations');
    expect(rows[0].id).toBe(KNOWN);
    expect((await pool.query(`select to_regclass('herald.half') is null as absent`)).rows[0].absent).toBe(true);
  });
});

describe('a database newer than the code', () => {
  let db: Awaited<ReturnType<typeof createTestDatabase>> | undefined;
  let pool: pg.Pool;
  afterEach(async () => {
    await pool.end();
    await db?.drop();
  });
  async function migratedDatabase(): Promise<void> {
    // The template is migrated from scratch by the test setup, with this code.
    db = await createTestDatabase();
    pool = createPool(db.url, 2, logger);
  }

  it('with newer non-breaking migrations: this code starts, with a warning naming both revisions', async () => {
    await migratedDatabase();
    await pool.query(`insert into herald.migrations (id, name, breaking) values ($1, 'from_a_newer_release', false), ($2, 'another_one', false)`, [
      KNOWN + 1,
      KNOWN + 2,
    ]);
    const lines: string[] = [];
    const warnLogger = createLogger('warn', { write: (line: string) => void lines.push(line) });
    expect(await migrate(pool, warnLogger)).toEqual([]);
    const warnings = lines.map((l) => JSON.parse(l));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatchObject({ level: 40, databaseMigration: KNOWN + 2, codeMigration: KNOWN });
    expect(warnings[0].msg).toContain(`the database schema is newer than this Herald (migration ${KNOWN + 2}, this Herald knows up to ${KNOWN})`);
  });

  it('with a newer breaking migration: start-up is refused with HERALD_ERR_CONFIG and the way out', async () => {
    await migratedDatabase();
    await pool.query(
      `insert into herald.migrations (id, name, breaking) values ($1, 'harmless', false), ($2, 'drops_a_column', true), ($3, 'harmless_again', false)`,
      [KNOWN + 1, KNOWN + 2, KNOWN + 3],
    );
    const err = await migrate(pool, logger).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(HeraldError);
    expect((err as HeraldError).code).toBe('HERALD_ERR_CONFIG');
    expect(exitCodeOf(err)).toBe(EXIT_CODES.config);
    expect((err as HeraldError).message).toBe(
      `the database schema is newer than this Herald: it is at migration ${KNOWN + 3} (harmless_again) and includes breaking migration ${KNOWN + 2} (drops_a_column), but this Herald knows migrations up to ${KNOWN} only. Running it against this schema is unsafe: run a Herald release that includes migration ${KNOWN + 3} (stop this older release during a rolling upgrade), or restore a database from before migration ${KNOWN + 2}`,
    );
  });

  it('refuses before applying anything, even a migration this release still has pending', async () => {
    // An older release (it lacks the last file) meets a database that lacks the migration
    // before the last (pending for that release) and holds a newer breaking one.
    await migratedDatabase();
    const files = await filesInSqlDir();
    const last = files.at(-1)!;
    await pool.query('delete from herald.migrations where id = $1', [last.id - 1]);
    await pool.query(`insert into herald.migrations (id, name, breaking) values ($1, 'breaking_one', true)`, [KNOWN + 1]);
    const dir = await sqlCopy();
    await unlink(path.join(dir, `${pad(last.id)}_${last.name}.sql`));
    await expect(migrate(pool, logger, dir)).rejects.toThrow(
      `includes breaking migration ${KNOWN + 1} (breaking_one), but this Herald knows migrations up to ${KNOWN - 1} only`,
    );
    const { rows } = await pool.query('select id from herald.migrations order by id');
    expect(rows.map((r) => r.id)).toEqual([...files.slice(0, -2).map((f) => f.id), last.id, KNOWN + 1]);
  });

  it('a known id recorded under another name is refused', async () => {
    await migratedDatabase();
    await pool.query(`update herald.migrations set name = 'jobs_from_another_branch' where id = 3`);
    await expect(migrate(pool, logger)).rejects.toThrow(
      'the database recorded migration 3 as "jobs_from_another_branch" but this Herald\'s migration 3 is 003_jobs.sql',
    );
  });
});
