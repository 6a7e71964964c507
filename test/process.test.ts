/**
 * `npm start` as a real process tree (npm, `node dist/cli.js serve`, the embedded PostgreSQL
 * and its children) stopped from outside the way an orchestrator or a terminal stops it: one
 * signal, to the npm process only. Herald must end its streams with their positions, stop
 * its PostgreSQL, and leave no process of the tree behind.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { until } from './support/herald.ts';
import { freePort } from './support/ports.ts';
import { openSse } from './support/sse.ts';
import { openWs } from './support/ws.ts';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const PUBLISH_TOKEN = 'process-test-publisher-token';
const cleanups: (() => Promise<unknown>)[] = [];
const started = new Set<number>();
afterAll(async () => {
  // Whatever a failed test left running, by pid: only processes of the trees started here.
  for (const pid of started) if (isAlive(pid)) process.kill(pid, 'SIGKILL');
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
});

interface ProcInfo {
  pid: number;
  ppid: number;
  comm: string;
  cmdline: string;
}

/** One process from /proc, or undefined once it is gone (a zombie counts as gone). */
function procInfo(pid: number): ProcInfo | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // "pid (comm) state ppid …": comm may hold spaces and parentheses, so split at the last ')'.
    const close = stat.lastIndexOf(')');
    const [state, ppid] = stat.slice(close + 2).split(' ');
    if (state === 'Z' || state === 'X') return undefined;
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ').trim();
    return { pid, ppid: Number(ppid), comm: stat.slice(stat.indexOf('(') + 1, close), cmdline };
  } catch {
    return undefined;
  }
}

const isAlive = (pid: number) => procInfo(pid) !== undefined;

/** Every live descendant of `root`, from one pass over /proc. */
function descendants(root: number): ProcInfo[] {
  const all = readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .map((d) => procInfo(Number(d)))
    .filter((p): p is ProcInfo => p !== undefined);
  const out: ProcInfo[] = [];
  const walk = (pid: number) => {
    for (const p of all) {
      if (p.ppid === pid) {
        out.push(p);
        walk(p.pid);
      }
    }
  };
  walk(root);
  return out;
}

/**
 * As root, the embedded PostgreSQL keeps data whose folder its `postgres` user cannot enter
 * (a 0700 mkdtemp folder) under /var/lib/herald/data/<sha256 of the path>; remove that too.
 */
async function removeRelocatedData(pgDir: string): Promise<void> {
  const key = createHash('sha256').update(pgDir).digest('hex').slice(0, 16);
  const relocated = path.join('/var/lib/herald/data', key);
  const origin = await readFile(path.join(relocated, 'ORIGIN'), 'utf8').catch(() => '');
  if (origin.trim() === pgDir) await rm(relocated, { recursive: true, force: true });
}

