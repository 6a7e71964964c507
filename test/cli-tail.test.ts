/**
 * `herald tail`, the compiled command as a child process, against a real Herald: where its
 * server comes from, what it says on stderr while reconnecting, and how it fails.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { describe, expect, it } from 'vitest';
import { EXIT_CODES } from '../src/errors.ts';
import { createTestDatabase, type TestDatabase } from './support/db.ts';
import { publish, startTestHerald, type TestHerald, until } from './support/herald.ts';
import { freePort } from './support/ports.ts';
import { HERALD_BIN, trackProcesses } from './support/processes.ts';

const BIN = HERALD_BIN;
const { children, cleanups } = trackProcesses();

interface Tail {
  child: ChildProcess;
  out: () => string;
  err: () => string;
  exited: Promise<number | null>;
}

function tail(args: string[], env: Record<string, string> = {}): Tail {
  // No inherited HERALD_URL or HERALD_TOKEN: what the test passes is all there is.
  const child = spawn(process.execPath, [BIN, 'tail', ...args], { env: { PATH: process.env.PATH ?? '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  const out: string[] = [];
  const err: string[] = [];
  child.stdout!.setEncoding('utf8').on('data', (d: string) => out.push(d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => err.push(d));
  const exited = once(child, 'exit').then(([code]) => {
    children.delete(child);
    return code as number | null;
  });
  return { child, out: () => out.join(''), err: () => err.join(''), exited };
}

const lines = (text: string) => text.split('\n').filter((l) => l !== '');
const eventIds = (t: Tail) => lines(t.out()).map((l) => (JSON.parse(l) as { id: number }).id);

let db: TestDatabase | undefined;
async function database(): Promise<TestDatabase> {
  if (!db) {
    db = await createTestDatabase();
    cleanups.push(db.drop);
  }
  return db;
}

async function herald(port: number, overrides: Parameters<typeof startTestHerald>[1] = {}): Promise<TestHerald> {
  const h = await startTestHerald((await database()).url, { port, shutdownGraceMs: 200, ...overrides });
  cleanups.push(h.close);
  return h;
}

describe('herald tail', () => {
  it('with neither --url nor HERALD_URL it says so in one line and exits 64, never trying localhost:8080', async () => {
    const t = tail(['--since', '0']);
    expect(await t.exited).toBe(EXIT_CODES.usage);
    expect(lines(t.err())).toEqual(['herald tail: no server to follow: pass --url <url> or set HERALD_URL']);
    expect(t.out()).toBe('');
  });

  it('a --url that is not http(s) or ws(s) is a usage error too', async () => {
    const t = tail(['--url', 'localhost:8080']);
    expect(await t.exited).toBe(EXIT_CODES.usage);
    expect(lines(t.err())).toHaveLength(1);
    expect(t.err()).toMatch(/^herald tail: --url must be an http\(s\):\/\/ or ws\(s\):\/\/ URL/);
  });

  it('follows HERALD_URL; says why it reconnects while the server restarts, then resumes with every event once', async () => {
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const first = await herald(port);
    const t = tail(['--topic', 'tail:*', '--since', '0'], { HERALD_URL: url });
    await until(() => t.err().includes('herald tail: open'), 15_000, 'tail to subscribe');
    const before = (await (
      await publish(url, {
        events: [
          { topic: 'tail:a', type: 't', data: 1 },
          { topic: 'other', type: 't' },
        ],
      })
    ).json()) as { ids: number[] };
    await until(() => eventIds(t).length === 1, 10_000, 'the first event');

    await first.close();
    await until(() => t.err().includes('(server: shutting_down)'), 10_000, 'the shutdown reason');
    // While nothing listens on the port: the connection is refused, and tail says so.
    await until(() => /\(connection failed: .*ECONNREFUSED/.test(t.err()), 15_000, 'a refused reconnect');
    const second = await herald(port);
    const after = (await (await publish(second.url, { events: [{ topic: 'tail:b', type: 't', data: 2 }] })).json()) as { ids: number[] };
    await until(() => eventIds(t).length === 2, 30_000, 'the event published after the restart');

    expect(eventIds(t)).toEqual([before.ids[0], after.ids[0]]);
    const reconnecting = lines(t.err()).filter((l) => l.includes('reconnecting'));
    expect(reconnecting[0]).toMatch(/^herald tail: reconnecting in \d+\.\d s \(server: shutting_down\)$/);
    t.child.kill('SIGINT');
    expect(await t.exited).toBe(0);
  });

  it('a fatal error is one line, `herald tail: <code>: <message>`, and exit status 1', async () => {
    const h = await herald(0, { privateTopicPrefixes: ['private:'], readTokens: ['a-read-token'] });
    const forbidden = tail(['--url', h.url, '--topic', 'private:x']);
    expect(await forbidden.exited).toBe(EXIT_CODES.failure);
    expect(lines(forbidden.err())).toEqual([expect.stringMatching(/^herald tail: forbidden: "private:x" reaches private topics/)]);

    const badToken = tail(['--url', h.url, '--topic', 'private:x'], { HERALD_TOKEN: 'not-the-read-token' });
    expect(await badToken.exited).toBe(EXIT_CODES.failure);
    expect(lines(badToken.err())).toEqual(['herald tail: unauthorized: the server refused the connection (401)']);
  });
});
