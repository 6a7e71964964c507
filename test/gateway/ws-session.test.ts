/**
 * A client that stops reading: the server holds at most its byte budget (plus one batch)
 * for it, falls back to table reads, closes it with 4008 and its cursor when it does not
 * drain, and keeps delivering to everyone else. A client that stops for a while and then
 * reads again goes from live writes to table reads and back, without a gap or a duplicate.
 */
import type { Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';
import { startTestHerald, type TestHerald, until } from '../support/herald.ts';
import { openWs } from '../support/ws.ts';

let db: TestDatabase;
let herald: TestHerald;
const BUDGET = 64 * 1024;
const PAGE = 50;

beforeAll(async () => {
  db = await createTestDatabase();
  herald = await startTestHerald(db.url, {
    maxClientQueueBytes: BUDGET,
    maxClientQueueEvents: 1000,
    replayPageSize: PAGE,
    slowConsumerTimeoutMs: 1500,
  });
});
afterAll(async () => {
  await herald.close();
  await db.drop();
});

describe('slow consumers', () => {
  it('a stalled client costs bounded memory, is moved to table reads, then closed with 4008 and its cursor; others are not slowed', async () => {
    const slow = await openWs(herald.url);
    const fast = await openWs(herald.url);
    const slowSocket = (slow.ws as unknown as { _socket: Socket })._socket;
    slow.send({ op: 'subscribe', topics: ['flood:*'] });
    fast.send({ op: 'subscribe', topics: ['flood:*'] });
    await slow.waitFor((m) => m.op === 'subscribed');
    await fast.waitFor((m) => m.op === 'subscribed');
    slowSocket.pause();

    // 16 MB: well past what loopback kernel buffers absorb for a reader that stopped
    // (about 4 MB send + 128 KB receive here), so the server itself must hold the line.
    const EVENT_BYTES = 8000;
    const payload = 'z'.repeat(EVENT_BYTES);
    const EVENTS = 2000;
    let maxQueued = 0;
    const sampler = setInterval(() => (maxQueued = Math.max(maxQueued, herald.websockets.stats().maxQueuedBytes)), 5);
    let first = 0;
    for (let i = 0; i < EVENTS; i += 100) {
      const ids = await herald.ctx.log.emitMany(Array.from({ length: 100 }, (_, j) => ({ topic: 'flood:x', type: 't', data: { i: i + j, payload } })));
      first ||= ids[0]!;
    }
    await until(() => fast.events().length === EVENTS, 20_000, 'fast client to get everything');
    expect(fast.events()).toEqual(Array.from({ length: EVENTS }, (_, i) => first + i));

    // The server gives up on the stalled client; then the client wakes up, reads the backlog
    // and finds the close frame behind it.
    await until(
      async () => /herald_slow_consumer_closes_total\{transport="ws"\} 1/.test(await (await fetch(`${herald.url}/metrics`)).text()),
      10_000,
      'slow close',
    );
    clearInterval(sampler);
    slowSocket.resume();
    const closed = await slow.closed;
    expect(closed.code).toBe(4008);
    const reason = JSON.parse(closed.reason) as { position: number };
    expect(reason.position).toBeGreaterThanOrEqual(first - 1);
    expect(reason.position).toBeLessThan(first + EVENTS - 1);
    // Budget, plus at most one batch written before the check (a replay page or a full buffer).
    expect(maxQueued).toBeGreaterThan(0);
    expect(maxQueued).toBeLessThanOrEqual(2 * BUDGET + PAGE * EVENT_BYTES * 1.1);
    const metrics = await (await fetch(`${herald.url}/metrics`)).text();
    expect(metrics).toMatch(/herald_slow_consumer_fallbacks_total [1-9]/);
    expect(metrics).toMatch(/herald_slow_consumer_closes_total\{transport="ws"\} 1/);

    // Resuming from the close reason's cursor gives exactly the rest.
    const again = await openWs(herald.url);
    again.send({ op: 'subscribe', topics: ['flood:*'], since: reason.position });
    const last = first + EVENTS - 1;
    await again.waitFor((m) => m.id === last, 20_000);
    expect(again.events()).toEqual(Array.from({ length: last - reason.position }, (_, i) => reason.position + 1 + i));
    fast.ws.close();
    again.ws.close();
  });
});

describe('a client that falls behind and catches up', () => {
  let patient: TestHerald;
  beforeAll(async () => {
    patient = await startTestHerald(db.url, {
      maxClientQueueBytes: BUDGET,
      maxClientQueueEvents: 1000,
      replayPageSize: PAGE,
      // Long enough that the paused client is never closed in this test.
      slowConsumerTimeoutMs: 60_000,
      workers: 0,
    });
  });
  afterAll(async () => {
    await patient.close();
  });

  it('live writes → socket full → table reads → live writes again: every id once, in order, and no close', async () => {
    const metric = async (re: RegExp) => Number(re.exec(await (await fetch(`${patient.url}/metrics`)).text())?.[1] ?? 0);
    const client = await openWs(patient.url);
    const socket = (client.ws as unknown as { _socket: Socket })._socket;
    client.send({ op: 'subscribe', topics: ['lag:*'] });
    await client.waitFor((m) => m.op === 'subscribed');
    const emit = (n: number, payload = '') =>
      patient.ctx.log.emitMany(Array.from({ length: n }, (_, i) => ({ topic: 'lag:x', type: 't', data: { i, payload } })));

    // Live first: written as they come.
    const before = await emit(5);
    await client.waitFor((m) => m.id === before[4]);

    // Stop reading; commit far more than the kernel buffers and the budget hold, so the
    // session stops writing and its Subscription overflows back to table reads.
    socket.pause();
    const payload = 'y'.repeat(8000);
    const flood: number[] = [];
    for (let i = 0; i < 2000; i += 100) flood.push(...(await emit(100, payload)));
    await until(async () => (await metric(/^herald_slow_consumer_fallbacks_total (\d+)$/m)) >= 1, 10_000, 'fallback to table reads');

    // Read again: the backlog, then the table pages, then live writes.
    socket.resume();
    await client.waitFor((m) => m.id === flood.at(-1), 30_000);
    const after = await emit(5);
    await client.waitFor((m) => m.id === after[4], 10_000);
    expect(client.events()).toEqual([...before, ...flood, ...after]);
    expect(await metric(/^herald_slow_consumer_closes_total\{transport="ws"\} (\d+)$/m)).toBe(0);
    client.ws.close();
  });
});
