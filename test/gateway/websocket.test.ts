import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';
import { publish, startTestHerald, type TestHerald, until } from '../support/herald.ts';
import { openWs, type WsClient } from '../support/ws.ts';

let db: TestDatabase;
let herald: TestHerald;
const READ_TOKEN = 'reader-token-abcdef';

beforeAll(async () => {
  db = await createTestDatabase();
  herald = await startTestHerald(db.url, {
    checkpointIntervalMs: 100,
    privateTopicPrefixes: ['private:'],
    readTokens: [READ_TOKEN],
    wsSubscribeBurst: 5,
    wsSubscribePerS: 1,
    wsMaxPayloadBytes: 1024,
  });
});
afterAll(async () => {
  await herald.close();
  await db.drop();
});

async function emit(events: { topic: string; type?: string; data?: unknown }[]): Promise<number[]> {
  const res = await publish(herald.url, { events: events.map((e) => ({ type: 't', ...e })) });
  expect(res.status).toBe(201);
  return ((await res.json()) as { ids: number[] }).ids;
}

async function subscribed(c: WsClient, msg: Record<string, unknown>) {
  const before = c.messages.filter((m) => m.op === 'subscribed' || m.op === 'error').length;
  c.send({ op: 'subscribe', ...msg });
  await until(() => c.messages.filter((m) => m.op === 'subscribed' || m.op === 'error').length > before, 5000, 'subscribe answer');
  return c.messages.filter((m) => m.op === 'subscribed' || m.op === 'error').at(-1)!;
}

