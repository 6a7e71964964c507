/**
 * The guarantees every transport gives, each written once and run over every way a client
 * reads a stream: a raw WebSocket, SSE, polls, long-polls, and the client library (a
 * WebSocket client that reconnects by itself). The adapters are in test/support/transports.ts;
 * the guarantees in docs/protocol.md "Guarantees on every transport".
 *
 * - A position the log cannot serve ends the stream with a code that says so and is not
 *   retryable: cursor_expired, epoch_mismatch, cursor_ahead; so does a private filter
 *   without a read token (forbidden). Over HTTP the status is the code's.
 * - Shutdown ends a stream with the position it reached (past events it did not want), and
 *   resuming from it elsewhere gives exactly the rest.
 * - A client that stops reading costs bounded memory. Streams (WebSocket, SSE) are ended with
 *   slow_consumer and their position once they do not drain; polls have no slow consumer:
 *   nothing is held between requests, and an answer is bounded by `limit`.
 * - Across reconnects while producers commit out of order: every committed matching event
 *   once, in id order.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { TopicFilter } from '../../src/events/topic.ts';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';
import { startTestHerald, type TestHerald, until } from '../support/herald.ts';
import { committedIds, produce } from '../support/producers.ts';
import { follow, openStream, SERVER_TRANSPORT, type StreamEnd, TRANSPORTS, type TestStream, type TransportKind } from '../support/transports.ts';

let db: TestDatabase;
let herald: TestHerald;
const READ_TOKEN = 'transports-read-token-0123';
const FOREIGN_EPOCH = '00000000-0000-4000-8000-000000000000';

beforeAll(async () => {
  db = await createTestDatabase();
  herald = await startTestHerald(db.url, { checkpointIntervalMs: 100, privateTopicPrefixes: ['private:'], readTokens: [READ_TOKEN], workers: 0 });
});
afterAll(async () => {
  await herald.close();
  await db.drop();
});

const open: TestStream[] = [];
/** Closes every stream the test opened (before the test stops a server under them, or after it). */
function closeStreams(): void {
  for (const s of open.splice(0)) s.close();
}
afterEach(closeStreams);
/** Closed after the test, whatever happens. */
function track(s: TestStream): TestStream {
  open.push(s);
  return s;
}

async function emit(h: TestHerald, topics: string[]): Promise<number[]> {
  return h.ctx.log.emitMany(topics.map((topic) => ({ topic, type: 't' })));
}

/** The transports that answer a refused stream over HTTP, with the code's status. */
const OVER_HTTP: ReadonlySet<TransportKind> = new Set(['sse', 'poll', 'long-poll']);

/** A refused stream: the code, not retryable, its details, its HTTP status where there is one, and no event. */
function expectRefused(kind: TransportKind, s: TestStream, end: StreamEnd, code: string, status: number, details: Record<string, unknown>): void {
  expect(end).toMatchObject({ code, retryable: false, received: 0 });
  expect(end.details).toEqual(details);
  expect(end.status).toBe(OVER_HTTP.has(kind) ? status : undefined);
  expect(s.ids).toEqual([]);
}

async function metric(h: TestHerald, re: RegExp): Promise<number> {
  return Number(re.exec(await (await fetch(`${h.url}/metrics`)).text())?.[1] ?? 0);
}

describe('a position the log cannot serve, on every transport', () => {
  it.for(TRANSPORTS)('%s: older than retention is cursor_expired, with oldest and head', async (kind) => {
    const topic = `exp:${kind}`;
    const ids = await emit(
      herald,
      Array.from({ length: 6 }, () => topic),
    );
    await herald.ctx.log.prune({ maxAgeMs: 0, maxEvents: 2, batchSize: 100 });
    const s = track(openStream(kind, herald.url, { topics: [topic], since: ids[0]! - 1 }));
    expectRefused(kind, s, await s.ended, 'cursor_expired', 410, { oldest: ids[4], head: ids[5] });
  });

  it.for(TRANSPORTS)('%s: another log (a foreign epoch) is epoch_mismatch, with this epoch, head and oldest', async (kind) => {
    const { epoch, head, oldest } = await herald.ctx.log.readHead();
    const s = track(openStream(kind, herald.url, { topics: ['epoch:x'], since: head, epoch: FOREIGN_EPOCH }));
    expectRefused(kind, s, await s.ended, 'epoch_mismatch', 409, { epoch, head, oldest });
  });

  it.for(TRANSPORTS)('%s: beyond the head is cursor_ahead, with this epoch and head', async (kind) => {
    const { epoch, head } = await herald.ctx.log.readHead();
    const s = track(openStream(kind, herald.url, { topics: ['ahead:x'], since: head + 1000 }));
    expectRefused(kind, s, await s.ended, 'cursor_ahead', 409, { epoch, head });
  });
});

describe('private topics, on every transport', () => {
  it.for(TRANSPORTS)('%s: without a read token the filter is forbidden; with one it streams', async (kind) => {
    const topic = `private:${kind}`;
    const { head } = await herald.ctx.log.readHead();
    const anonymous = track(openStream(kind, herald.url, { topics: [topic], since: head }));
    expectRefused(kind, anonymous, await anonymous.ended, 'forbidden', 403, {});
    const reader = track(openStream(kind, herald.url, { topics: [topic], since: head, token: READ_TOKEN }));
    await reader.opened;
    const [id] = await emit(herald, [topic, 'public:x']);
    await reader.until(() => reader.ids.length > 0, 'the private event');
    expect(reader.ids).toEqual([id]);
  });
});

