import { createPool } from '../../src/db/pool.ts';
import { createLogger } from '../../src/logger.ts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';
import { publish, startTestHerald, type TestHerald, until } from '../support/herald.ts';

let db: TestDatabase;
let herald: TestHerald;

beforeAll(async () => {
  db = await createTestDatabase();
  // A minute-long safety poll: long-polls must be woken by the NOTIFY doorbell itself.
  herald = await startTestHerald(db.url, { safetyPollMs: 60_000 });
});
afterAll(async () => {
  await herald.close();
  await db.drop();
});

interface PollBody {
  epoch: string;
  events: { id: number; topic: string; type: string; data: unknown; at: string }[];
  next: number;
  head: number;
}

async function poll(query: string): Promise<PollBody> {
  const res = await fetch(`${herald.url}/v1/events?${query}`);
  expect(res.status).toBe(200);
  return (await res.json()) as PollBody;
}

/**
 * Publishes, and (unless `read` is false) returns once this process's Listener has read the
 * events: a poll without `wait` answers what the process has read (docs/protocol.md), so a
 * poll sent the instant the publish is acknowledged could otherwise see them only next time.
 */
async function emit(events: { topic: string; type: string; data?: unknown }[], { read = true } = {}): Promise<number[]> {
  const res = await publish(herald.url, { events });
  expect(res.status).toBe(201);
  const { ids } = (await res.json()) as { ids: number[] };
  if (read) await until(() => herald.ctx.hub.head >= ids.at(-1)!, 5000, 'the Listener to read the events');
  return ids;
}

