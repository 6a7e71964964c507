/**
 * Applies `sql/NNN_name.sql` in order, each in its own transaction together with its row in
 * `herald.migrations`. Runners that start together serialise on a session advisory lock, so
 * two instances booting at once apply each migration exactly once.
 *
 * The safety rules follow graphile-worker's src/migrate.ts (docs/operations.md "Schema
 * migrations and rolling upgrades" is the operator's view):
 * - A migration whose first line is `--! breaking-change` breaks code older than it; its row is
 *   recorded with `breaking = true` (the column comes from 010_migration_breaking.sql).
 * - A database that holds a migration this code does not know is newer than the code. If any
 *   such migration is breaking, start-up is refused before anything is written; if none is,
 *   the code carries on with a warning (the newer migrations promised it still works).
 * - Every file in `sql/` must be a migration or the schema dump: a misnamed migration would
 *   otherwise be skipped silently and the schema would drift from the code's idea of it.
 */
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';
import { coerceError, HeraldError } from '../errors.ts';
import type { Logger } from '../logger.ts';

/** The folder the migrations ship in (`sql/` at the package root). */
export const SQL_DIR = fileURLToPath(new URL('../../sql/', import.meta.url));
/** The committed catalog dump (`npm run schema:dump`) that lives beside the migrations and is never applied. */
export const SCHEMA_DUMP_FILE = 'schema.sql';
/** The name every migration file has: a three-digit id, then a snake_case name. */
const MIGRATION_FILE_RE = /^(\d{3})_([a-z0-9_]+)\.sql$/;
/** The first line that marks a migration as breaking older code. */
const BREAKING_MARKER = '--! breaking-change';

/** 'h:migrat' in ASCII; distinct from the id lock in sql/001_events.sql. */
const MIGRATION_LOCK_KEY = '7510435628068266356';
/** gen_random_uuid() is built in from 13. */
const MIN_SERVER_VERSION_NUM = 130000;

/** One file of `sql/`, as the runner reads it. */
export interface Migration {
  /** The number the file name starts with; ids run 1, 2, 3, … without gaps. */
  id: number;
  /** The file name between the id and `.sql`, recorded in `herald.migrations.name`. */
  name: string;
  /** The file name in `sql/`. */
  file: string;
  /** True when the first line is `--! breaking-change`. */
  breaking: boolean;
  /** The file's text, run as one multi-statement query. */
  sql: string;
}

/**
 * The migrations in `dir`, in id order. Throws HERALD_ERR_CONFIG for any file that is neither
 * a well-named migration nor the schema dump, for an unknown `--!` marker, and for ids that
 * repeat or leave a gap (a lost file). Hidden files (editor swap files, .DS_Store) are ignored.
 */
export async function listMigrations(dir = SQL_DIR): Promise<Migration[]> {
  const migrations: Migration[] = [];
  for (const file of (await readdir(dir)).sort()) {
    if (file.startsWith('.') || file === SCHEMA_DUMP_FILE) continue;
    const match = MIGRATION_FILE_RE.exec(file);
    if (!match) {
      throw new HeraldError(
        'HERALD_ERR_CONFIG',
        `${path.join(dir, file)} is not a migration: files in ${dir} must be named NNN_snake_case_name.sql (three digits, then lower-case letters, digits and underscores), or be ${SCHEMA_DUMP_FILE}. Rename or remove it`,
      );
    }
    const sql = await readFile(path.join(dir, file), 'utf8');
    const firstLine = sql.split('\n', 1)[0]!.trimEnd();
    const breaking = firstLine === BREAKING_MARKER;
    if (!breaking && firstLine.startsWith('--!')) {
      throw new HeraldError('HERALD_ERR_CONFIG', `${file} starts with the unknown marker "${firstLine}": the only marker is "${BREAKING_MARKER}"`);
    }
    migrations.push({ id: Number(match[1]), name: match[2]!, file, breaking, sql });
  }
  migrations.forEach((m, i) => {
    if (m.id !== i + 1) {
      const problem =
        i > 0 && m.id === migrations[i - 1]!.id ? `${migrations[i - 1]!.file} and ${m.file} share id ${m.id}` : `${m.file} should be number ${i + 1}`;
      throw new HeraldError('HERALD_ERR_CONFIG', `migrations must be numbered 1, 2, 3, … without gaps or repeats: ${problem}`);
    }
  });
  return migrations;
}

/** A row of `herald.migrations`. */
interface AppliedRow {
  id: number;
  name: string;
  breaking: boolean;
}

