import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';
import { publish, startTestHerald, type TestHerald, until } from '../support/herald.ts';
import { eventIds, openSse } from '../support/sse.ts';

let db: TestDatabase;
let herald: TestHerald;

beforeAll(async () => {
  db = await createTestDatabase();
  herald = await startTestHerald(db.url, { checkpointIntervalMs: 100, sseHeartbeatMs: 100 });
});
afterAll(async () => {
  await herald.close();
  await db.drop();
});

async function emit(topic: string, n: number): Promise<number[]> {
  const res = await publish(herald.url, { events: Array.from({ length: n }, (_, i) => ({ topic, type: 't', data: i })) });
  expect(res.status).toBe(201);
  return ((await res.json()) as { ids: number[] }).ids;
}

describe('GET /v1/events/stream (SSE)', () => {
  it('starts with `subscribed`, then catch-up, then live events, each with its id', async () => {
    const before = await emit('sse:a', 3);
    const c = await openSse(`${herald.url}/v1/events/stream?since=${before[0]! - 1}&topic=sse:a`);
    expect(c.status).toBe(200);
    const after = await emit('sse:a', 2);
    await c.waitFor((m) => m.id === String(after[1]));
    expect(JSON.parse(c.messages[0]!.data)).toMatchObject({ since: before[0]! - 1, head: expect.any(Number), epoch: expect.any(String) });
    expect(c.messages[0]!.event).toBe('subscribed');
    expect(eventIds(c)).toEqual([...before, ...after]);
    expect(c.messages.filter((m) => m.event === 'message').map((m) => m.id)).toEqual([...before, ...after].map(String));
    c.destroy();
  });

  it('resumes with Last-Event-ID after a dropped connection: exactly the missed events, and it wins over since', async () => {
    const first = await emit('resume:x', 4);
    const c1 = await openSse(`${herald.url}/v1/events/stream?since=${first[0]! - 1}&topic=resume:x`);
    await c1.waitFor((m) => m.id === String(first[3]));
    c1.destroy();
    const missed = await emit('resume:x', 5);
    // since=0 would replay everything; Last-Event-ID must win.
    const c2 = await openSse(`${herald.url}/v1/events/stream?since=0&topic=resume:x`, { 'last-event-id': String(first[3]) });
    await c2.waitFor((m) => m.id === String(missed[4]));
    const live = await emit('resume:x', 1);
    await c2.waitFor((m) => m.id === String(live[0]));
    expect(eventIds(c2)).toEqual([...missed, ...live]);
    c2.destroy();
  });

  it('filtered streams get checkpoints (with ids) past unwanted events, and heartbeats while idle', async () => {
    const c = await openSse(`${herald.url}/v1/events/stream?topic=cp:want`);
    await c.waitFor((m) => m.event === 'subscribed');
    const other = await emit('cp:other', 3);
    const cp = await c.waitFor((m) => m.event === 'checkpoint' && Number(m.id) >= other[2]!);
    expect(JSON.parse(cp.data)).toEqual({ id: Number(cp.id) });
    expect(eventIds(c)).toEqual([]);
    await until(() => c.comments() >= 2, 5000, 'heartbeats');
    // Resuming from the checkpoint skips nothing wanted and replays nothing unwanted.
    const wanted = await emit('cp:want', 1);
    const c2 = await openSse(`${herald.url}/v1/events/stream?topic=cp:want`, { 'last-event-id': cp.id! });
    await c2.waitFor((m) => m.id === String(wanted[0]));
    expect(eventIds(c2)).toEqual(wanted);
    c.destroy();
    c2.destroy();
  });

  it('bad Last-Event-ID is 400 bad_request', async () => {
    const res = await fetch(`${herald.url}/v1/events/stream`, { headers: { 'last-event-id': 'abc' } });
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ error: { code: 'bad_request', message: expect.stringContaining('Last-Event-ID') } });
  });

  it('on shutdown a stream ends with an `error` message carrying shutting_down and its resume position', async () => {
    const db2 = await createTestDatabase();
    const h2 = await startTestHerald(db2.url);
    try {
      const ids = (await (
        await publish(h2.url, {
          events: [
            { topic: 'bye:x', type: 't' },
            { topic: 'bye:y', type: 't' },
          ],
        })
      ).json()) as { ids: number[] };
      const c = await openSse(`${h2.url}/v1/events/stream?since=0&topic=bye:x`);
      await c.waitFor((m) => m.id === String(ids.ids[0]));
      await h2.close();
      await c.ended;
      const last = c.messages.at(-1)!;
      expect(last.event).toBe('error');
      expect(JSON.parse(last.data)).toMatchObject({ code: 'shutting_down', position: ids.ids[1] });
    } finally {
      await h2.close();
      await db2.drop();
    }
  });
});

