/**
 * S7 of docs/spec/subscription.md: catch-up from the Hub's window, and every hand-over between
 * memory, table and live. The Hub is fed by hand from the real log (read after the head,
 * publish), as in subscription-push.test.ts, so each step happens exactly when the test
 * says; the EventLog is wrapped to count its reads, and the pool to count every query.
 */
import type pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createPool } from '../../src/db/pool.ts';
import { type CatchUpWindowOptions, EVENT_OVERHEAD_BYTES } from '../../src/events/catch-up-window.ts';
import type { Event } from '../../src/events/event.ts';
import { Hub } from '../../src/events/hub.ts';
import { EventLog } from '../../src/events/log.ts';
import { Subscription, type SubscriptionHooks, type SubscriptionLimits, type SubscriptionState } from '../../src/events/subscription.ts';
import { TopicFilter } from '../../src/events/topic.ts';
import { createLogger } from '../../src/logger.ts';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';

let db: TestDatabase;
let pool: pg.Pool;
let log: EventLog;
let hub: Hub;
/** Queries sent on the pool (each takes a client). */
let queries = 0;
const open: Subscription[] = [];
const limits: SubscriptionLimits = { replayPageSize: 4, maxClientQueueBytes: 1 << 20, maxClientQueueEvents: 10 };

