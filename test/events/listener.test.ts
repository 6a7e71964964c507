/**
 * Faults of the one LISTEN connection: the backend killed again and again, and Postgres
 * itself restarted, while producers commit. The safety poll is set to a minute so only the
 * doorbell and the re-read on reconnect can deliver: if either were broken, events would be
 * missing or late and these tests would fail.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { createPool } from '../../src/db/pool.ts';
import { EventLog } from '../../src/events/log.ts';
import { createLogger } from '../../src/logger.ts';
import { createTestDatabase } from '../support/db.ts';
import { followPoll, followSse } from '../support/followers.ts';
import { startPrivateCluster } from '../support/cluster.ts';
import { startTestHerald, until } from '../support/herald.ts';

const cleanups: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
});

const range = (from: number, n: number) => Array.from({ length: n }, (_, i) => from + i);
const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('Listener', () => {
  it('pg_terminate_backend on the LISTEN connection, repeatedly, mid-stream: every follower gets every event exactly once', async () => {
    const db = await createTestDatabase();
    cleanups.push(db.drop);
    const herald = await startTestHerald(db.url, { safetyPollMs: 60_000, listenerReconnectMaxMs: 200 });
    cleanups.push(herald.close);
    const producerPool = createPool(db.url, 4, createLogger('silent'));
    cleanups.push(() => producerPool.end());
    const log = new EventLog(producerPool);
    const base = (await log.readHead()).head;
    const url = () => herald.url;
    const followers = [followSse(url, base), followPoll(url, base), followSse(url, base, '&topic=kill:even')];

    const TOTAL = 400;
    let kills = 0;
    let producing = true;
    const killer = (async () => {
      while (producing) {
        const r = await producerPool.query(
          `select pg_terminate_backend(pid) as ok from pg_stat_activity where application_name = 'herald-listener' and datname = current_database()`,
        );
        kills += r.rows.filter((x) => x.ok).length;
        await pause(60);
      }
    })();
    for (let i = 0; i < TOTAL; i += 4) {
      await log.emitMany(range(i, 4).map((n) => ({ topic: n % 2 === 0 ? 'kill:even' : 'kill:odd', type: 't', data: n })));
      await pause(3);
    }
    producing = false;
    await killer;
    // Last: commit while the listener is down, with no later NOTIFY to ring. Only the
    // re-read on reconnect can deliver these.
    await until(() => herald.ctx.listener.state === 'listening', 10_000, 'listener to settle');
    await producerPool.query(
      `select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'herald-listener' and datname = current_database()`,
    );
    await until(() => herald.ctx.listener.state !== 'listening', 10_000, 'listener to notice the kill');
    await log.emitMany(range(TOTAL, 4).map((n) => ({ topic: n % 2 === 0 ? 'kill:even' : 'kill:odd', type: 't', data: n })));

    await followers[0]!.reach(TOTAL + 4);
    await followers[1]!.reach(TOTAL + 4);
    await followers[2]!.reach(TOTAL / 2 + 2);
    for (const f of followers) await f.stop();
    expect(kills).toBeGreaterThanOrEqual(5);
    expect(herald.ctx.listener.reconnects).toBeGreaterThanOrEqual(3);
    expect(followers[0]!.ids).toEqual(range(base + 1, TOTAL + 4));
    expect(followers[1]!.ids).toEqual(range(base + 1, TOTAL + 4));
    expect(followers[2]!.ids).toEqual(range(base + 1, TOTAL + 4).filter((id) => (id - base - 1) % 2 === 0));
  });

  it('Postgres restarted mid-stream: the listener reconnects, re-reads from its head, and followers get every event exactly once', async () => {
    const cluster = await startPrivateCluster(cleanups);

    const herald = await startTestHerald(cluster.url, { safetyPollMs: 60_000, listenerReconnectMaxMs: 300 });
    cleanups.push(herald.close);
    const url = () => herald.url;
    const followers = [followSse(url, 0), followPoll(url, 0, '', 1)];
    const producerPool = createPool(cluster.url, 2, createLogger('silent'));
    cleanups.push(() => producerPool.end());
    const log = new EventLog(producerPool);

    await log.emitMany(range(0, 50).map((n) => ({ topic: 'restart:a', type: 't', data: n })));
    for (const f of followers) await f.reach(50);

    await cluster.stop();
    await until(() => herald.ctx.listener.state === 'reconnecting', 10_000, 'listener to notice');
    await cluster.start();
    // Producers come back before the listener has necessarily reconnected.
    for (let i = 0; i < 5; i++) {
      for (;;) {
        try {
          await log.emitMany(range(0, 10).map((n) => ({ topic: 'restart:b', type: 't', data: n })));
          break;
        } catch {
          await pause(50);
        }
      }
    }
    await until(() => herald.ctx.listener.state === 'listening', 20_000, 'listener to reconnect');
    for (const f of followers) await f.reach(100);
    for (const f of followers) await f.stop();
    for (const f of followers) expect(f.ids).toEqual(range(1, 100));
    expect(herald.ctx.listener.reconnects).toBeGreaterThanOrEqual(1);
  });
});