interface NpmStart {
  child: ChildProcess;
  url: string;
  output: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** `npm start` in the repository with the embedded PostgreSQL in a fresh 0700 folder; resolves once /readyz is 200. */
async function npmStart(): Promise<NpmStart> {
  // A process group of its own, as a terminal gives a foreground job (Ctrl-C signals the group).
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'herald-process-'));
  cleanups.push(async () => {
    await removeRelocatedData(path.join(dataDir, 'pg'));
    await rm(dataDir, { recursive: true, force: true });
  });
  const port = await freePort();
  const child = spawn('npm', ['start'], {
    cwd: ROOT,
    // Only what npm needs from this environment: no DATABASE_URL, so Herald starts its own.
    env: {
      PATH: process.env.PATH ?? '',
      HOME: process.env.HOME ?? os.homedir(),
      HERALD_DATA_DIR: dataDir,
      PORT: String(port),
      HOST: '127.0.0.1',
      HERALD_EMBEDDED_PG_PORT: String(await freePort()),
      HERALD_PUBLISH_TOKENS: PUBLISH_TOKEN,
      HERALD_SHUTDOWN_GRACE_MS: '2000',
      HERALD_LOG_FORMAT: 'json',
      LOG_LEVEL: 'info',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  started.add(child.pid!);
  const chunks: string[] = [];
  child.stdout!.setEncoding('utf8').on('data', (d: string) => chunks.push(d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => chunks.push(d));
  const exited = once(child, 'exit').then(([code, signal]) => ({ code: code as number | null, signal: signal as NodeJS.Signals | null }));
  const output = () => chunks.join('');
  const url = `http://127.0.0.1:${port}`;
  const ready = (async () => {
    await until(() => output().includes('herald listening on'), 90_000, 'herald to listen');
    await until(async () => (await fetch(`${url}/readyz`).catch(() => null))?.status === 200, 30_000, '/readyz to answer 200');
  })();
  await Promise.race([
    ready,
    exited.then(({ code, signal }) => {
      throw new Error(`npm start exited (${code ?? signal}) before Herald was ready:\n${output()}`);
    }),
  ]);
  return { child, url, output, exited };
}

describe('npm start as a process tree', () => {
  it.for([
    { signal: 'SIGTERM', to: 'the npm process only' },
    { signal: 'SIGINT', to: 'the npm process only' },
    // A terminal's Ctrl-C: every process of the foreground group gets SIGINT at once. The
    // embedded PostgreSQL has a group of its own, so it is stopped by Herald, after the streams.
    { signal: 'SIGINT', to: 'the whole process group (Ctrl-C)' },
  ] as const)(
    '$signal to $to: streams end with their positions, npm exits 0, and no process of the tree is left',
    { timeout: 180_000 },
    async ({ signal, to }) => {
      const npm = await npmStart();
      const res = await fetch(`${npm.url}/v1/events`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${PUBLISH_TOKEN}` },
        body: JSON.stringify({ events: [1, 2, 3].map((n) => ({ topic: `proc:${n}`, type: 't', data: n })) }),
      });
      expect(res.status).toBe(201);
      const { ids } = (await res.json()) as { ids: number[] };
      const last = ids.at(-1)!;

      const ws = await openWs(npm.url);
      ws.send({ op: 'subscribe', topics: ['proc:*'], since: 0 });
      await ws.waitFor((m) => m.op === 'event' && m.id === last);
      const sse = await openSse(`${npm.url}/v1/events/stream?topic=proc:*&since=0`);
      expect(sse.status).toBe(200);
      await sse.waitFor((m) => m.id === String(last));

      const tree = descendants(npm.child.pid!);
      for (const p of tree) started.add(p.pid);
      const herald = tree.find((p) => p.cmdline.includes('dist/cli.js serve') && p.comm !== 'sh');
      expect(herald, `no Herald process under npm: ${JSON.stringify(tree)}`).toBeDefined();
      expect(tree.some((p) => p.comm === 'postgres')).toBe(true);
      // npm relays the signal to its direct child only. A shell in between (dash does not
      // exec `sh -c`'s last command) dies of SIGTERM or sits out SIGINT without passing it on.
      const parent = procInfo(herald!.ppid);
      expect(herald!.ppid, `Herald's parent is \`${parent?.cmdline}\`, not npm: the start script must exec node`).toBe(npm.child.pid);

      if (to === 'the npm process only') npm.child.kill(signal);
      else process.kill(-npm.child.pid!, signal);

      const closed = await ws.closed;
      expect(closed.code).toBe(1001);
      const reason = JSON.parse(closed.reason) as { position: number; message: string };
      expect(reason.position).toBe(last);
      expect(reason.message).toMatch(/shutting down/);

      const error = await sse.waitFor((m) => m.event === 'error', 30_000);
      expect(JSON.parse(error.data)).toMatchObject({ code: 'shutting_down', position: last });
      await sse.ended;

      expect(await npm.exited, npm.output()).toEqual({ code: 0, signal: null });
      await until(() => tree.every((p) => !isAlive(p.pid)), 30_000, `every process of the tree to exit: ${JSON.stringify(tree.filter((p) => isAlive(p.pid)))}`);
      expect(npm.output()).toContain('herald stopped');
    },
  );

  it('SIGTERM while the embedded PostgreSQL is still starting: start-up finishes, then everything stops and the process exits 0', async () => {
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'herald-process-'));
    cleanups.push(async () => {
      await removeRelocatedData(path.join(dataDir, 'pg'));
      await rm(dataDir, { recursive: true, force: true });
    });
    const child = spawn(process.execPath, [path.join(ROOT, 'bin/herald.js'), 'serve'], {
      env: {
        PATH: process.env.PATH ?? '',
        HERALD_DATA_DIR: dataDir,
        PORT: String(await freePort()),
        HOST: '127.0.0.1',
        HERALD_EMBEDDED_PG_PORT: String(await freePort()),
        HERALD_LOG_FORMAT: 'json',
        LOG_LEVEL: 'info',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    started.add(child.pid!);
    const chunks: string[] = [];
    child.stdout!.setEncoding('utf8').on('data', (d: string) => chunks.push(d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => chunks.push(d));
    const exited = once(child, 'exit');
    // initdb and postgres come and go during start-up: keep every pid seen under Herald.
    const seen = new Map<number, ProcInfo>();
    const sample = setInterval(() => {
      for (const p of descendants(child.pid!)) {
        seen.set(p.pid, p);
        started.add(p.pid);
      }
    }, 20);
    cleanups.push(async () => clearInterval(sample));

    await until(() => chunks.join('').includes('starting embedded PostgreSQL'), 60_000, 'the embedded PostgreSQL to start');
    child.kill('SIGTERM');
    const [code] = await exited;
    clearInterval(sample);
    const output = chunks.join('');
    expect(code, output).toBe(0);
    expect(output).toContain('stop requested during start-up');
    expect(output).toContain('herald stopped');
    expect([...seen.values()].some((p) => p.comm === 'postgres')).toBe(true);
    await until(() => [...seen.keys()].every((pid) => !isAlive(pid)), 30_000, 'every process Herald started to exit');
  }, 120_000);
});
