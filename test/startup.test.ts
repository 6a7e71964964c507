/**
 * Start-up failures as a newcomer meets them, in a real `herald serve` process: each ends
 * with exactly one `herald: …` line on stderr (no stack) and its documented exit status, and
 * stdout carries only JSON log lines.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { EXIT_CODES } from '../src/errors.ts';
import { createTestDatabase } from './support/db.ts';
import { LineCollector } from './support/lines.ts';
import { freePort } from './support/ports.ts';
import { HERALD_BIN, trackProcesses } from './support/processes.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

/** The command line that runs `herald <args>`: the compiled command, as users run it. */
function heraldCommand(args: string[]): { command: string; args: string[] } {
  return { command: process.execPath, args: [HERALD_BIN, ...args] };
}

const { children, cleanups } = trackProcesses();

interface Run {
  child: ChildProcess;
  out: LineCollector;
  err: LineCollector;
  /** The exit status, once the process has exited and its output is fully read. */
  status: Promise<number | null>;
}

async function run(args: string[], env: Record<string, string>): Promise<Run> {
  // A private data directory (the exporter's bucket lives there), never the repository's.
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'herald-startup-'));
  cleanups.push(() => rm(dataDir, { recursive: true, force: true }));
  const { command, args: argv } = heraldCommand(args);
  const child = spawn(command, argv, {
    cwd: ROOT,
    // Hermetic: only what the test sets, whatever the developer's shell exports.
    env: { PATH: process.env.PATH ?? '', HERALD_DATA_DIR: dataDir, HERALD_WORKERS: '0', HERALD_EXPORTER: 'false', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  const out = new LineCollector();
  const err = new LineCollector();
  child.stdout!.setEncoding('utf8').on('data', (d: string) => out.push(d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => err.push(d));
  // 'close' comes after 'exit' and after both pipes have ended: all output is in.
  const status = once(child, 'close').then(([code]) => {
    children.delete(child);
    return code as number | null;
  });
  return { child, out, err, status };
}

async function occupiedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => new Promise((resolve) => server.close(resolve)));
  return (server.address() as net.AddressInfo).port;
}

describe('herald serve start-up', () => {
  it('a port in use: one line naming the port and the setting, exit status 73, no stack', async () => {
    const db = await createTestDatabase();
    cleanups.push(db.drop);
    const port = await occupiedPort();
    const p = await run(['serve'], { DATABASE_URL: db.url, PORT: String(port), HOST: '127.0.0.1' });
    expect(await p.status).toBe(EXIT_CODES.cannotListen);
    expect(p.err.lines).toEqual([`herald: port ${port} on 127.0.0.1 is in use (set PORT or --port)`]);
    // It got that far: the database was reached and everything started was stopped again.
    const logs = p.out.json();
    expect(logs.map((l) => l.msg)).toContain('herald stopped');
  });

  it('an unreachable database: a warning per attempt with the reason, then one line naming host:port/database, exit status 69, never the password', async () => {
    const closed = await freePort();
    const p = await run(['serve'], {
      DATABASE_URL: `postgres://herald:hunter2@127.0.0.1:${closed}/app`,
      HERALD_DB_CONNECT_TIMEOUT_MS: '1500',
      PORT: '0',
    });
    expect(await p.status).toBe(EXIT_CODES.unavailable);
    expect(p.err.lines).toHaveLength(1);
    expect(p.err.lines[0]).toMatch(
      new RegExp(`^herald: cannot connect to the database at 127\\.0\\.0\\.1:${closed}/app: connection refused .*\\(\\d+ attempts in \\d+\\.\\d s; `),
    );
    const retries = p.out.json().filter((l) => l.msg !== undefined && String(l.msg).includes('retrying'));
    expect(retries.length).toBeGreaterThanOrEqual(2);
    expect(retries.map((l) => l.attempt)).toEqual(retries.map((_, i) => i + 1));
    for (const r of retries) {
      expect(r.level).toBe(40);
      expect(r.database).toBe(`127.0.0.1:${closed}/app`);
      expect(r.reason).toMatch(/^connection refused/);
    }
    expect([...p.out.lines, ...p.err.lines].join('\n')).not.toContain('hunter2');
  });

  it("a wrong password: retried like an outage, then one line with PostgreSQL's reason, exit status 69, never the password", async () => {
    const db = await createTestDatabase();
    cleanups.push(db.drop);
    const url = new URL(db.url);
    url.password = 'wrong-hunter2';
    const p = await run(['serve'], { DATABASE_URL: url.toString(), HERALD_DB_CONNECT_TIMEOUT_MS: '800', PORT: '0' });
    expect(await p.status).toBe(EXIT_CODES.unavailable);
    expect(p.err.lines).toHaveLength(1);
    expect(p.err.lines[0]).toContain(
      `herald: cannot connect to the database at ${url.hostname}:${url.port}/${db.name}: password authentication failed for user "${url.username}"`,
    );
    expect(p.out.json().filter((l) => l.level === 40 && l.attempt !== undefined).length).toBeGreaterThanOrEqual(1);
    expect([...p.out.lines, ...p.err.lines].join('\n')).not.toContain('hunter2');
  });

  it('an unknown HERALD_* variable: a warning naming the closest setting, and start-up carries on', async () => {
    const db = await createTestDatabase();
    cleanups.push(db.drop);
    const p = await run(['serve'], { DATABASE_URL: db.url, PORT: '0', HOST: '127.0.0.1', HERALD_PORTT: '9000', HERALD_PUBLISH_TOKENS: 'sekrit' });
    const listening = await p.out.waitForJson((l) => String(l.msg).startsWith('herald listening on http://127.0.0.1:'), 60_000, 'herald to listen');
    expect(listening.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const logs = p.out.json();
    const warning = logs.find((l) => l.variable === 'HERALD_PORTT');
    expect(warning).toMatchObject({ level: 40, closest: 'PORT' });
    expect(String(warning!.msg)).toContain('did you mean PORT?');
    // The start-up line lists only what differs from the defaults, secrets redacted.
    const starting = logs.find((l) => l.msg === 'starting herald');
    expect(starting!.settings).toEqual({
      PORT: 0,
      HOST: '127.0.0.1',
      DATABASE_URL: db.url.replace(/:[^:@/]*@/, ':***@'),
      HERALD_DATA_DIR: expect.any(String),
      HERALD_WORKERS: 0,
      HERALD_EXPORTER: false,
      HERALD_PUBLISH_TOKENS: ['[redacted]'],
    });
    expect(p.out.lines.join('\n')).not.toContain('sekrit');
    expect(p.err.lines).toEqual([]);
    p.child.kill('SIGTERM');
    await p.status;
  });
});
