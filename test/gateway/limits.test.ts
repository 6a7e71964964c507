/**
 * The limits that protect the shared path (issue 12 part 3), tried as the attacker
 * tried them, against a real Herald over real HTTP and WebSocket: the filter-entry cap on
 * every transport, caps on SSE streams and long-polls, the body and idle-socket deadlines,
 * the statement timeout on catch-up reads, their cancellation, their confinement to a pool
 * of their own with fair queueing, each address's share of read time, and the work budget
 * of one read (a filter too costly to read at once is caught up in several reads).
 *
 * Slow reads come from a test hook: the read pool's `run` is wrapped so each catch-up read
 * first runs `select pg_sleep(…)` on its read connection, as a worst-case read would.
 */
import http from 'node:http';
import net from 'node:net';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ReadOptions } from '../../src/events/catch-up-reads.ts';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';
import { publish, startTestHerald, type TestHerald, until } from '../support/herald.ts';
import { openSse } from '../support/sse.ts';
import { openWs } from '../support/ws.ts';

let db: TestDatabase;
/** Small limits and short deadlines: caps, deadlines, statement timeout. */
let tight: TestHerald;
/** Default read timeout (5 s), a read queue of 8: cancellation and confinement. */
let roomy: TestHerald;
let admin: pg.Client;
// Reads from the table (no catch-up window). No share of read time: these tests are about
// the other limits, and their abandoned 30 s reads would hold 127.0.0.1 for the rest of the
// file; the share has a Herald of its own below.
const common = { catchUpWindowBytes: 0, dbPoolMax: 4, readShareMsPerS: 0 };

beforeAll(async () => {
  db = await createTestDatabase();
  [tight, roomy] = await Promise.all([
    startTestHerald(db.url, {
      ...common,
      sseMaxStreams: 3,
      longPollMax: 2,
      bodyTimeoutMs: 500,
      idleSocketTimeoutMs: 1000,
      readTimeoutMs: 300,
      // Silent streams: only the idle-socket exemption keeps them open.
      sseHeartbeatMs: 60_000,
      checkpointIntervalMs: 60_000,
    }),
    startTestHerald(db.url, { ...common, readPoolMax: 4, readQueueMax: 8 }),
  ]);
  admin = new pg.Client({ connectionString: db.url });
  await admin.connect();
  await publish(tight.url, { events: [{ topic: 'lim:a', type: 't' }] });
});
afterAll(async () => {
  await admin?.end();
  await Promise.all([tight?.close(), roomy?.close()]);
  await db?.drop();
});

/** Makes every catch-up read of `h` sleep `seconds` in PostgreSQL first; returns the undo. */
function slowReads(h: TestHerald, seconds: number): () => void {
  const reads = h.ctx.log.reads!;
  const run = reads.run;
  reads.run = <T>(fn: (c: pg.PoolClient) => Promise<T>, opts?: ReadOptions): Promise<T> =>
    run.call(
      reads,
      async (c) => {
        await c.query(`select pg_sleep(${seconds})`);
        return fn(c);
      },
      opts,
    ) as Promise<T>;
  return () => {
    reads.run = run;
  };
}

