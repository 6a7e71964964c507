/**
 * The client library against real servers, under the faults the issue lists: random
 * disconnects with concurrent out-of-order commits, the LISTEN backend killed and Postgres
 * restarted, two Herald instances on one database. (Herald killed with SIGTERM and started
 * again is in test/cli.test.ts, where Herald runs as a real child process.)
 */
import { once } from 'node:events';
import WebSocket from 'ws';
import { createPool } from '../../src/db/pool.ts';
import { afterAll, describe, expect, it } from 'vitest';
import { connect, type HeraldClientError, type HeraldConnection, type HeraldEvent, type WebSocketConstructor } from 'herald-client';
import type { Listener } from '../../src/events/listener.ts';
import { TopicFilter } from '../../src/events/topic.ts';
import { createLogger } from '../../src/logger.ts';
import { createTestDatabase } from '../support/db.ts';
import { startPrivateCluster } from '../support/cluster.ts';
import { startTestHerald, until } from '../support/herald.ts';
import { committedIds, produce } from '../support/producers.ts';

const cleanups: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
});
const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Resolves once `holds()` is true of the Listener, re-checked at each of its state changes. */
async function listenerReaches(listener: Listener, holds: () => boolean): Promise<void> {
  while (!holds()) await once(listener, 'listener:state');
}

/** A `ws` subclass that records its instances, so a test can cut them like a network would. */
function trackingWebSocket(): { Ctor: WebSocketConstructor; sockets: Set<WebSocket> } {
  const sockets = new Set<WebSocket>();
  class Tracked extends WebSocket {
    constructor(url: string) {
      super(url);
      sockets.add(this);
      this.on('close', () => sockets.delete(this));
    }
  }
  return { Ctor: Tracked as unknown as WebSocketConstructor, sockets };
}

interface Follower {
  filter: TopicFilter;
  start: number;
  events: HeraldEvent[];
  conn: HeraldConnection;
}

function follow(url: string, topics: string[], start: number, Ctor: WebSocketConstructor): Follower {
  const f: Follower = { filter: TopicFilter.parse(topics), start, events: [], conn: undefined as unknown as HeraldConnection };
  f.conn = connect({ url, topics, since: start, WebSocket: Ctor, backoff: { initialMs: 20, maxMs: 300 }, onEvent: (e) => f.events.push(e) });
  return f;
}

/** What a follower must end with: every committed matching event after its start, in order. */
const expected = (url: string, f: Pick<Follower, 'filter' | 'start'>) => committedIds(url, f.filter, f.start);

async function settle(url: string, followers: Follower[]): Promise<void> {
  for (const f of followers) {
    const want = await expected(url, f);
    await until(() => f.events.length >= want.length, 30_000, `follower ${f.filter.entries()} to reach ${want.length} events (has ${f.events.length})`);
    expect(f.events.map((e) => e.id)).toEqual(want);
  }
}

const FILTERS = [['t:0'], ['t:1', 't:2'], ['t:*'], ['*'], ['t:3', 'u:*'], ['u:1'], ['t:4', 't:0']];
const TOPICS = ['t:0', 't:1', 't:2', 't:3', 't:4', 'u:1', 'u:2'];

