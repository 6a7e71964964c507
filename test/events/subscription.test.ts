/** Invariants S1–S6 of docs/spec/subscription.md, against a real Listener and Postgres. */
import type pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createPool } from '../../src/db/pool.ts';
import { Hub } from '../../src/events/hub.ts';
import { Listener } from '../../src/events/listener.ts';
import { EventLog } from '../../src/events/log.ts';
import { Subscription, type SubscriptionLimits, type SubscriptionState } from '../../src/events/subscription.ts';
import { TopicFilter } from '../../src/events/topic.ts';
import { createLogger } from '../../src/logger.ts';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';
import { until } from '../support/herald.ts';

let db: TestDatabase;
let pool: pg.Pool;
let log: EventLog;
let hub: Hub;
let listener: Listener;
const open: Subscription[] = [];

const limits: SubscriptionLimits = { replayPageSize: 7, maxClientQueueBytes: 1 << 20, maxClientQueueEvents: 10_000 };

beforeAll(async () => {
  db = await createTestDatabase();
  const logger = createLogger('silent');
  pool = createPool(db.url, 10, logger);
  log = new EventLog(pool);
  hub = new Hub();
  listener = new Listener({ databaseUrl: db.url, log, hub, logger, safetyPollMs: 1000, batchSize: 50, reconnectMaxMs: 500 });
  await listener.start();
  await until(() => listener.state === 'listening');
});
afterEach(() => {
  for (const s of open.splice(0)) s.close();
  expect(hub.size).toBe(0);
});
afterAll(async () => {
  await listener.close();
  await pool.end();
  await db.drop();
});

async function openSub(filter: string[], since: number | 'now', lim = limits, hooks = {}): Promise<Subscription> {
  const s = await Subscription.open({ log, hub, limits: lim }, { filter: TopicFilter.parse(filter), since, hooks });
  open.push(s);
  return s;
}

async function collect(sub: Subscription, count: number, timeoutMs = 15_000): Promise<number[]> {
  const ids: number[] = [];
  const deadline = Date.now() + timeoutMs;
  while (ids.length < count) {
    if (Date.now() > deadline) throw new Error(`got ${ids.length} of ${count} events`);
    const signal = AbortSignal.timeout(Math.max(1, deadline - Date.now()));
    for (const e of await sub.next({ signal })) ids.push(e.id);
  }
  return ids;
}

const range = (from: number, n: number) => Array.from({ length: n }, (_, i) => from + i);

