/** Shared bench plumbing: a private embedded PostgreSQL and a stable table printer. */
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { defaults } from '../src/config.ts';
import { createPool } from '../src/db/pool.ts';
import { startEmbeddedPostgres } from '../src/db/embedded.ts';
import { migrate } from '../src/db/migrate.ts';
import { Appender } from '../src/events/appender.ts';
import { createLogger } from '../src/logger.ts';

export interface BenchDatabase {
  url: string;
  stop(): Promise<void>;
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

/** A fresh, migrated embedded PostgreSQL with default (durable) settings, or BENCH_DATABASE_URL. */
export async function benchDatabase(): Promise<BenchDatabase> {
  if (process.env.BENCH_DATABASE_URL) return { url: process.env.BENCH_DATABASE_URL, stop: async () => undefined };
  const dir = await mkdtemp(path.join(os.tmpdir(), 'herald-bench-'));
  // Our own throwaway folder: opened so that, as root, the `postgres` user keeps the data here
  // (on the same disk as before) rather than under /var/lib/herald.
  await chmod(dir, 0o755);
  const db = await startEmbeddedPostgres({ dir: path.join(dir, 'pg'), port: await freePort(), persistent: false, settings: { max_connections: '300' } });
  const pool = createPool(db.url, 1, createLogger('silent'));
  await migrate(pool, createLogger('silent'));
  await pool.end();
  return {
    url: db.url,
    stop: async () => {
      await db.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Herald's group append as a server builds it (default bounds, one flush in flight, a
 * connection of its own), for callers in the bench's own process; close() flushes and ends it.
 */
export function inProcessAppender(url: string): { appender: Appender; close(): Promise<void> } {
  const pool = createPool(url, 1, createLogger('silent'), { applicationName: 'herald-append' });
  const appender = new Appender({
    pool,
    maxBatchEvents: defaults.appendBatchMaxEvents,
    maxBatchBytes: defaults.appendBatchMaxBytes,
    maxQueueEvents: defaults.appendQueueMaxEvents,
    maxQueueBytes: defaults.appendQueueMaxBytes,
    maxFlushes: 1,
  });
  return {
    appender,
    async close() {
      await appender.close();
      await pool.end();
    },
  };
}

/**
 * The baselines' table: the same shape as herald.events (its checks, (topic, id) index), so
 * a ratio against it measures Herald's append path, not the schema.
 */
export const PLAIN_EVENTS_SETUP_SQL = `
  create table if not exists public.plain_events (
    id bigserial primary key,
    -- Spelled as herald.events spells it (sql/013): the rule written out, no function to inline.
    topic text not null check (topic ~ '^[a-z0-9._-]+(:[a-z0-9._-]+)*$' and octet_length(topic) <= 256),
    type text not null check (octet_length(type) between 1 and 128),
    data jsonb not null,
    at timestamptz not null default now()
  );
  create index if not exists plain_events_topic_id_idx on public.plain_events (topic, id)`;

/** The bare single-event baseline: INSERT + NOTIFY in one statement ($1 topic, $2 data). */
export const PLAIN_APPEND_SQL = `with ins as (insert into public.plain_events (topic, type, data) values ($1, 't', $2) returning id) select pg_notify('plain', '') from ins`;

export type Row = Record<string, string | number>;

export function printTable(title: string, rows: Row[]): void {
  if (rows.length === 0) return;
  const cols = Object.keys(rows[0]!);
  const cell = (v: string | number) => (typeof v === 'number' ? (Number.isInteger(v) ? String(v) : v.toFixed(2)) : v);
  const widths = cols.map((c) => Math.max(c.length, ...rows.map((r) => cell(r[c] ?? '').length)));
  const line = (vals: string[]) => `| ${vals.map((v, i) => v.padEnd(widths[i]!)).join(' | ')} |`;
  console.log(`\n### ${title}\n`);
  console.log(line(cols));
  console.log(`| ${widths.map((w) => '-'.repeat(w)).join(' | ')} |`);
  for (const r of rows) console.log(line(cols.map((c) => cell(r[c] ?? ''))));
}

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}
