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
      const ids = (await (await publish(h2.url, { events: [{ topic: 'bye:x', type: 't' }, { topic: 'bye:y', type: 't' }] })).json()) as { ids: number[] };
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
