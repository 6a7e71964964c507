/** The `herald` command as a real child process (bin/herald.js), signals and all. */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { connect, type HeraldEvent } from 'herald-client';
import { createPool } from '../src/db/pool.ts';
import { EventLog } from '../src/events/log.ts';
import { createLogger } from '../src/logger.ts';
import { createTestDatabase } from './support/db.ts';
import { until } from './support/herald.ts';
import { freePort } from './support/ports.ts';
import { openWs } from './support/ws.ts';
import { HERALD_BIN, trackProcesses } from './support/processes.ts';

const BIN = HERALD_BIN;
const { children, cleanups } = trackProcesses();

function run(args: string[], env: Record<string, string>): { child: ChildProcess; out: string[]; err: string[] } {
  const child = spawn(process.execPath, [BIN, ...args], {
    env: { PATH: process.env.PATH ?? '', LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  child.on('exit', () => children.delete(child));
  const out: string[] = [];
  const err: string[] = [];
  child.stdout!.setEncoding('utf8').on('data', (d: string) => out.push(d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => err.push(d));
  return { child, out, err };
}

async function serve(databaseUrl: string, port: number) {
  // `herald listening on …` is an info log line, so this process logs at info.
  const p = run(['serve', '--port', String(port), '--host', '127.0.0.1'], { DATABASE_URL: databaseUrl, HERALD_SHUTDOWN_GRACE_MS: '2000', LOG_LEVEL: 'info' });
  await until(() => p.out.join('').includes('herald listening on'), 30_000, 'herald to start');
  return p;
}

describe('herald CLI', () => {
  it('SIGTERM mid-stream: clients get 1001 with their cursor; after a restart the client library ends with exactly the right events', async () => {
    const db = await createTestDatabase();
    cleanups.push(db.drop);
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const first = await serve(db.url, port);
    const pool = createPool(db.url, 4, createLogger('silent'));
    cleanups.push(() => pool.end());
    const log = new EventLog(pool);

    const received: HeraldEvent[][] = [[], [], []];
    const topics = [['r:a'], ['r:*'], ['*']];
    const conns = received.map((list, i) =>
      connect({ url, topics: topics[i]!, since: 0, backoff: { initialMs: 50, maxMs: 200 }, onEvent: (e) => list.push(e) }),
    );
    cleanups.push(async () => {
      for (const c of conns) c.close();
    });
    await Promise.all(conns.map((c) => c.ready));
    const raw = await openWs(url);
    raw.send({ op: 'subscribe', topics: ['r:a'], since: 0 });
    await raw.waitFor((m) => m.op === 'subscribed');

    let producing = true;
    let n = 0;
    const producer = (async () => {
      while (producing) {
        await log
          .emitMany([
            { topic: n % 2 ? 'r:a' : 'r:b', type: 't', data: n },
            { topic: 's:c', type: 't', data: n },
          ])
          .then(
            () => (n += 1),
            () => undefined,
          );
        await new Promise((r) => setTimeout(r, 5));
      }
    })();
    await until(() => received[2]!.length > 40, 10_000, 'traffic');

    first.child.kill('SIGTERM');
    const [code] = await once(first.child, 'exit');
    expect(code).toBe(0);
    const closed = await raw.closed;
    expect(closed.code).toBe(1001);
    const position = (JSON.parse(closed.reason) as { position: number }).position;
    expect(position).toBeGreaterThan(0);
    expect(raw.events().every((id) => id <= position)).toBe(true);

    // Events commit while Herald is down: the clients must catch up on them after the restart.
    const atExit = n;
    await until(() => n >= atExit + 10, 10_000, 'events committed while Herald is down');
    await serve(db.url, port);
    await until(() => conns.every((c) => c.state === 'open'), 20_000, 'clients to reconnect');
    // And some after the reconnect, which reach the clients live.
    const atReconnect = n;
    await until(() => n >= atReconnect + 10, 10_000, 'events committed after the reconnect');
    producing = false;
    await producer;

    const { rows } = await pool.query<{ id: number; topic: string }>('select id, topic from herald.events order by id');
    const want = [rows.filter((r) => r.topic === 'r:a'), rows.filter((r) => r.topic.startsWith('r:')), rows].map((l) => l.map((r) => r.id));
    for (const [i, list] of received.entries()) {
      await until(() => list.length >= want[i]!.length, 20_000, `client ${i} to catch up`);
      expect(list.map((e) => e.id)).toEqual(want[i]);
    }
  });

  it('scale-out: clients hopping between two Herald processes on one database with since end with exactly the right events', async () => {
    const db = await createTestDatabase();
    cleanups.push(db.drop);
    const ports = [await freePort(), await freePort()];
    const servers = await Promise.all(ports.map((p) => serve(db.url, p)));
    const pool = createPool(db.url, 4, createLogger('silent'));
    cleanups.push(() => pool.end());
    const log = new EventLog(pool);
    let producing = true;
    const producer = (async () => {
      for (let n = 0; producing; n++) {
        await log.emitMany([{ topic: n % 3 === 0 ? 'hop:a' : 'hop:b', type: 't', data: n }]);
        await new Promise((r) => setTimeout(r, 3));
      }
    })();
    const ids: number[] = [];
    let position = 0;
    for (let hop = 0; hop < 8; hop++) {
      const before = ids.length;
      const conn = connect({ url: `http://127.0.0.1:${ports[hop % 2]}`, topics: ['hop:a'], since: position, onEvent: (e) => ids.push(e.id) });
      await conn.ready;
      // Every hop delivers something before the client moves on.
      await until(() => ids.length > before, 10_000, `an event on hop ${hop}`);
      position = conn.position ?? position;
      conn.close();
    }
    producing = false;
    await producer;
    const final = connect({ url: `http://127.0.0.1:${ports[0]}`, topics: ['hop:a'], since: position, onEvent: (e) => ids.push(e.id) });
    const { rows } = await pool.query<{ id: number }>(`select id from herald.events where topic = 'hop:a' order by id`);
    await until(() => ids.length >= rows.length, 15_000, 'the last hop to catch up');
    final.close();
    expect(ids).toEqual(rows.map((r) => r.id));
    for (const s of servers) {
      s.child.kill('SIGTERM');
      await once(s.child, 'exit');
    }
  });

  it('herald tail prints matching events as JSON lines from --since', async () => {
    const db = await createTestDatabase();
    cleanups.push(db.drop);
    const port = await freePort();
    const server = await serve(db.url, port);
    const pool = createPool(db.url, 2, createLogger('silent'));
    cleanups.push(() => pool.end());
    const ids = await new EventLog(pool).emitMany([
      { topic: 'tail:a', type: 'x', data: { n: 1 } },
      { topic: 'other', type: 'x' },
      { topic: 'tail:b', type: 'y', data: 'two' },
    ]);
    const tail = run(['tail', '--url', `http://127.0.0.1:${port}`, '--topic', 'tail:*', '--since', '0'], {});
    await until(() => tail.out.join('').trim().split('\n').length >= 2, 15_000, 'tail output');
    const lines = tail.out
      .join('')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(lines.map((l) => [l.id, l.topic, l.data])).toEqual([
      [ids[0], 'tail:a', { n: 1 }],
      [ids[2], 'tail:b', 'two'],
    ]);
    tail.child.kill('SIGINT');
    await once(tail.child, 'exit');
    server.child.kill('SIGTERM');
    await once(server.child, 'exit');
  });

  it('herald export --full prints progress and a summary; a second run writes nothing; --gc reports', async () => {
    const db = await createTestDatabase();
    cleanups.push(db.drop);
    const pool = createPool(db.url, 2, createLogger('silent'));
    cleanups.push(() => pool.end());
    await pool.query(`insert into herald.packages (name) select 'cli-' || g from generate_series(1, 3) g`);
    await pool.query(
      `insert into herald.versions (package, version, manifest, archive, size, sha256)
       select 'cli-' || g, '1.0.0', '{}', '\\x1f8b', 2, repeat('0', 64) from generate_series(1, 3) g`,
    );
    const dir = await mkdtemp(path.join(os.tmpdir(), 'herald-cli-export-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const env = { DATABASE_URL: db.url, HERALD_EXPORT_BUCKET_URL: `file://${dir}`, HERALD_RUNTIME_VERSION: '2026.11.22' };
    const first = run(['export', '--full'], env);
    expect((await once(first.child, 'exit'))[0]).toBe(0);
    expect(first.err.join('')).toContain('3/3 packages');
    // 3 packages × 3 objects × 2 prefixes
    expect(first.out.join('')).toMatch(/export: 18 written, 0 unchanged, 0 deleted/);
    const second = run(['export', '--full', '--gc'], env);
    expect((await once(second.child, 'exit'))[0]).toBe(0);
    expect(second.out.join('')).toMatch(/export: 0 written, 18 unchanged, 0 deleted/);
    expect(second.out.join('')).toMatch(/gc: 0 objects deleted; old prefixes removed: none; 0 stray objects reported/);
    const none = run(['export'], env);
    expect((await once(none.child, 'exit'))[0]).not.toBe(0);
    expect(none.err.join('')).toContain('--full, --gc');
  });

  it('a bad setting stops start-up with a message naming it; migrate and config work', async () => {
    const bad = run(['serve'], { PORT: 'eighty' });
    const [code] = await once(bad.child, 'exit');
    expect(code).toBe(78);
    expect(bad.err.join('')).toContain('port (PORT="eighty")');

    const db = await createTestDatabase();
    cleanups.push(db.drop);
    const migrate = run(['migrate'], { DATABASE_URL: db.url });
    expect((await once(migrate.child, 'exit'))[0]).toBe(0);
    expect(migrate.out.join('')).toContain('schema is up to date');

    const config = run(['config'], {});
    expect((await once(config.child, 'exit'))[0]).toBe(0);
    expect(config.out.join('')).toContain('`HERALD_MAX_CLIENT_QUEUE_BYTES`');
  });
});