describe('GET /v1/ws', () => {
  it('subscribe acks with epoch/head/since, then streams catch-up and live events in order', async () => {
    const ids = await emit([{ topic: 'ws:a', data: 1 }, { topic: 'ws:b' }, { topic: 'ws:a', data: 2 }]);
    const c = await openWs(herald.url);
    const ack = await subscribed(c, { topics: ['ws:a'], since: ids[0]! - 1 });
    expect(ack).toEqual({ op: 'subscribed', epoch: expect.any(String), head: expect.any(Number), since: ids[0]! - 1, topics: ['ws:a'] });
    const live = await emit([{ topic: 'ws:a', data: 3 }]);
    await c.waitFor((m) => m.id === live[0]);
    const events = c.messages.filter((m) => m.op === 'event');
    expect(events.map((e) => [e.id, e.data])).toEqual([
      [ids[0], 1],
      [ids[2], 2],
      [live[0], 3],
    ]);
    expect(events[0]).toEqual({ op: 'event', id: ids[0], topic: 'ws:a', type: 't', data: 1, at: expect.any(String) });
    c.ws.close();
  });

  it('every recipient gets byte-identical event frames', async () => {
    const a = await openWs(herald.url);
    const b = await openWs(herald.url);
    await subscribed(a, { topics: ['same:*'] });
    await subscribed(b, { topics: ['same:x', 'other:y'] });
    const [id] = await emit([{ topic: 'same:x', data: { deep: [1, 'two', { three: null }] } }]);
    await a.waitFor((m) => m.id === id);
    await b.waitFor((m) => m.id === id);
    const frameA = a.raw.find((r) => r.includes(`"id":${id},`));
    const frameB = b.raw.find((r) => r.includes(`"id":${id},`));
    expect(frameA).toBeDefined();
    expect(frameA).toBe(frameB);
    a.ws.close();
    b.ws.close();
  });

  it('ping → pong; unsubscribe narrows the stream from the current position; subscribe restarts at since', async () => {
    const c = await openWs(herald.url);
    c.send({ op: 'ping' });
    await c.waitFor((m) => m.op === 'pong');
    await subscribed(c, { topics: ['u:a', 'u:b'] });
    const first = await emit([{ topic: 'u:a' }, { topic: 'u:b' }]);
    await c.waitFor((m) => m.id === first[1]);
    c.send({ op: 'unsubscribe', topics: ['u:b'] });
    await c.waitFor((m) => m.op === 'subscribed' && (m.topics as string[]).length === 1);
    const second = await emit([{ topic: 'u:b' }, { topic: 'u:a' }]);
    await c.waitFor((m) => m.id === second[1]);
    expect(c.events()).toEqual([first[0], first[1], second[1]]);
    // Restart from the beginning of this test's events: the stream replays them once.
    const ack = await subscribed(c, { topics: ['u:*'], since: first[0]! - 1 });
    expect(ack.since).toBe(first[0]! - 1);
    await until(() => c.events().length === 7, 5000, 'replay');
    expect(c.events().slice(3)).toEqual([first[0], first[1], second[0], second[1]]);
    c.ws.close();
  });

  it('an unsubscribe sent while the subscribe is still opening narrows it (it used to leave the connection with no stream and no answer)', async () => {
    const base = await emit([{ topic: 'o:a' }]);
    const c = await openWs(herald.url);
    // Same tick: the unsubscribe arrives before the subscribe's Subscription is open.
    c.send({ op: 'subscribe', topics: ['o:a', 'o:b'], since: base[0]! - 1 });
    c.send({ op: 'unsubscribe', topics: ['o:b'] });
    const ack = await c.waitFor((m) => m.op === 'subscribed' || m.op === 'error');
    expect(ack).toEqual({ op: 'subscribed', epoch: expect.any(String), head: expect.any(Number), since: base[0]! - 1, topics: ['o:a'] });
    const live = await emit([{ topic: 'o:b' }, { topic: 'o:a' }]);
    await c.waitFor((m) => m.id === live[1]);
    expect(c.events()).toEqual([base[0], live[1]]);
    expect(c.messages.filter((m) => m.op === 'subscribed')).toHaveLength(1);

    // Unsubscribing everything while opening: an empty stream, acknowledged at `since`.
    const d = await openWs(herald.url);
    d.send({ op: 'subscribe', topics: ['o:a'], since: base[0]! - 1 });
    d.send({ op: 'unsubscribe', topics: ['o:a'] });
    const empty = await d.waitFor((m) => m.op === 'subscribed' || m.op === 'error');
    expect(empty).toEqual({ op: 'subscribed', epoch: ack.epoch, head: expect.any(Number), since: base[0]! - 1, topics: [] });
    const last = await emit([{ topic: 'o:a' }]);
    // c sees it, so d (with no topics) would have by now.
    await c.waitFor((m) => m.id === last[0]);
    expect(d.events()).toEqual([]);
    c.ws.close();
    d.ws.close();
  });

  it('a filtered connection gets checkpoints past events it does not want', async () => {
    const c = await openWs(herald.url);
    await subscribed(c, { topics: ['cpw:want'] });
    const ids = await emit([{ topic: 'cpw:other' }, { topic: 'cpw:other' }]);
    const cp = await c.waitFor((m) => m.op === 'checkpoint' && (m.id as number) >= ids[1]!);
    expect(cp).toEqual({ op: 'checkpoint', id: expect.any(Number) });
    expect(c.events()).toEqual([]);
    c.ws.close();
  });

  it('private topics need a read token; patterns are narrowed to public topics; a wrong token is refused at the upgrade', async () => {
    const anon = await openWs(herald.url);
    const err = await subscribed(anon, { topics: ['private:x'] });
    expect(err).toMatchObject({ op: 'error', code: 'forbidden' });
    // A pattern is narrowed to what an anonymous reader may read, never refused.
    for (const topics of [['*'], ['priv*'], ['private:*']]) {
      const c = await openWs(herald.url);
      const { head } = (await (await fetch(`${herald.url}/v1/head`)).json()) as { head: number };
      expect(await subscribed(c, { topics, since: head })).toMatchObject({ op: 'subscribed', since: head, topics });
      const ids = await emit([{ topic: 'private:x' }, { topic: 'privy:x' }, { topic: 'private:y' }]);
      await c.waitFor((m) => m.op === 'checkpoint' && (m.id as number) >= ids[2]!);
      expect(c.events()).toEqual(topics[0] === 'private:*' ? [] : [ids[1]]);
      c.ws.close();
    }
    const ok = await subscribed(anon, { topics: ['public:x'] });
    expect(ok.op).toBe('subscribed');
    const trusted = await openWs(`${herald.url}/v1/ws?token=${READ_TOKEN}`);
    expect((await subscribed(trusted, { topics: ['private:x'] })).op).toBe('subscribed');
    const [id] = await emit([{ topic: 'private:x', data: 's' }]);
    await trusted.waitFor((m) => m.id === id);
    const viaHeader = await openWs(herald.url, { authorization: `Bearer ${READ_TOKEN}` });
    expect((await subscribed(viaHeader, { topics: ['*'] })).op).toBe('subscribed');
    await expect(openWs(`${herald.url}/v1/ws?token=wrong`)).rejects.toThrow(/401/);
    // The same rule over SSE and polling.
    expect((await fetch(`${herald.url}/v1/events?topic=private:x`)).status).toBe(403);
    expect((await fetch(`${herald.url}/v1/events?topic=private:x&token=${READ_TOKEN}`)).status).toBe(200);
    for (const c of [anon, trusted, viaHeader]) c.ws.close();
  });

  it('a plain GET on /v1/ws is 426 upgrade_required', async () => {
    const res = await fetch(`${herald.url}/v1/ws`);
    expect(res.status).toBe(426);
    expect(await res.json()).toMatchObject({ error: { code: 'upgrade_required' } });
  });
});