beforeAll(async () => {
  db = await createTestDatabase();
  pool = createPool(db.url, 4, createLogger('silent'));
  pool.on('acquire', () => queries++);
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

/** The EventLog with its reads counted; a fresh one per test (head reads are shared per log). */
function countedLog() {
  const calls = { read: 0, readHead: 0 };
  const counted = Object.create(log) as EventLog;
  counted.read = (...args) => {
    calls.read++;
    return log.read(...args);
  };
  counted.readHead = () => {
    calls.readHead++;
    return log.readHead();
  };
  return { counted, calls };
}

/** A fresh Hub with a window, started at the log's head, as the Listener starts. */
async function freshHub(window: Partial<CatchUpWindowOptions> = {}): Promise<Hub> {
  hub = new Hub({ maxBytes: 1 << 20, ...window });
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

/** Commits `n` events on `topic` and publishes them as one batch. */
async function emitAndRing(topic: string, n: number): Promise<number[]> {
  const ids = await emit(topic, n);
  await ring();
  return ids;
}

async function openSub(eventLog: EventLog, filter: string[], since: number | 'now', hooks: SubscriptionHooks = {}, lim = limits): Promise<Subscription> {
  const sub = await Subscription.open({ log: eventLog, hub, limits: lim }, { filter: TopicFilter.parse(filter), since, hooks });
  open.push(sub);
  return sub;
}

/** Reads with next() until `count` events (never waiting for live ones it does not need). */
async function drain(sub: Subscription, count: number): Promise<number[]> {
  const got: number[] = [];
  while (got.length < count) {
    const events = await sub.next({ signal: AbortSignal.timeout(5000) });
    if (events.length === 0) throw new Error(`got ${got.length} of ${count}`);
    got.push(...events.map((e) => e.id));
  }
  return got;
}

function recordStates(): { states: SubscriptionState[]; hooks: SubscriptionHooks } {
  const states: SubscriptionState[] = [];
  return { states, hooks: { onStateChange: (_from, to) => states.push(to) } };
}

describe('S7: catch-up from the window', () => {
  it('a since inside the window: no table read, one head read for every open that arrives together, then live exactly once', async () => {
    await freshHub();
    const before = await emitAndRing('m:a', 3);
    const missed = [...(await emitAndRing('m:a', 2)), ...(await emitAndRing('m:a', 3))];
    await emitAndRing('m:other', 2);
    const { counted, calls } = countedLog();
    const q0 = queries;
    const runs = Array.from({ length: 50 }, () => recordStates());
    const subs = await Promise.all(runs.map((r) => openSub(counted, ['m:a'], before[2]!, r.hooks, { ...limits, replayPageSize: 500 })));
    for (const [i, sub] of subs.entries()) {
      // One page from memory: everything after `since`, and the switch to live in the same read.
      expect((await sub.next()).map((e) => e.id)).toEqual(missed);
      expect(sub.state).toBe('live');
      expect(runs[i]!.states).toEqual(['live']);
      expect(sub.position).toBe(hub.head);
    }
    expect(calls).toEqual({ read: 0, readHead: 1 });
    expect(queries - q0).toBe(1);
    // Live from here, through the buffer, exactly once.
    const live = await emitAndRing('m:a', 2);
    for (const sub of subs) expect((await sub.next()).map((e) => e.id)).toEqual(live);
    for (const r of runs) expect(r.states).toEqual(['live']);
  });

  it('memory → live across pages while batches keep coming: every id once, in order, no table read', async () => {
    await freshHub();
    const start = hub.head;
    const first = [...(await emitAndRing('p:a', 3)), ...(await emitAndRing('p:a', 3))];
    const { counted, calls } = countedLog();
    const { states, hooks } = recordStates();
    const sub = await openSub(counted, ['p:*'], start, hooks);
    // Pages of 4 from memory; a new batch arrives between pages and is read from memory too.
    expect((await sub.next()).map((e) => e.id)).toEqual(first.slice(0, 4));
    expect(sub.state).toBe('replaying');
    const more = await emitAndRing('p:b', 3);
    const rest = await drain(sub, 5);
    expect(rest).toEqual([...first.slice(4), ...more]);
    expect(await sub.next({ signal: AbortSignal.abort() })).toEqual([]);
    expect(sub.state).toBe('live');
    expect(states).toEqual(['live']);
    const live = await emitAndRing('p:c', 1);
    expect(sub.takeReady()!.map((e) => e.id)).toEqual(live);
    expect(calls.read).toBe(0);
  });

  it('a since before the window: table pages until the read reaches the window, then memory, then live', async () => {
    await freshHub();
    const since = hub.head;
    // Committed and published before this Hub started: only the table has them.
    const old = await emit('t:a', 6);
    hub.head = old[5]!;
    const held = [...(await emitAndRing('t:a', 3)), ...(await emitAndRing('t:a', 2))];
    const { counted, calls } = countedLog();
    const { states, hooks } = recordStates();
    const sub = await openSub(counted, ['t:a'], since, hooks);
    // Pages of 4: two full table pages (the second ends inside the window), then memory.
    expect((await sub.next()).map((e) => e.id)).toEqual(old.slice(0, 4));
    expect(calls.read).toBe(1);
    expect((await sub.next()).map((e) => e.id)).toEqual([old[4], old[5], held[0], held[1]]);
    expect(calls.read).toBe(2);
    const q0 = queries;
    expect((await sub.next()).map((e) => e.id)).toEqual(held.slice(2));
    expect(sub.state).toBe('live');
    expect(states).toEqual(['live']);
    expect([calls.read, queries - q0]).toEqual([2, 0]);
  });

  it('a slow consumer falls back while live and catches up from memory, not the table, then goes live again', async () => {
    await freshHub();
    const { counted, calls } = countedLog();
    let fallbacks = 0;
    const { states, hooks } = recordStates();
    const sub = await openSub(counted, ['s:*'], 'now', { ...hooks, onFallback: () => fallbacks++ });
    expect(await sub.next({ signal: AbortSignal.abort() })).toEqual([]);
    expect(sub.state).toBe('live');
    // Past maxClientQueueEvents (10): the buffer is dropped.
    const flood = [...(await emitAndRing('s:x', 6)), ...(await emitAndRing('s:x', 6))];
    expect(fallbacks).toBe(1);
    expect(sub.state).toBe('replaying');
    const q0 = queries;
    expect(await drain(sub, flood.length)).toEqual(flood);
    expect(sub.state).toBe('live');
    expect(states).toEqual(['live', 'replaying', 'live']);
    expect([calls.read, queries - q0]).toEqual([0, 0]);
  });

  it('the window lets go of batches ahead of a reader: it continues from the table, skipping nothing, and back to memory', async () => {
    // Room for about 8 events of this shape.
    const [probe] = await emit('e:a', 1);
    const probeBytes = (await log.read(probe! - 1, TopicFilter.ALL, 1)).events[0]!.bytes;
    await freshHub({ maxBytes: (probeBytes + EVENT_OVERHEAD_BYTES) * 8 + 4 });
    const since = hub.head;
    const a = await emitAndRing('e:a', 4);
    const { counted, calls } = countedLog();
    const sub = await openSub(counted, ['e:a'], since, {}, { ...limits, replayPageSize: 2 });
    expect((await sub.next()).map((e) => e.id)).toEqual(a.slice(0, 2));
    expect(calls.read).toBe(0);
    // Two more batches of 4: the first batch (the reader's next events) is let go.
    const b = await emitAndRing('e:a', 4);
    const c = await emitAndRing('e:a', 4);
    expect(hub.window.floor).toBeGreaterThan(a[1]!);
    const got = await drain(sub, 10);
    expect(got).toEqual([...a.slice(2), ...b, ...c]);
    expect(calls.read).toBeGreaterThan(0);
    expect(await sub.next({ signal: AbortSignal.abort() })).toEqual([]);
    expect(sub.state).toBe('live');
    // Whatever it read from the table, the last pages came from memory once it reached the window.
    const readsAtEnd = calls.read;
    const d = await emitAndRing('e:a', 2);
    expect(sub.takeReady()!.map((e) => e.id)).toEqual(d);
    expect(calls.read).toBe(readsAtEnd);
  });

  it('S6 holds from memory: cursor_ahead, epoch_mismatch, and cursor_expired after a prune, exactly as the table answers', async () => {
    await freshHub();
    const since = hub.head;
    const held = await emitAndRing('x:a', 10);
    const { head, epoch } = await log.readHead();
    const { counted, calls } = countedLog();
    const deps = { log: counted, hub, limits };
    await expect(Subscription.open(deps, { filter: TopicFilter.ALL, since: head + 1 })).rejects.toMatchObject({ code: 'HERALD_ERR_POSITION_AHEAD' });
    await expect(Subscription.open(deps, { filter: TopicFilter.ALL, since, epoch: '00000000-0000-4000-8000-000000000000' })).rejects.toMatchObject({
      code: 'HERALD_ERR_EPOCH_MISMATCH',
      details: { epoch },
    });
    // Another process (or an operator) prunes into the window: the next open sees it.
    await log.prune({ maxAgeMs: 0, maxEvents: 4, batchSize: 1000 });
    await expect(Subscription.open(deps, { filter: TopicFilter.ALL, since: held[2]! })).rejects.toMatchObject({
      code: 'HERALD_ERR_POSITION_EXPIRED',
      details: { oldest: head - 3 },
    });
    // At the horizon it still reads, from memory.
    const sub = await openSub(counted, [], head - 4, {}, { ...limits, replayPageSize: 500 });
    expect((await sub.next()).map((e) => e.id)).toEqual(held.slice(6));
    expect(calls.read).toBe(0);
    // A position past the Listener's head but within the database's: the table answers it.
    const unpublished = await emit('x:a', 2);
    const ahead = await openSub(counted, [], unpublished[0]!, {}, { ...limits, replayPageSize: 500 });
    expect((await ahead.next()).map((e) => e.id)).toEqual([unpublished[1]]);
    expect(calls.read).toBe(1);
    await ring();
  });

  it('a filtered read from memory returns exactly the matching events and moves the position past the rest (S5)', async () => {
    await freshHub();
    const since = hub.head;
    const want: number[] = [];
    for (let i = 0; i < 5; i++) {
      const [x] = await emit('f:want', 1);
      await emit('f:other', 3);
      const [y] = await emit('g:1', 1);
      want.push(x!, y!);
      await ring();
    }
    await emitAndRing('f:other', 4);
    const { counted, calls } = countedLog();
    const sub = await openSub(counted, ['f:want', 'g:*'], since, {}, { ...limits, replayPageSize: 500 });
    expect((await sub.next()).map((e) => e.id)).toEqual(want);
    expect(sub.state).toBe('live');
    expect(sub.position).toBe(hub.head);
    expect(calls.read).toBe(0);
  });

  it("a whole published batch read from memory is the Hub's own array, shared by every reader", async () => {
    await freshHub();
    const since = hub.head;
    await emit('w:a', 3);
    const batch = await ring();
    const { counted } = countedLog();
    const a = await openSub(counted, [], since, {}, { ...limits, replayPageSize: 500 });
    const b = await openSub(counted, [], since, {}, { ...limits, replayPageSize: 500 });
    expect(await a.next()).toBe(batch);
    expect(await b.next()).toBe(batch);
  });
});