describe('Subscription', () => {
  it('S1/S2/S3: catch-up hands over to live with no gap and no duplicate while producers keep committing', async () => {
    const base = (await log.readHead()).head;
    await log.emitMany(range(0, 60).map((i) => ({ topic: 'h:a', type: 't', data: i })));
    const states: SubscriptionState[] = [];
    const sub = await openSub([], base, limits, { onStateChange: (_: SubscriptionState, to: SubscriptionState) => states.push(to) });
    let producing = true;
    let produced = 60;
    const producer = (async () => {
      while (producing) {
        await log.emitMany([
          { topic: 'h:b', type: 't' },
          { topic: 'h:c', type: 't' },
        ]);
        produced += 2;
      }
    })();
    const firstIds = await collect(sub, 100);
    producing = false;
    await producer;
    const rest = await collect(sub, produced - firstIds.length);
    expect([...firstIds, ...rest]).toEqual(range(base + 1, produced));
    // If the last page read was full, the short read that proves the catch-up complete has
    // not happened yet (the producer may have kept every page full): one more read, with
    // nothing new, makes it and hands over to live.
    expect(await sub.next({ signal: AbortSignal.abort() })).toEqual([]);
    expect(sub.state).toBe('live');
    expect(states).toContain('live');
  });

  it('S3: a subscriber with both `job:1` and `job:*` gets each event once', async () => {
    const sub = await openSub(['dup:1', 'dup:*'], 'now');
    const base = sub.since;
    await log.emitMany([
      { topic: 'dup:1', type: 't' },
      { topic: 'dup:2', type: 't' },
    ]);
    expect(await collect(sub, 2)).toEqual([base + 1, base + 2]);
  });

  it('S4: a subscriber that stops reading drops its buffer, reads from the table, and still gets everything once', async () => {
    let fallbacks = 0;
    const small = { replayPageSize: 25, maxClientQueueBytes: 64 * 1024, maxClientQueueEvents: 16 };
    const sub = await openSub(['slow:*'], 'now', small, { onFallback: () => fallbacks++ });
    const fast = await openSub(['slow:*'], 'now');
    const base = sub.since;
    // Go live first.
    expect(await sub.next({ signal: AbortSignal.abort() })).toEqual([]);
    expect(sub.state).toBe('live');
    for (let i = 0; i < 10; i++) await log.emitMany(range(0, 20).map((j) => ({ topic: 'slow:x', type: 't', data: i * 20 + j })));
    // The fast subscriber is not held back by the slow one.
    expect(await collect(fast, 200)).toEqual(range(base + 1, 200));
    await until(() => hub.head >= base + 200);
    expect(fallbacks).toBeGreaterThan(0);
    expect(sub.queuedBytes).toBeLessThanOrEqual(small.maxClientQueueBytes);
    expect(sub.state).toBe('replaying');
    expect(await collect(sub, 200)).toEqual(range(base + 1, 200));
  });

  it("S5: a filtered subscriber's position moves past events it did not want, never past one it did", async () => {
    const sub = await openSub(['pos:want'], 'now');
    const base = sub.since;
    // While replaying the position only moves with reads; once live it follows the Hub.
    expect(await sub.next({ signal: AbortSignal.abort() })).toEqual([]);
    expect(sub.state).toBe('live');
    await log.emitMany([
      { topic: 'pos:other', type: 't' },
      { topic: 'pos:other', type: 't' },
    ]);
    await until(() => sub.position === base + 2, 5000, 'position to pass unwanted events');
    await log.emitMany([
      { topic: 'pos:want', type: 't' },
      { topic: 'pos:other', type: 't' },
    ]);
    await until(() => hub.head === base + 4);
    // base+3 is buffered but not handed over: the position must not pass it.
    expect(sub.position).toBeLessThan(base + 3);
    expect(await collect(sub, 1)).toEqual([base + 3]);
    expect(sub.position).toBe(base + 4);
  });

  it('S6: a cursor beyond the head is cursor_ahead; a foreign epoch is epoch_mismatch', async () => {
    const { head, epoch } = await log.readHead();
    await expect(openSub([], head + 1000)).rejects.toMatchObject({ code: 'HERALD_ERR_POSITION_AHEAD', details: { head } });
    const foreign = '00000000-0000-4000-8000-000000000000';
    await expect(Subscription.open({ log, hub, limits }, { filter: TopicFilter.ALL, since: 0, epoch: foreign })).rejects.toMatchObject({
      code: 'HERALD_ERR_EPOCH_MISMATCH',
      details: { epoch },
    });
  });

  it('close() releases a waiting next() with [] and detaches from the Hub', async () => {
    const sub = await openSub(['close:*'], 'now');
    expect(await sub.next({ signal: AbortSignal.abort() })).toEqual([]);
    const pending = sub.next();
    sub.close();
    expect(await pending).toEqual([]);
    expect(sub.state).toBe('closed');
  });

  it('next({limit}) hands over at most limit events and keeps the rest in order', async () => {
    const sub = await openSub(['lim:*'], 'now');
    const base = sub.since;
    await sub.next({ signal: AbortSignal.abort() });
    await log.emitMany(range(0, 5).map(() => ({ topic: 'lim:x', type: 't' })));
    await until(() => hub.head >= base + 5);
    expect((await sub.next({ limit: 2 })).map((e) => e.id)).toEqual([base + 1, base + 2]);
    expect(sub.position).toBe(base + 2);
    expect((await sub.next({ limit: 10 })).map((e) => e.id)).toEqual([base + 3, base + 4, base + 5]);
  });
});