describe('shutdown, on every transport', () => {
  it.for(TRANSPORTS)('%s: ends the stream with the position it reached; resuming from it on another instance gives exactly the rest', async (kind) => {
    const h2 = await startTestHerald(db.url, { workers: 0 });
    try {
      const topic = `bye:${kind}`;
      const s = track(openStream(kind, h2.url, { topics: [topic], since: (await h2.ctx.log.readHead()).head }));
      await s.opened;
      // One transaction: by the time `wanted` arrives the stream is past `unwanted` too.
      const [wanted, unwanted] = await emit(h2, [topic, 'bye:other']);
      await s.until(() => s.ids.length > 0, 'the event before shutdown');
      await h2.close();
      const end = await s.ended;
      if (OVER_HTTP.has(kind) && kind !== 'sse') {
        // A poll holds nothing to end: the one in flight is answered at once with its `next`,
        // and the next one is refused (503 shutting_down, or no connection at all).
        expect(['shutting_down', 'dropped']).toContain(end.code);
        expect(end.retryable).not.toBe(false);
      } else expect(end).toMatchObject({ code: 'shutting_down', retryable: true });
      expect(s.ids).toEqual([wanted]);
      expect(end.position).toBe(unwanted);

      const [rest] = await emit(herald, [topic]);
      const again = track(openStream(kind, herald.url, { topics: [topic], since: end.position }));
      await again.until(() => again.ids.length > 0, 'the rest');
      expect(again.ids).toEqual([rest]);
    } finally {
      closeStreams();
      await h2.close();
    }
  });
});

/** What a transport does about a client that stops reading. */
const SLOW_CONSUMER: Record<TransportKind, 'ended' | 'bounded'> = { ws: 'ended', sse: 'ended', client: 'ended', poll: 'bounded', 'long-poll': 'bounded' };

describe('slow consumers, on every transport', () => {
  const BUDGET = 64 * 1024;
  const LIMIT = 100;

  it.for(TRANSPORTS)('%s: a client that stops reading costs bounded memory and, reading again, gets every event once', async (kind) => {
    const h = await startTestHerald(db.url, {
      maxClientQueueBytes: BUDGET,
      maxClientQueueEvents: 1000,
      replayPageSize: 50,
      slowConsumerTimeoutMs: 1500,
      workers: 0,
    });
    try {
      const topic = `slow:${kind}`;
      const s = track(follow(kind, h.url, { topics: [topic], since: (await h.ctx.log.readHead()).head, limit: LIMIT }));
      await s.opened;
      s.pause();
      // 16 MB: well past what loopback kernel buffers absorb for a reader that stopped.
      const payload = 'z'.repeat(8000);
      const all: number[] = [];
      for (let i = 0; i < 2000; i += 100)
        all.push(...(await h.ctx.log.emitMany(Array.from({ length: 100 }, (_, j) => ({ topic, type: 't', data: { i: i + j, payload } })))));
      const closes = new RegExp(`^herald_slow_consumer_closes_total\\{transport="${SERVER_TRANSPORT[kind]}"\\} (\\d+)$`, 'm');
      if (SLOW_CONSUMER[kind] === 'ended') {
        // The server gives up on it, and its end waits behind the backlog.
        await until(async () => (await metric(h, closes)) === 1, 20_000, 'the slow-consumer end');
        s.resume();
        await s.until(() => s.ids.length >= all.length, 'every event, resumed after the end', 60_000);
        const [end] = s.ends;
        expect(end).toMatchObject({ code: 'slow_consumer', retryable: true });
        // Everything up to the end's position was sent before it, nothing after it.
        expect(s.ids.slice(0, end!.received)).toEqual(all.filter((id) => id <= end!.position!));
      } else {
        // Between polls the server holds nothing for this client: no Subscription, no buffer.
        await until(async () => (await metric(h, /^herald_subscribers\{transport="poll"\} (\d+)$/m)) === 0, 20_000, 'no poll held open');
        s.resume();
        await s.until(() => s.ids.length >= all.length, 'every event', 60_000);
        expect(s.ends).toEqual([]);
        expect(s.largestAnswer).toBeLessThanOrEqual(LIMIT);
        expect(await metric(h, closes)).toBe(0);
      }
      expect(s.ids).toEqual(all);
    } finally {
      closeStreams();
      await h.close();
    }
  });
});

describe('exactly once across reconnects, on every transport', () => {
  it.for(TRANSPORTS)(
    '%s: cut every few events while producers commit out of order, it ends with every committed matching event once, in order',
    async (kind) => {
      const start = (await herald.ctx.log.readHead()).head;
      const entries = [`eo:${kind}:a`, `eo:${kind}:c*`];
      const s = track(follow(kind, herald.url, { topics: entries, since: start, limit: 7 }, { dropEvery: 3 }));
      await s.opened;
      await produce(db.url, 4, 25, [`eo:${kind}:a`, `eo:${kind}:b`, `eo:${kind}:c1`, 'eo:other', `eo:${kind}:c2`]);
      const want = await committedIds(db.url, TopicFilter.parse(entries), start);
      await s.until(() => s.ids.length >= want.length, `all ${want.length} committed events`, 60_000);
      expect(s.ids).toEqual(want);
      expect(s.ends.length).toBeGreaterThan(2);
    },
  );
});