describe('SSE push mode and backpressure', () => {
  const BUDGET = 64 * 1024;

  /** An SSE stream read by hand, so the test can stop reading it: event ids and the error event. */
  function rawStream(url: string): Promise<{ res: http.IncomingMessage; ids: number[]; errors: string[]; destroy(): void }> {
    return new Promise((resolve, reject) => {
      const req = http.get(url, { headers: { accept: 'text/event-stream' } }, (res) => {
        const ids: number[] = [];
        const errors: string[] = [];
        let buf = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          buf += chunk;
          let at: number;
          while ((at = buf.indexOf('\n\n')) >= 0) {
            const block = buf.slice(0, at);
            buf = buf.slice(at + 2);
            if (block.startsWith('id: ')) ids.push(Number(block.slice(4, block.indexOf('\n'))));
            else if (block.startsWith('event: error')) errors.push(block);
          }
        });
        resolve({ res, ids, errors, destroy: () => req.destroy() });
      });
      req.on('error', reject);
    });
  }

  it('live → socket full → catch-up reads → live again: every id once, in order, and the stream beside it is not held back', async () => {
    const db2 = await createTestDatabase();
    const h2 = await startTestHerald(db2.url, {
      maxClientQueueBytes: BUDGET,
      maxClientQueueEvents: 1000,
      replayPageSize: 50,
      slowConsumerTimeoutMs: 60_000,
      workers: 0,
    });
    try {
      const metric = async (re: RegExp) => Number(re.exec(await (await fetch(`${h2.url}/metrics`)).text())?.[1] ?? 0);
      const emit = (n: number, payload = '') => h2.ctx.log.emitMany(Array.from({ length: n }, (_, i) => ({ topic: 'lag:x', type: 't', data: { i, payload } })));
      const slow = await rawStream(`${h2.url}/v1/events/stream?topic=lag:*`);
      const fast = await rawStream(`${h2.url}/v1/events/stream?topic=lag:*`);
      const before = await emit(5);
      await until(() => slow.ids.length === 5 && fast.ids.length === 5, 10_000, 'live events');

      // Stop reading; commit far more than the kernel buffers and the budget hold.
      slow.res.pause();
      const payload = 'y'.repeat(8000);
      const flood: number[] = [];
      for (let i = 0; i < 2000; i += 100) flood.push(...(await emit(100, payload)));
      await until(() => fast.ids.length === 5 + flood.length, 20_000, 'the fast stream to get everything');
      await until(async () => (await metric(/^herald_slow_consumer_fallbacks_total (\d+)$/m)) >= 1, 10_000, 'fallback to catch-up reads');

      slow.res.resume();
      await until(() => slow.ids.at(-1) === flood.at(-1), 30_000, 'the slow stream to catch up');
      const after = await emit(5);
      await until(() => slow.ids.at(-1) === after[4] && fast.ids.at(-1) === after[4], 10_000, 'live again');
      expect(slow.ids).toEqual([...before, ...flood, ...after]);
      expect(fast.ids).toEqual([...before, ...flood, ...after]);
      expect(slow.errors).toEqual([]);
      expect(await metric(/^herald_slow_consumer_closes_total\{transport="sse"\} (\d+)$/m)).toBe(0);
      expect(await metric(/^herald_deliveries_total\{transport="sse"\} (\d+)$/m)).toBe(2 * (before.length + flood.length + after.length));
      slow.destroy();
      fast.destroy();
    } finally {
      await h2.close();
      await db2.drop();
    }
  });

  it('a stream that does not drain is ended with slow_consumer and its position, and resuming from it gives exactly the rest', async () => {
    const db2 = await createTestDatabase();
    const h2 = await startTestHerald(db2.url, {
      maxClientQueueBytes: BUDGET,
      maxClientQueueEvents: 1000,
      replayPageSize: 50,
      slowConsumerTimeoutMs: 1000,
      workers: 0,
    });
    try {
      const slow = await rawStream(`${h2.url}/v1/events/stream?topic=stall:*`);
      await until(async () => /herald_subscribers\{transport="sse"\} 1/.test(await (await fetch(`${h2.url}/metrics`)).text()), 5000, 'subscribed');
      slow.res.pause();
      const payload = 'z'.repeat(8000);
      const all: number[] = [];
      for (let i = 0; i < 2000; i += 100)
        all.push(...(await h2.ctx.log.emitMany(Array.from({ length: 100 }, (_, j) => ({ topic: 'stall:x', type: 't', data: { i: i + j, payload } })))));
      await until(
        async () => /herald_slow_consumer_closes_total\{transport="sse"\} 1/.test(await (await fetch(`${h2.url}/metrics`)).text()),
        10_000,
        'slow close',
      );
      slow.res.resume();
      await until(() => slow.errors.length === 1, 10_000, 'the error event behind the backlog');
      const error = JSON.parse(slow.errors[0]!.split('data: ')[1]!) as { code: string; position: number };
      expect(error.code).toBe('slow_consumer');
      // Everything up to the reported position was sent, nothing after it.
      expect(slow.ids).toEqual(all.filter((id) => id <= error.position));
      const again = await rawStream(`${h2.url}/v1/events/stream?topic=stall:*&since=${error.position}`);
      await until(() => again.ids.at(-1) === all.at(-1), 20_000, 'the rest');
      expect(again.ids).toEqual(all.filter((id) => id > error.position));
      slow.destroy();
      again.destroy();
    } finally {
      await h2.close();
      await db2.drop();
    }
  });
});
