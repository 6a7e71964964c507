/**
 * Applies `sql/NNN_name.sql` in order, each in its own transaction together with its row in
 * `herald.migrations`. Runners that start together serialise on a session advisory lock, so
 * two instances booting at once apply each migration exactly once.
 */
import { readdir, readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';
import { HeraldError } from '../errors.ts';
import type { Logger } from '../logger.ts';

export const SQL_DIR = fileURLToPath(new URL('../../sql/', import.meta.url));
/** 'h:migrat' in ASCII; distinct from the id lock in sql/001_events.sql. */
const MIGRATION_LOCK_KEY = '7510435628068266356';
/** gen_random_uuid() is built in from 13. */
const MIN_SERVER_VERSION_NUM = 130000;

export interface Migration {
  id: number;
  name: string;
  file: string;
}

export async function listMigrations(dir = SQL_DIR): Promise<Migration[]> {
  const files = (await readdir(dir)).filter((f) => /^\d+_[a-z0-9_]+\.sql$/.test(f)).sort();
  const migrations = files.map((file) => {
    const id = Number(file.slice(0, file.indexOf('_')));
    return { id, name: file.replace(/^\d+_|\.sql$/g, ''), file };
  });
  migrations.forEach((m, i) => {
    if (i > 0 && m.id === migrations[i - 1]!.id) throw new HeraldError('HERALD_ERR_CONFIG', `two migrations share id ${m.id}`);
  });
  return migrations;
}

/** Applies pending migrations; returns the ids it applied. */
export async function migrate(pool: pg.Pool, logger: Logger, dir = SQL_DIR): Promise<number[]> {
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
      const done = new Set((await client.query<{ id: number }>('select id from herald.migrations')).rows.map((r) => r.id));
      for (const m of await listMigrations(dir)) {
        if (done.has(m.id)) continue;
        const sql = await readFile(`${dir}/${m.file}`, 'utf8');
        await client.query('begin');
        try {
          // The row first: a runner that somehow got past the lock fails here, not halfway.
          await client.query('insert into herald.migrations (id, name) values ($1, $2)', [m.id, m.name]);
          await client.query(sql);
          await client.query('commit');
        } catch (err) {
          await client.query('rollback').catch(() => undefined);
          throw new HeraldError('HERALD_ERR_CONFIG', `migration ${m.file} failed: ${(err as Error).message}`, {}, { cause: err });
        }
        applied.push(m.id);
        logger.info({ migration: m.file }, 'applied migration');
      }
    } finally {
      await client.query('select pg_advisory_unlock($1::bigint)', [MIGRATION_LOCK_KEY]).catch(() => undefined);
    }
  } finally {
    client.release();
  }
  return applied;
}