/** The sleeping catch-up reads PostgreSQL is running now, for this database. */
async function sleepingReads(): Promise<{ pid: number; started: string }[]> {
  const { rows } = await admin.query<{ pid: number; started: string }>(
    `select pid, query_start::text as started from pg_stat_activity
     where datname = current_database() and application_name = 'herald-reads'
       and state = 'active' and query like 'select pg_sleep%'`,
  );
  return rows;
}

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** A GET over node:http (so the source address can be chosen); `abort` drops it. */
function get(url: string, localAddress?: string): { answer: Promise<Answer>; abort(): void } {
  let req!: http.ClientRequest;
  const answer = new Promise<Answer>((resolve, reject) => {
    req = http.get(url, { localAddress, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
  });
  answer.catch(() => undefined);
  return { answer, abort: () => req.destroy() };
}

const topics = (n: number) => Array.from({ length: n }, (_, i) => `lim:t${i}`);
const topicQuery = (n: number) =>
  topics(n)
    .map((t) => `topic=${t}`)
    .join('&');

describe('one cap on filter entries, on every transport', () => {
  it.for(['poll', 'long-poll', 'sse'])('%s: 1,001 topic parameters are 400 bad_request naming the limit; 100 are accepted', async (transport) => {
    const path = transport === 'sse' ? '/v1/events/stream' : '/v1/events';
    const extra = transport === 'long-poll' ? '&wait=0.1' : '';
    const res = await fetch(`${tight.url}${path}?since=0&${topicQuery(1001)}${extra}`);
    expect(res.status).toBe(400);
    const body = (await res.json()) as { error: { code: string; message: string; maxFilterEntries: number } };
    expect(body.error.code).toBe('bad_request');
    expect(body.error.maxFilterEntries).toBe(100);
    expect(body.error.message).toMatch(/at most 100 \(HERALD_MAX_FILTER_ENTRIES\)/);
    // 101 is one too many, 100 is fine.
    expect((await fetch(`${tight.url}${path}?since=0&${topicQuery(101)}${extra}`)).status).toBe(400);
    if (transport === 'sse') {
      const sse = await openSse(`${tight.url}${path}?since=0&${topicQuery(100)}`);
      expect(sse.status).toBe(200);
      sse.destroy();
    } else {
      const ok = await fetch(`${tight.url}${path}?since=0&${topicQuery(100)}${extra}`);
      expect(ok.status).toBe(200);
    }
  });

  it('websocket: a subscribe with 1,001 topics is an error frame bad_request naming the limit; 100 are accepted', async () => {
    const c = await openWs(tight.url);
    c.send({ op: 'subscribe', topics: topics(1001), since: 0 });
    const err = await c.waitFor((m) => m.op === 'error');
    expect(err).toMatchObject({ code: 'bad_request', maxFilterEntries: 100 });
    expect(err.message).toMatch(/at most 100 \(HERALD_MAX_FILTER_ENTRIES\)/);
    c.send({ op: 'subscribe', topics: topics(100), since: 'now' });
    const ok = await c.waitFor((m) => m.op === 'subscribed');
    expect(ok.topics).toHaveLength(100);
    c.ws.close();
  });
});

describe('caps on concurrent SSE streams and long-polls', () => {
  it('the 4th SSE stream over HERALD_SSE_MAX_STREAMS=3 gets 503 with Retry-After; a freed slot is taken again', async () => {
    const open = await Promise.all([1, 2, 3].map(() => openSse(`${tight.url}/v1/events/stream?since=now`)));
    expect(open.map((s) => s.status)).toEqual([200, 200, 200]);
    const refused = await fetch(`${tight.url}/v1/events/stream?since=now`);
    expect(refused.status).toBe(503);
    expect(refused.headers.get('retry-after')).toBe('1');
    const body = (await refused.json()) as { error: Record<string, unknown> };
    expect(body.error).toMatchObject({ code: 'too_many_connections', retryAfterS: 1 });
    expect(body.error.message).toMatch(/maximum of 3 SSE streams \(HERALD_SSE_MAX_STREAMS\)/);
    open[0]!.destroy();
    let again: Awaited<ReturnType<typeof openSse>> | undefined;
    await until(async () => {
      const s = await openSse(`${tight.url}/v1/events/stream?since=now`);
      if (s.status === 200) again = s;
      else s.destroy();
      return s.status === 200;
    });
    // Exactly one slot came back.
    expect((await fetch(`${tight.url}/v1/events/stream?since=now`)).status).toBe(503);
    for (const s of [...open.slice(1), again!]) s.destroy();
  });

  it('the 3rd long-poll over HERALD_LONGPOLL_MAX=2 gets 503 with Retry-After; plain polls are not counted', async () => {
    const pollSubscribers = async () => (await tight.ctx.metrics.subscribers.get()).values.find((v) => v.labels.transport === 'poll')?.value ?? 0;
    // Earlier tests' polls have ended.
    await until(async () => (await pollSubscribers()) === 0, 5000, 'no polls open');
    const waiting = [1, 2].map(() => get(`${tight.url}/v1/events?since=now&topic=lim:quiet&wait=30`));
    await until(async () => (await pollSubscribers()) === 2, 5000, 'two long-polls waiting');
    const refused = await fetch(`${tight.url}/v1/events?since=now&topic=lim:quiet&wait=30`);
    expect(refused.status).toBe(503);
    expect(refused.headers.get('retry-after')).toBe('1');
    const body = (await refused.json()) as { error: Record<string, unknown> };
    expect(body.error).toMatchObject({ code: 'too_many_connections', retryAfterS: 1 });
    expect(body.error.message).toMatch(/maximum of 2 long-polls \(HERALD_LONGPOLL_MAX\)/);
    expect((await fetch(`${tight.url}/v1/events?since=0&topic=lim:a`)).status).toBe(200);
    // A slot comes back when a long-poll ends.
    waiting[0]!.abort();
    await until(async () => (await pollSubscribers()) === 1, 5000, 'one long-poll left');
    const again = await fetch(`${tight.url}/v1/events?since=now&topic=lim:quiet&wait=0.05`);
    expect(again.status).toBe(200);
    await again.body?.cancel();
    waiting[1]!.abort();
  });
});

describe('body and idle-socket deadlines', () => {
  it('an anonymous POST trickling its body a byte every 100 ms is refused at once and its connection cut within HERALD_BODY_TIMEOUT_MS', async () => {
    const socket = net.connect(Number(new URL(tight.url).port), '127.0.0.1');
    await new Promise((r) => socket.once('connect', r));
    const started = Date.now();
    socket.write('POST /v1/events HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n');
    const trickle = setInterval(() => socket.writable && socket.write('{'), 100);
    let received = '';
    socket.on('data', (d) => (received += d.toString()));
    socket.on('error', () => undefined);
    await new Promise((r) => socket.once('close', r));
    clearInterval(trickle);
    const elapsed = Date.now() - started;
    expect(elapsed).toBeGreaterThanOrEqual(450);
    expect(elapsed).toBeLessThan(1500);
    // Refused before its body is read, but Node keeps reading the body off the kept-alive
    // socket: the deadline still cuts it (the 1,000 such POSTs stayed open 150 s).
    expect(received).toMatch(/^HTTP\/1\.1 401 /);
  });

  it('the same trickle with a publisher token is answered 408 request_timeout and cut', async () => {
    const socket = net.connect(Number(new URL(tight.url).port), '127.0.0.1');
    await new Promise((r) => socket.once('connect', r));
    const started = Date.now();
    socket.write(
      'POST /v1/events HTTP/1.1\r\nhost: x\r\nauthorization: Bearer test-publisher-token-0123456789\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n',
    );
    const trickle = setInterval(() => socket.writable && socket.write(' '), 100);
    let received = '';
    socket.on('data', (d) => (received += d.toString()));
    socket.on('error', () => undefined);
    await new Promise((r) => socket.once('close', r));
    clearInterval(trickle);
    expect(Date.now() - started).toBeLessThan(1500);
    expect(received).toMatch(/^HTTP\/1\.1 408 /);
    expect(received).toContain('"code":"request_timeout"');
  });

  it('a connection that sends nothing is closed after HERALD_IDLE_SOCKET_TIMEOUT_MS; one trickling its headers too', async () => {
    const port = Number(new URL(tight.url).port);
    const idle = net.connect(port, '127.0.0.1');
    const trickling = net.connect(port, '127.0.0.1');
    trickling.on('error', () => undefined);
    idle.on('error', () => undefined);
    await Promise.all([idle, trickling].map((s) => new Promise((r) => s.once('connect', r))));
    const started = Date.now();
    trickling.write('GET /healthz HTTP/1.1\r\n');
    const trickle = setInterval(() => trickling.writable && trickling.write('x'), 200);
    const closedAt = await Promise.all([idle, trickling].map((s) => new Promise<number>((r) => s.once('close', () => r(Date.now() - started)))));
    clearInterval(trickle);
    expect(closedAt[0]).toBeLessThan(2000);
    // headersTimeout (= the idle timeout) checked every quarter of it.
    expect(closedAt[1]).toBeLessThan(2500);
  });

  it('SSE streams and long-polls stay open past the idle-socket timeout while they stream', async () => {
    const sse = await openSse(`${tight.url}/v1/events/stream?since=now&topic=lim:quiet`);
    const started = Date.now();
    const poll = await fetch(`${tight.url}/v1/events?since=now&topic=lim:quiet&wait=1.8`);
    expect(poll.status).toBe(200);
    expect(Date.now() - started).toBeGreaterThanOrEqual(1700);
    let ended = false;
    void sse.ended.then(() => (ended = true));
    expect(ended).toBe(false);
    const [id] = ((await (await publish(tight.url, { topic: 'lim:quiet', type: 't' })).json()) as { ids: number[] }).ids;
    await sse.waitFor((m) => m.id === String(id));
    sse.destroy();
  });
});

describe('statement timeout on catch-up reads', () => {
  it('a read past HERALD_READ_TIMEOUT_MS is a retryable 503 unavailable with Retry-After on poll, an error on SSE and WebSocket, logged below error level', async () => {
    const undo = slowReads(tight, 5);
    try {
      const started = Date.now();
      const res = await fetch(`${tight.url}/v1/events?since=0&topic=lim:a`);
      expect(Date.now() - started).toBeLessThan(2000);
      expect(res.status).toBe(503);
      expect(res.headers.get('retry-after')).toBe('1');
      const body = (await res.json()) as { error: Record<string, unknown> };
      expect(body.error).toMatchObject({ code: 'unavailable', retryAfterS: 1 });
      expect(body.error.message).toMatch(/longer than 300 ms/);

      const sse = await openSse(`${tight.url}/v1/events/stream?since=0&topic=lim:a`);
      const sseErr = JSON.parse((await sse.waitFor((m) => m.event === 'error')).data) as Record<string, unknown>;
      expect(sseErr).toMatchObject({ code: 'unavailable', position: 0 });
      sse.destroy();

      const ws = await openWs(tight.url);
      ws.send({ op: 'subscribe', topics: ['lim:a'], since: 0 });
      expect(await ws.waitFor((m) => m.op === 'error')).toMatchObject({ code: 'unavailable', position: 0 });
      ws.ws.close();
    } finally {
      undo();
    }
    const lines = tight.logs.map((l) => JSON.parse(l) as { level: number; msg: string });
    expect(lines.filter((l) => l.msg.includes('statement timeout')).map((l) => l.level)).toContain(40);
    expect(lines.filter((l) => l.level >= 50)).toEqual([]);
    // The same read, without the hook, succeeds.
    expect((await fetch(`${tight.url}/v1/events?since=0&topic=lim:a`)).status).toBe(200);
  });
});

describe('cancellation and confinement of catch-up reads', () => {
  it('a poll whose client disconnects mid-read has its query cancelled in PostgreSQL', async () => {
    const undo = slowReads(roomy, 30);
    try {
      const req = get(`${roomy.url}/v1/events?since=0&topic=lim:a`);
      await until(async () => (await sleepingReads()).length === 1, 5000, 'the read to start');
      const started = Date.now();
      req.abort();
      await until(async () => (await sleepingReads()).length === 0, 5000, 'the read to be cancelled');
      // Far inside the 5 s statement timeout: cancelled, not timed out.
      expect(Date.now() - started).toBeLessThan(1500);
    } finally {
      undo();
    }
  });

  it.for(['sse', 'websocket'])('%s: a disconnect, or a WebSocket re-subscribe, cancels the read in flight', async (transport) => {
    const undo = slowReads(roomy, 30);
    try {
      if (transport === 'sse') {
        const sse = await openSse(`${roomy.url}/v1/events/stream?since=0&topic=lim:a`);
        await until(async () => (await sleepingReads()).length === 1, 5000, 'the read to start');
        sse.destroy();
      } else {
        const ws = await openWs(roomy.url);
        ws.send({ op: 'subscribe', topics: ['lim:a'], since: 0 });
        await until(async () => (await sleepingReads()).length === 1, 5000, 'the read to start');
        const [first] = await sleepingReads();
        // Replaces the stream: the first read is cancelled (the new one sleeps in turn).
        ws.send({ op: 'subscribe', topics: ['lim:b'], since: 0 });
        await until(
          async () => !(await sleepingReads()).some((r) => r.pid === first!.pid && r.started === first!.started),
          2000,
          'the first read to be cancelled',
        );
        ws.ws.terminate();
      }
      await until(async () => (await sleepingReads()).length === 0, 2000, 'every read to be cancelled');
    } finally {
      undo();
    }
  });

  it('twelve stuck worst-case reads: exact in-flight and queue bounds, fair to another client, and publishes and /readyz answer within a second', async () => {
    // The tests before cancel their reads; PostgreSQL shows a read gone before Herald has
    // freed its place, and a place still taken here would change every count below.
    const reads = roomy.ctx.log.reads!;
    await until(() => reads.inFlight === 0 && reads.waitingCount === 0, 5000, 'the reads of the tests before to end');
    const undo = slowReads(roomy, 30);
    const clients: ReturnType<typeof get>[] = [];
    try {
      // One client address: at most half the read pool (2 of 4) in flight, 8 waiting, and
      // the rest refused at once.
      for (let i = 0; i < 12; i++) clients.push(get(`${roomy.url}/v1/events?since=0&topic=lim:a`, '127.0.0.1'));
      await until(async () => (await sleepingReads()).length === 2 && roomy.ctx.log.reads!.waitingCount === 8, 5000, '2 reads running and 8 queued');
      const refused = await Promise.all(clients.map((c) => Promise.race([c.answer, new Promise<null>((r) => setTimeout(() => r(null), 300))])));
      const answered = refused.filter((a): a is Answer => a !== null);
      expect(answered).toHaveLength(2);
      for (const a of answered) {
        expect(a.status).toBe(503);
        expect(a.headers['retry-after']).toBe('1');
        expect(JSON.parse(a.body).error.code).toBe('unavailable');
      }
      // Another client address is not queued behind them.
      const other = get(`${roomy.url}/v1/events?since=0&topic=lim:a`, '127.0.0.2');
      await until(async () => (await sleepingReads()).length === 3, 2000, "the other client's read to start");

      // The shared path is untouched: a publish and /readyz, each within a second.
      let t = Date.now();
      const pub = await publish(roomy.url, { topic: 'lim:live', type: 't' });
      expect(pub.status).toBe(201);
      expect(Date.now() - t).toBeLessThan(1000);
      t = Date.now();
      const ready = await fetch(`${roomy.url}/readyz`);
      expect(ready.status).toBe(200);
      expect(Date.now() - t).toBeLessThan(1000);

      // Abandoned: every query is cancelled, the queue empties.
      for (const c of [...clients, other]) c.abort();
      await until(async () => (await sleepingReads()).length === 0 && roomy.ctx.log.reads!.waitingCount === 0, 3000, 'every read to be cancelled');
      expect(roomy.ctx.log.reads!.inFlight).toBe(0);
    } finally {
      undo();
      for (const c of clients) c.abort();
    }
  });
});

describe("each client address's share of read time", () => {
  it('an address past HERALD_READ_SHARE_MS_PER_S waits for its next read, with a connection free, while another address is served at once', async () => {
    // 500 ms a second, a bucket of 500 ms: one read of 1.5 s puts the address 1 s in debt,
    // which takes it 2 s to earn back.
    const h = await startTestHerald(db.url, { ...common, readShareMsPerS: 500 });
    try {
      const reads = h.ctx.log.reads!;
      const undo = slowReads(h, 1.5);
      try {
        expect((await get(`${h.url}/v1/events?since=0&topic=lim:a`, '127.0.0.1').answer).status).toBe(200);
      } finally {
        undo();
      }
      const held = get(`${h.url}/v1/events?since=0&topic=lim:a`, '127.0.0.1');
      await until(() => reads.waitingCount === 1, 5000, 'the next read to wait for its share');
      expect(reads.inFlight).toBe(0);
      const other = await get(`${h.url}/v1/events?since=0&topic=lim:a`, '127.0.0.2').answer;
      expect(other.status).toBe(200);
      expect(reads.waitingCount).toBe(1);
      expect((await held.answer).status).toBe(200);
      expect(reads.waitingCount).toBe(0);
    } finally {
      await h.close();
    }
  });
});

describe('a filter too costly to read at once is caught up in several bounded reads', () => {
  // 25 broad patterns `bud00:*` … `bud24:*` of 110 topics each, one event per topic, 1 in 16
  // of 44,000 events: telling them apart would take 2,525 probes, more than one read may make
  // (PATTERN_PROBES_MAX), so each read covers a stretch of ids (4,000: fewer matches than a
  // page of HERALD_REPLAY_PAGE_SIZE) and the next goes on from it.
  const PATTERNS = Array.from({ length: 25 }, (_, i) => `bud${String(i).padStart(2, '0')}:*`);
  const query = PATTERNS.map((p) => `topic=${encodeURIComponent(p)}`).join('&');
  /** Every event the filter matches, by brute force. */
  const matching = async () =>
    (await admin.query<{ id: string }>(`select id from herald.events where topic ~ '^bud[0-9]{2}:' order by id`)).rows.map((r) => Number(r.id));

  beforeAll(async () => {
    await admin.query(
      `select count(*) from herald.append((
         select jsonb_agg(jsonb_build_object(
           'topic', case when g % 16 = 0 then 'bud' || lpad(((g / 16) % 25)::text, 2, '0') || ':t' || (g / 400) % 110
                         else 'budnoise:' || g % 7 end,
           'type', 'x', 'data', '{}'::jsonb))
         from generate_series(0, 43999) g))`,
    );
    const all = await matching();
    expect(all).toHaveLength(25 * 110);
    await until(() => roomy.ctx.hub.head >= all.at(-1)!, 10_000, 'the Listener to have read them');
  });

  it('poll: following `next` returns every matching event exactly once, in order, in more reads than pages', async () => {
    const expected = await matching();
    const got: number[] = [];
    let since = 0;
    let polls = 0;
    for (;;) {
      const res = await fetch(`${roomy.url}/v1/events?since=${since}&limit=1000&${query}`);
      expect(res.status).toBe(200);
      const body = (await res.json()) as { events: { id: number }[]; next: number; head: number };
      polls++;
      got.push(...body.events.map((e) => e.id));
      if (body.events.length === 0) break;
      expect(body.next).toBeGreaterThan(since);
      since = body.next;
    }
    expect(got).toEqual(expected);
    expect(polls).toBeGreaterThan(Math.ceil(expected.length / 1000) + 1);
  });

  it.for(['sse', 'websocket'])('%s: a stream from since=0 gets every matching event exactly once, in order, then live ones', async (transport) => {
    const expected = await matching();
    const live = async () => {
      const res = await publish(roomy.url, { topic: 'bud00:live', type: 't' });
      return ((await res.json()) as { ids: number[] }).ids[0]!;
    };
    if (transport === 'sse') {
      const sse = await openSse(`${roomy.url}/v1/events/stream?since=0&${query}`);
      const events = () => sse.messages.filter((m) => m.event === 'message').map((m) => Number(m.id));
      await until(() => events().length >= expected.length, 20_000, 'the catch-up');
      const id = await live();
      await sse.waitFor((m) => m.event === 'message' && m.id === String(id));
      expect(events()).toEqual([...expected, id]);
      sse.destroy();
    } else {
      const ws = await openWs(roomy.url);
      ws.send({ op: 'subscribe', topics: PATTERNS, since: 0 });
      await until(() => ws.events().length >= expected.length, 20_000, 'the catch-up');
      const id = await live();
      await ws.waitFor((m) => m.op === 'event' && m.id === id);
      expect(ws.events()).toEqual([...expected, id]);
      ws.ws.close();
    }
  });
});