describe('client library', () => {
  it('200 clients with different filters and random disconnects, against out-of-order producers: each gets exactly its committed events, once, in order', async () => {
    const db = await createTestDatabase();
    cleanups.push(db.drop);
    const herald = await startTestHerald(db.url);
    cleanups.push(herald.close);
    const { Ctor, sockets } = trackingWebSocket();
    const followers = Array.from({ length: 200 }, (_, i) => follow(herald.url, FILTERS[i % FILTERS.length]!, 0, Ctor));
    cleanups.push(async () => {
      for (const f of followers) f.conn.close();
    });
    await Promise.all(followers.map((f) => f.conn.ready));

    let chaos = true;
    let cuts = 0;
    let rounds = 0;
    const chaosMonkey = (async () => {
      // At least six rounds (60 cuts), however fast the producers finish.
      for (; chaos || rounds < 6; rounds++) {
        const list = [...sockets];
        for (let k = 0; k < 10 && list.length; k++) {
          list.splice(Math.floor(Math.random() * list.length), 1)[0]!.terminate();
          cuts++;
        }
        await pause(40);
      }
    })();
    await produce(db.url, 8, 40, TOPICS);
    chaos = false;
    await chaosMonkey;
    expect(cuts).toBeGreaterThan(50);
    await settle(db.url, followers);
    const total = (await herald.ctx.log.readHead()).head;
    expect(total).toBeGreaterThan(200);
  });

  it('the LISTEN backend killed and Postgres restarted mid-stream: clients end with exactly the right events', async () => {
    const cluster = await startPrivateCluster(cleanups);
    const herald = await startTestHerald(cluster.url, { listenerReconnectMaxMs: 300 });
    cleanups.push(herald.close);
    const { Ctor } = trackingWebSocket();
    const followers = Array.from({ length: 20 }, (_, i) => follow(herald.url, FILTERS[i % FILTERS.length]!, 0, Ctor));
    cleanups.push(async () => {
      for (const f of followers) f.conn.close();
    });
    await Promise.all(followers.map((f) => f.conn.ready));

    const killer = createPool(cluster.url, 2, createLogger('silent'));
    let killing = true;
    const kills = (async () => {
      while (killing) {
        await killer.query(`select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'herald-listener'`).catch(() => undefined);
        await pause(80);
      }
    })();
    const producing = produce(cluster.url, 4, 30, TOPICS);
    // Kill it until the Listener has come back twice, then take Postgres itself away until
    // the Listener notices.
    await listenerReaches(herald.ctx.listener, () => herald.ctx.listener.reconnects >= 2);
    killing = false;
    await kills;
    await killer.end();
    await cluster.stop();
    await listenerReaches(herald.ctx.listener, () => herald.ctx.listener.state !== 'listening');
    await cluster.start();
    await producing;
    await produce(cluster.url, 2, 10, TOPICS);
    await settle(cluster.url, followers);
    expect(herald.ctx.listener.reconnects).toBeGreaterThan(1);
  });

  it('scale-out: clients hopping between two Herald instances on one database with since end with exactly the right events', async () => {
    const db = await createTestDatabase();
    cleanups.push(db.drop);
    const a = await startTestHerald(db.url);
    const b = await startTestHerald(db.url);
    cleanups.push(a.close, b.close);
    const results = Array.from({ length: 12 }, (_, i) => ({ topics: FILTERS[i % FILTERS.length]!, ids: [] as number[], position: 0, hops: 0 }));
    let running = true;
    const producing = produce(db.url, 6, 30, TOPICS).then(() => {
      running = false;
    });
    const hoppers = results.map(async (r, i) => {
      while (running || r.hops < 2) {
        const server = (r.hops + i) % 2 === 0 ? a : b;
        let arrived!: () => void;
        const anEvent = new Promise<void>((resolve) => (arrived = resolve));
        const conn = connect({
          url: server.url,
          topics: r.topics,
          since: r.position,
          backoff: { initialMs: 10, maxMs: 50 },
          onEvent: (e) => {
            r.ids.push(e.id);
            arrived();
          },
        });
        // Hop once subscribed here and an event has come through (or the producers are done).
        await conn.ready;
        await Promise.race([anEvent, producing]);
        r.position = conn.position ?? r.position;
        conn.close();
        r.hops++;
      }
    });
    await producing;
    await Promise.all(hoppers);
    // A final pass from each position on the other instance picks up anything left.
    for (const [i, r] of results.entries()) {
      const server = i % 2 === 0 ? b : a;
      const f = follow(server.url, r.topics, r.position, WebSocket as unknown as WebSocketConstructor);
      const want = await expected(db.url, f);
      await until(() => f.events.length >= want.length, 20_000, 'final pass');
      r.ids.push(...f.events.map((e) => e.id));
      f.conn.close();
      const all = await expected(db.url, { ...f, start: 0 });
      expect(r.ids).toEqual(all);
      expect(r.hops).toBeGreaterThanOrEqual(2);
    }
  });

  it('surfaces cursor_expired and epoch_mismatch to the caller and stops reconnecting', async () => {
    const db = await createTestDatabase();
    cleanups.push(db.drop);
    const herald = await startTestHerald(db.url);
    cleanups.push(herald.close);
    await herald.ctx.log.emitMany(Array.from({ length: 10 }, () => ({ topic: 'exp:x', type: 't' })));
    await herald.ctx.log.prune({ maxAgeMs: 0, maxEvents: 3, batchSize: 100 });
    const errors: HeraldClientError[] = [];
    const expired = connect({ url: herald.url, topics: ['exp:x'], since: 1, onEvent: () => undefined, onError: (e) => errors.push(e) });
    await expect(expired.ready).rejects.toMatchObject({ code: 'cursor_expired', details: { oldest: 8 } });
    const foreign = connect({
      url: herald.url,
      topics: ['exp:x'],
      since: 9,
      epoch: '00000000-0000-4000-8000-000000000000',
      onEvent: () => undefined,
      onError: (e) => errors.push(e),
    });
    await expect(foreign.ready).rejects.toMatchObject({ code: 'epoch_mismatch' });
    expect(errors.map((e) => e.code)).toEqual(['cursor_expired', 'epoch_mismatch']);
    expect(expired.state).toBe('closed');
    expect(foreign.state).toBe('closed');
  });
});
