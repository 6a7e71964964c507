/**
 * The Subscription's push side (takeReady, onReady) and its chunked buffer: live batches are
 * kept as the Hub's own arrays and handed over without copying, and every invariant of
 * docs/spec/subscription.md still holds. The Hub here is fed by hand from the real log
 * (read after the head, publish), so each step happens exactly when the test says.
 */
import type pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createPool } from '../../src/db/pool.ts';
import type { Event } from '../../src/events/event.ts';
import { Hub } from '../../src/events/hub.ts';
import { EventLog } from '../../src/events/log.ts';
import { Subscription, type SubscriptionHooks, type SubscriptionLimits } from '../../src/events/subscription.ts';
import { TopicFilter } from '../../src/events/topic.ts';
import { createLogger } from '../../src/logger.ts';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';

let db: TestDatabase;
let pool: pg.Pool;
let log: EventLog;
let hub: Hub;
const open: Subscription[] = [];
const limits: SubscriptionLimits = { replayPageSize: 4, maxClientQueueBytes: 1 << 20, maxClientQueueEvents: 10 };

beforeAll(async () => {
  db = await createTestDatabase();
  pool = createPool(db.url, 4, createLogger('silent'));
  log = new EventLog(pool);
});
afterEach(() => {
  for (const s of open.splice(0)) s.close();
  expect(hub.size).toBe(0);
});
afterAll(async () => {
  await pool.end();
  await db.drop();
});

/** A fresh Hub at the log's head, as the Listener starts. */
async function freshHub(): Promise<Hub> {
  hub = new Hub();
  hub.head = (await log.readHead()).head;
  return hub;
}

/** What the Listener does on a ring: read after the head and publish, as one batch. */
async function ring(): Promise<readonly Event[]> {
  const batch = await log.readAfter(hub.head, 1000);
  hub.fanOut(batch);
  return batch;
}

async function emit(topic: string, n: number): Promise<number[]> {
  return log.emitMany(Array.from({ length: n }, (_, i) => ({ topic, type: 't', data: i })));
}

async function openLive(filter: string[], hooks: SubscriptionHooks = {}): Promise<Subscription> {
  const sub = await Subscription.open({ log, hub, limits }, { filter: TopicFilter.parse(filter), since: 'now', hooks });
  open.push(sub);
  // The first (empty) table read makes it live.
  expect(await sub.next({ signal: AbortSignal.abort() })).toEqual([]);
  expect(sub.state).toBe('live');
  return sub;
}

const ids = (events: readonly Event[] | null) => events?.map((e) => e.id) ?? null;

describe('Subscription push side', () => {
  it("a live batch reaches every subscriber as the Hub's own array, handed over without a copy", async () => {
    await freshHub();
    const a = await openLive(['p:a']);
    const b = await openLive(['p:a']);
    const all = await openLive([]);
    const written = await emit('p:a', 3);
    const batch = await ring();
    const fromA = a.takeReady();
    const fromB = b.takeReady();
    expect(ids(fromA)).toEqual(written);
    // One array for both single-topic subscribers; the all-topics one gets the batch itself.
    expect(fromB).toBe(fromA);
    expect(all.takeReady()).toBe(batch);
    expect(a.queuedBytes).toBe(0);
    expect(a.position).toBe(written[2]);
    // Nothing twice.
    expect(a.takeReady()).toEqual([]);
  });

  it('onReady runs inside publish, so a push consumer writes in the same tick; events leave in order, once', async () => {
    await freshHub();
    const got: number[] = [];
    let sub: Subscription | undefined;
    let calls = 0;
    sub = await openLive(['p:b'], {
      onReady: () => {
        calls++;
        for (let e = sub!.takeReady(); e && e.length > 0; e = sub!.takeReady()) got.push(...ids(e)!);
      },
    });
    const expected: number[] = [];
    for (let round = 0; round < 4; round++) {
      expected.push(...(await emit('p:b', round + 1)));
      await emit('p:other', 1);
      await ring();
      // Synchronous: already taken when publish returned.
      expect(got).toEqual(expected);
    }
    expect(calls).toBe(4);
  });

  it('takeReady splits across buffered batches at the limit and keeps order; null while replaying, [] once closed', async () => {
    await freshHub();
    const sub = await openLive(['p:c']);
    const first = await emit('p:c', 3);
    await ring();
    const second = await emit('p:c', 4);
    await ring();
    expect(ids(sub.takeReady(2))).toEqual(first.slice(0, 2));
    expect(sub.position).toBe(first[1]);
    // The rest of the first batch and the start of the second, in one hand-over.
    expect(ids(sub.takeReady(3))).toEqual([first[2], second[0], second[1]]);
    expect(ids(sub.takeReady())).toEqual(second.slice(2));
    expect(sub.takeReady()).toEqual([]);

    // Past maxClientQueueEvents (10) the buffer is dropped and the stream goes back to the table.
    let fallbacks = 0;
    const replaying = await openLive(['p:c'], { onFallback: () => fallbacks++ });
    const flood = await emit('p:c', 11);
    await ring();
    expect(fallbacks).toBe(1);
    expect(replaying.state).toBe('replaying');
    expect(replaying.queuedBytes).toBe(0);
    expect(replaying.takeReady()).toBeNull();
    // next() reads the table from the position, in pages of 4, then it is live again.
    const back: number[] = [];
    while (back.length < flood.length) back.push(...ids(await replaying.next())!);
    expect(back).toEqual(flood);
    expect(await replaying.next({ signal: AbortSignal.abort() })).toEqual([]);
    expect(replaying.state).toBe('live');
    expect(replaying.takeReady()).toEqual([]);

    replaying.close();
    expect(replaying.takeReady()).toEqual([]);
  });

  it('S3 with chunks: events a table read already handed over are dropped from the buffered batches', async () => {
    await freshHub();
    const from = hub.head;
    const written = await emit('p:d', 6);
    // Opened before the ring: the Hub's batch is buffered while the table read also sees it.
    const sub = await Subscription.open({ log, hub, limits }, { filter: TopicFilter.parse(['p:d']), since: from });
    open.push(sub);
    await ring();
    expect(sub.takeReady()).toBeNull();
    const seen: number[] = [];
    while (sub.state === 'replaying') seen.push(...ids(await sub.next())!);
    // Pages of 4 and a short page: then live, with the buffered copies of those ids dropped.
    expect(seen).toEqual(written);
    expect(sub.takeReady()).toEqual([]);
    expect(sub.queuedBytes).toBe(0);
    const later = await emit('p:d', 2);
    await ring();
    expect(ids(sub.takeReady())).toEqual(later);
  });
});