describe('bad input over WebSocket', () => {
  const cases: { name: string; send: unknown; code: string }[] = [
    { name: 'non-JSON', send: '{nope', code: 'bad_request' },
    { name: 'unknown op', send: { op: 'explode' }, code: 'bad_request' },
    { name: 'no op', send: { topics: ['a'] }, code: 'bad_request' },
    { name: 'a JSON array', send: [1, 2], code: 'bad_request' },
    { name: 'bad topic', send: { op: 'subscribe', topics: ['../etc'] }, code: 'bad_request' },
    { name: 'empty topics', send: { op: 'subscribe', topics: [] }, code: 'bad_request' },
    { name: 'topics not a list', send: { op: 'subscribe', topics: 'a' }, code: 'bad_request' },
    { name: 'negative since', send: { op: 'subscribe', topics: ['a'], since: -1 }, code: 'bad_request' },
    { name: 'huge since', send: { op: 'subscribe', topics: ['a'], since: 1e300 }, code: 'bad_request' },
    { name: 'non-integer since', send: { op: 'subscribe', topics: ['a'], since: 1.5 }, code: 'bad_request' },
    { name: 'text since', send: { op: 'subscribe', topics: ['a'], since: 'yesterday' }, code: 'bad_request' },
    { name: 'since beyond head', send: { op: 'subscribe', topics: ['a'], since: 1e12 }, code: 'cursor_ahead' },
    { name: 'foreign epoch', send: { op: 'subscribe', topics: ['a'], since: 0, epoch: '00000000-0000-4000-8000-000000000000' }, code: 'epoch_mismatch' },
  ];

  it.for(cases)('$name → error frame $code, connection stays open', async (tc) => {
    const c = await openWs(herald.url);
    c.send(tc.send);
    const err = await c.waitFor((m) => m.op === 'error');
    expect(err.code).toBe(tc.code);
    expect(String(err.message).length).toBeGreaterThan(5);
    c.send({ op: 'ping' });
    await c.waitFor((m) => m.op === 'pong');
    c.ws.close();
  });

  it('a binary frame is an error frame, not a crash', async () => {
    const c = await openWs(herald.url);
    c.ws.send(Buffer.from([0, 1, 2]));
    expect((await c.waitFor((m) => m.op === 'error')).code).toBe('bad_request');
    c.ws.close();
  });

  it('an oversize frame closes the connection with 1009', async () => {
    const c = await openWs(herald.url);
    c.send({ op: 'subscribe', topics: ['x'.repeat(2000)] });
    expect((await c.closed).code).toBe(1009);
  });

  it('a subscribe flood is closed with 1008 and the server keeps serving', async () => {
    const c = await openWs(herald.url);
    for (let i = 0; i < 50; i++) c.send({ op: 'subscribe', topics: ['flood:x'] });
    const closed = await c.closed;
    expect(closed.code).toBe(1008);
    expect(JSON.parse(closed.reason)).toMatchObject({ message: 'subscribe rate exceeded' });
    const other = await openWs(herald.url);
    other.send({ op: 'ping' });
    await other.waitFor((m) => m.op === 'pong');
    other.ws.close();
  });

  it('a cursor older than retention is cursor_expired with oldest', async () => {
    const ids = await emit(Array.from({ length: 6 }, () => ({ topic: 'old:x' })));
    await herald.ctx.log.prune({ maxAgeMs: 0, maxEvents: 2, batchSize: 100 });
    const c = await openWs(herald.url);
    c.send({ op: 'subscribe', topics: ['old:x'], since: 0 });
    const err = await c.waitFor((m) => m.op === 'error');
    expect(err).toMatchObject({ code: 'cursor_expired', oldest: ids.at(-1)! - 1 });
    c.ws.close();
  });
});