/**
 * Applies pending migrations; returns the ids it applied, in order. Throws HERALD_ERR_CONFIG,
 * before applying anything, when the database has a breaking migration this code does not
 * know, or records a known id under another name.
 */
export async function migrate(pool: pg.Pool, logger: Logger, dir = SQL_DIR): Promise<number[]> {
  // Read (and so check) the files before touching the database: a bad file changes nothing.
  const migrations = await listMigrations(dir);
  const client = await pool.connect();
  const applied: number[] = [];
  try {
    const { rows } = await client.query<{ v: string }>(`select current_setting('server_version_num') as v`);
    if (Number(rows[0]!.v) < MIN_SERVER_VERSION_NUM) {
      throw new HeraldError('HERALD_ERR_CONFIG', `PostgreSQL ${rows[0]!.v} is too old: Herald needs 13 or newer`);
    }
    await client.query('select pg_advisory_lock($1::bigint)', [MIGRATION_LOCK_KEY]);
    try {
      await client.query(`
        create schema if not exists herald;
        create table if not exists herald.migrations (
          id integer primary key,
          name text not null,
          applied_at timestamptz not null default now()
        )`);
      // to_jsonb: `breaking` exists only from 010 on, and this query runs on older schemas too.
      const done = await client.query<AppliedRow>(`
        select id, name, coalesce((to_jsonb(m) ->> 'breaking')::boolean, false) as breaking
        from herald.migrations m
        order by id`);
      checkAppliedAgainstCode(done.rows, migrations, logger);
      const doneIds = new Set(done.rows.map((r) => r.id));
      for (const m of migrations) {
        if (doneIds.has(m.id)) continue;
        await client.query('begin');
        try {
          // The row first: a runner that somehow got past the lock fails here, not halfway.
          await client.query('insert into herald.migrations (id, name) values ($1, $2)', [m.id, m.name]);
          await client.query(m.sql);
          // After the migration's own SQL: the column it sets arrives with migration 010.
          if (m.breaking) await client.query('update herald.migrations set breaking = true where id = $1', [m.id]);
          await client.query('commit');
        } catch (err) {
          await client.query('rollback').catch(() => undefined);
          throw new HeraldError('HERALD_ERR_CONFIG', `migration ${m.file} failed: ${coerceError(err).message}`, {}, { cause: err });
        }
        applied.push(m.id);
        logger.info({ migration: m.file, breaking: m.breaking }, 'applied migration');
      }
    } finally {
      await client.query('select pg_advisory_unlock($1::bigint)', [MIGRATION_LOCK_KEY]).catch(() => undefined);
    }
  } finally {
    client.release();
  }
  return applied;
}

/**
 * graphile-worker's rule for a schema newer than the code: newer migrations that are all
 * non-breaking promised to keep older code working, so it runs (with a warning); a newer
 * breaking one did not, so start-up stops. A known id under another name means the database
 * was migrated by a different line of development: nothing about it can be trusted.
 */
function checkAppliedAgainstCode(rows: AppliedRow[], migrations: Migration[], logger: Logger): void {
  const known = new Map(migrations.map((m) => [m.id, m]));
  for (const row of rows) {
    const m = known.get(row.id);
    if (m && m.name !== row.name) {
      throw new HeraldError(
        'HERALD_ERR_CONFIG',
        `the database recorded migration ${row.id} as "${row.name}" but this Herald's migration ${row.id} is ${m.file}: the database was migrated by a different build of Herald. Run the build that migrated it, or restore a database migrated by this one`,
      );
    }
  }
  const highest = migrations.at(-1)?.id ?? 0;
  const newer = rows.filter((r) => r.id > highest);
  if (newer.length === 0) return;
  const latest = newer.at(-1)!;
  const breaking = newer.filter((r) => r.breaking).at(-1);
  if (breaking) {
    throw new HeraldError(
      'HERALD_ERR_CONFIG',
      `the database schema is newer than this Herald: it is at migration ${latest.id} (${latest.name}) and includes breaking migration ${breaking.id} (${breaking.name}), but this Herald knows migrations up to ${highest} only. Running it against this schema is unsafe: run a Herald release that includes migration ${latest.id} (stop this older release during a rolling upgrade), or restore a database from before migration ${breaking.id}`,
    );
  }
  logger.warn(
    { databaseMigration: latest.id, codeMigration: highest },
    `the database schema is newer than this Herald (migration ${latest.id}, this Herald knows up to ${highest}); none of the newer migrations is breaking, so this Herald carries on. Upgrade it when you can`,
  );
}