describe('GET /v1/head and GET /v1/events', () => {
  it('head reports epoch, head and oldest', async () => {
    const [id] = await emit([{ topic: 'head:x', type: 't' }]);
    const res = await fetch(`${herald.url}/v1/head`);
    const body = await res.json();
    expect(body).toEqual({ epoch: expect.stringMatching(/^[0-9a-f-]{36}$/), head: id, oldest: 1 });
  });

  it('pages through events with limit and next, in order, each once', async () => {
    const ids = await emit(Array.from({ length: 25 }, (_, i) => ({ topic: 'page:x', type: 't', data: { i } })));
    const seen: number[] = [];
    let next = ids[0]! - 1;
    for (;;) {
      const body = await poll(`since=${next}&topic=page:x&limit=10`);
      if (body.events.length === 0) break;
      seen.push(...body.events.map((e) => e.id));
      expect(body.next).toBe(body.events.at(-1)!.id);
      next = body.next;
    }
    expect(seen).toEqual(ids);
    const first = await poll(`since=${ids[0]! - 1}&topic=page:x&limit=1`);
    expect(first.events).toEqual([{ id: ids[0], topic: 'page:x', type: 't', data: { i: 0 }, at: expect.any(String) }]);
  });

  it('a filtered poll that matches nothing returns next = head, so the poller advances', async () => {
    const [id] = await emit([{ topic: 'other:x', type: 't' }]);
    const body = await poll(`since=${id! - 1}&topic=nomatch:*`);
    expect(body.events).toEqual([]);
    expect(body.next).toBe(id);
    expect(body.head).toBe(id);
  });

  it('since omitted or `now` returns nothing and next = head', async () => {
    const [id] = await emit([{ topic: 'now:x', type: 't' }]);
    expect(await poll('')).toMatchObject({ events: [], next: id, head: id });
    expect(await poll('since=now&topic=now:x')).toMatchObject({ events: [], next: id });
  });

  it('a long-poll is answered within milliseconds of a matching commit, not by an unrelated one', async () => {
    const start = (await poll('')).next;
    let answeredAt = 0;
    const pending = fetch(`${herald.url}/v1/events?since=${start}&topic=lp:want&wait=20`).then(async (r) => {
      answeredAt = performance.now();
      return (await r.json()) as PollBody;
    });
    // Waiting: its Subscription is attached to the Hub once the poll gauge counts it.
    await until(async () => /^herald_subscribers\{transport="poll"\} 1$/m.test(await (await fetch(`${herald.url}/metrics`)).text()), 5000, 'the long-poll');
    // Read and fanned out once emit() returns: the Hub moves its head and hands the batch to
    // every matching subscriber in one synchronous call. Had it woken the long-poll, that
    // answer would be the empty one `pending` resolves to.
    await emit([{ topic: 'lp:unrelated', type: 't' }]);
    expect(answeredAt).toBe(0);
    const [id] = await emit([{ topic: 'lp:want', type: 't', data: 'go' }], { read: false });
    const committedAt = performance.now();
    const body = await pending;
    expect(body.events.map((e) => [e.id, e.data])).toEqual([[id, 'go']]);
    expect(body.next).toBe(id);
    // Delivered by the doorbell, not the (one-minute) safety poll.
    expect(answeredAt - committedAt).toBeLessThan(250);
  });

  it('a long-poll with nothing matching times out empty after `wait`, with next = head', async () => {
    const head = (await poll('')).next;
    const t0 = performance.now();
    const body = await poll(`since=${head}&topic=never:x&wait=0.4`);
    const elapsed = performance.now() - t0;
    expect(body).toMatchObject({ events: [], next: head });
    expect(elapsed).toBeGreaterThanOrEqual(390);
    expect(elapsed).toBeLessThan(3000);
  });

  it('a follower polling since=next in a tight loop sees every committed event once, in order, despite late commits and rollbacks', async () => {
    const start = (await poll('')).next;
    const producer = createPool(db.url, 10, createLogger('silent'));
    const committed: string[] = [];
    const seen: { id: number; topic: string }[] = [];
    let done = false;
    let finalHead = Number.POSITIVE_INFINITY;
    const follower = (async () => {
      let next = start;
      let idle = 0;
      // After the producers finish, one more empty round proves nothing is left.
      while (!done || idle < 2) {
        const body = await poll(`since=${next}&topic=race:*&limit=17`);
        for (const e of body.events) seen.push({ id: e.id, topic: e.topic });
        next = body.next;
        // An empty answer proves nothing is left only once it is past the database's final
        // head: a poll answers what this process has read (docs/protocol.md), and under load
        // the Listener may still be reading the last commits.
        idle = done && body.events.length === 0 && next >= finalHead ? idle + 1 : 0;
      }
    })();
    await Promise.all(
      Array.from({ length: 8 }, async (_, p) => {
        const c = await producer.connect();
        for (let round = 0; round < 20; round++) {
          await c.query('begin');
          await c.query(`select herald.emit($1, 'x')`, [`race:${p}:${round}`]);
          if (round % 3 === 0) await c.query(`select herald.emit($1, 'x')`, [`race:${p}:${round}:b`]);
          await new Promise((r) => setTimeout(r, Math.random() * 10));
          if ((p * 7 + round) % 6 === 0) await c.query('rollback');
          else {
            await c.query('commit');
            committed.push(`race:${p}:${round}`);
            if (round % 3 === 0) committed.push(`race:${p}:${round}:b`);
          }
        }
        c.release();
      }),
    );
    finalHead = (await herald.ctx.log.readHead()).head;
    done = true;
    await follower;
    await producer.end();
    const ids = seen.map((s) => s.id);
    expect(ids).toEqual([...ids].sort((a, b) => a - b));
    expect(new Set(ids).size).toBe(ids.length);
    expect(seen.map((s) => s.topic).sort()).toEqual(committed.sort());
  });

  it('epoch: the right one is accepted, another is 409 epoch_mismatch', async () => {
    const { epoch, head } = (await (await fetch(`${herald.url}/v1/head`)).json()) as { epoch: string; head: number };
    expect((await poll(`since=${head}&epoch=${epoch}`)).epoch).toBe(epoch);
    const res = await fetch(`${herald.url}/v1/events?since=0&epoch=00000000-0000-4000-8000-000000000000`);
    expect(res.status).toBe(409);
    expect(await res.json()).toEqual({
      error: { code: 'epoch_mismatch', message: expect.stringContaining('epoch'), retryable: false, epoch, head, oldest: 1 },
    });
  });
});

describe('retention', () => {
  it('a since before the retention horizon is 410 cursor_expired with oldest; at the horizon it reads', async () => {
    const ids = await emit(Array.from({ length: 20 }, () => ({ topic: 'ret:x', type: 't' })));
    const head = ids.at(-1)!;
    const removed = await herald.ctx.log.prune({ maxAgeMs: 0, maxEvents: 5, batchSize: 1000 });
    expect(removed).toBe(head - 5);
    for (const path of [`/v1/events?since=0`, `/v1/events/stream?since=3`]) {
      const res = await fetch(`${herald.url}${path}`);
      expect(res.status).toBe(410);
      expect(await res.json()).toEqual({ error: { code: 'cursor_expired', message: expect.any(String), retryable: false, oldest: head - 4, head } });
    }
    const body = await poll(`since=${head - 5}`);
    expect(body.events.map((e) => e.id)).toEqual([head - 4, head - 3, head - 2, head - 1, head]);
    expect((await (await fetch(`${herald.url}/v1/head`)).json()) as object).toMatchObject({ head, oldest: head - 4 });
  });
});
