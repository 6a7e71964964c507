/**
 * HERALD_CORS_ORIGINS over real HTTP and real WebSockets: the preflight and response headers of
 * poll, long-poll, SSE, head and publish; the Origin check of a WebSocket upgrade; and, with no
 * setting, no CORS header anywhere and any WebSocket origin (the behaviour before the setting).
 */
import type { IncomingMessage } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { loadConfig } from '../../src/config.ts';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';
import { publish, startTestHerald, TEST_PUBLISH_TOKEN, type TestHerald, until } from '../support/herald.ts';

const APP = 'https://app.example.com';
const OTHER_APP = 'http://localhost:5173';
const STRANGER = 'https://evil.example';
const CORS_HEADERS = [
  'access-control-allow-origin',
  'access-control-allow-methods',
  'access-control-allow-headers',
  'access-control-max-age',
  'access-control-expose-headers',
  'access-control-allow-credentials',
  'vary',
] as const;

let db: TestDatabase;
/** HERALD_CORS_ORIGINS=https://app.example.com, http://localhost:5173 */
let listed: TestHerald;
/** HERALD_CORS_ORIGINS=* */
let any: TestHerald;
/** No setting. */
let plain: TestHerald;

beforeAll(async () => {
  db = await createTestDatabase();
  [listed, any, plain] = await Promise.all([
    // Written as an operator would: spaces, upper case, the default port and a trailing slash.
    startTestHerald(db.url, { corsOrigins: ` ${APP.replace('app', 'APP')}:443/ , ${OTHER_APP}` }),
    startTestHerald(db.url, { corsOrigins: '*' }),
    startTestHerald(db.url),
  ]);
});
afterAll(async () => {
  await Promise.all([listed?.close(), any?.close(), plain?.close()]);
  await db.drop();
});

/** The CORS headers of `res` (and Vary), absent ones left out. */
function corsHeaders(res: Response): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of CORS_HEADERS) {
    const v = res.headers.get(name);
    if (v !== null) out[name] = v;
  }
  return out;
}

/** A browser's preflight for `method` on `path` from `origin`. */
function preflight(url: string, path: string, origin: string, method: string, headers = 'authorization, content-type') {
  return fetch(`${url}${path}`, {
    method: 'OPTIONS',
    headers: { origin, 'access-control-request-method': method, 'access-control-request-headers': headers },
  });
}

/** The exact CORS headers of an accepted preflight from `origin` on a route serving `methods`. */
const preflightAnswer = (origin: string, methods: string) => ({
  'access-control-allow-origin': origin,
  'access-control-allow-methods': methods,
  'access-control-allow-headers': 'Authorization, Content-Type, Last-Event-ID, Idempotency-Key',
  'access-control-max-age': '7200',
  vary: 'Origin',
});

/** The answer to a WebSocket upgrade: `open` (then closed again), or the refusal's status and body. */
function upgrade(url: string, headers: Record<string, string>): Promise<'open' | { status: number; contentType: string | undefined; body: unknown }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${url.replace(/^http/, 'ws')}/v1/ws`, { headers });
    ws.on('open', () => {
      ws.close();
      resolve('open');
    });
    ws.on('unexpected-response', (_req, res: IncomingMessage) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, contentType: res.headers['content-type'], body: JSON.parse(Buffer.concat(chunks).toString('utf8')) }),
      );
    });
    ws.on('error', reject);
  });
}

/** Resolves once `herald` holds `n` open subscriptions of `transport`. */
async function subscribers(herald: TestHerald, transport: string, n: number) {
  await until(
    async () => (await herald.ctx.metrics.subscribers.get()).values.some((v) => v.labels.transport === transport && v.value === n),
    10_000,
    `${n} ${transport} subscribers`,
  );
}

describe('HERALD_CORS_ORIGINS', () => {
  it('normalizes origins as browsers send them and refuses anything that is not one', () => {
    expect(loadConfig({ corsOrigins: ' https://APP.example.com:443/, http://localhost:5173,* ' }, {}).corsOrigins).toEqual([
      'https://app.example.com',
      'http://localhost:5173',
      '*',
    ]);
    expect(() => loadConfig({ corsOrigins: 'https://app.example.com/path,app.example.com' }, {})).toThrow(
      'invalid configuration: corsOrigins (HERALD_CORS_ORIGINS="https://app.example.com/path,app.example.com"): ' +
        '"https://app.example.com/path" is not an origin: write scheme://host[:port] (e.g. https://app.example.com) or *; ' +
        '"app.example.com" is not an origin: write scheme://host[:port] (e.g. https://app.example.com) or *',
    );
  });

  it('answers the preflight of publish, poll, SSE and head from a listed origin', async () => {
    const publishPre = await preflight(listed.url, '/v1/events', APP, 'POST', 'authorization, content-type, idempotency-key');
    expect(publishPre.status).toBe(204);
    expect(await publishPre.text()).toBe('');
    expect(corsHeaders(publishPre)).toEqual(preflightAnswer(APP, 'GET, POST'));
    for (const path of ['/v1/events/stream', '/v1/head']) {
      const res = await preflight(listed.url, path, OTHER_APP, 'GET', 'authorization, last-event-id');
      expect(res.status).toBe(204);
      expect(corsHeaders(res)).toEqual(preflightAnswer(OTHER_APP, 'GET'));
    }
  });

  it('refuses the preflight of an origin not listed with 403 forbidden and no CORS header', async () => {
    const res = await preflight(listed.url, '/v1/events', STRANGER, 'POST');
    expect(res.status).toBe(403);
    expect(corsHeaders(res)).toEqual({ vary: 'Origin' });
    expect(await res.json()).toEqual({
      error: { code: 'forbidden', message: `origin ${STRANGER} may not call /v1/events: add it to HERALD_CORS_ORIGINS`, retryable: false },
    });
  });

  it('echoes a listed origin on publish, poll, long-poll, SSE and head, errors included', async () => {
    const published = await fetch(`${listed.url}/v1/events`, {
      method: 'POST',
      headers: { origin: APP, 'content-type': 'application/json', authorization: `Bearer ${TEST_PUBLISH_TOKEN}` },
      body: JSON.stringify({ events: [{ topic: 'cors:a', type: 't', data: { n: 1 } }] }),
    });
    expect(published.status).toBe(201);
    const expected = { 'access-control-allow-origin': APP, 'access-control-expose-headers': 'retry-after', vary: 'Origin' };
    expect(corsHeaders(published)).toEqual(expected);
    const [id] = ((await published.json()) as { ids: number[] }).ids;

    const head = await fetch(`${listed.url}/v1/head`, { headers: { origin: APP } });
    expect(head.status).toBe(200);
    expect(corsHeaders(head)).toEqual(expected);
    expect(((await head.json()) as { head: number }).head).toBeGreaterThanOrEqual(id!);

    const poll = await fetch(`${listed.url}/v1/events?topic=cors:a&since=${id! - 1}`, { headers: { origin: APP } });
    expect(poll.status).toBe(200);
    expect(corsHeaders(poll)).toEqual(expected);
    expect(((await poll.json()) as { events: { id: number }[] }).events.map((e) => e.id)).toEqual([id]);

    // A long-poll waiting for the next event: its answer carries the headers too.
    const waiting = fetch(`${listed.url}/v1/events?topic=cors:b&since=${id}&wait=30`, { headers: { origin: OTHER_APP } });
    await subscribers(listed, 'poll', 1);
    const next = await publish(listed.url, { events: [{ topic: 'cors:b', type: 't' }] });
    const [nextId] = ((await next.json()) as { ids: number[] }).ids;
    const longPoll = await waiting;
    expect(longPoll.status).toBe(200);
    expect(corsHeaders(longPoll)).toEqual({ ...expected, 'access-control-allow-origin': OTHER_APP });
    expect(((await longPoll.json()) as { events: { id: number }[] }).events.map((e) => e.id)).toEqual([nextId]);

    const sse = await fetch(`${listed.url}/v1/events/stream?topic=cors:a&since=${id! - 1}`, { headers: { origin: APP } });
    expect(sse.status).toBe(200);
    expect(sse.headers.get('content-type')).toBe('text/event-stream; charset=utf-8');
    expect(corsHeaders(sse)).toEqual(expected);
    await sse.body?.cancel();

    // The page must be able to read why it was refused.
    const refused = await fetch(`${listed.url}/v1/events`, {
      method: 'POST',
      headers: { origin: APP, 'content-type': 'application/json' },
      body: JSON.stringify({ events: [{ topic: 'cors:a', type: 't' }] }),
    });
    expect(refused.status).toBe(401);
    expect(corsHeaders(refused)).toEqual(expected);
    expect(((await refused.json()) as { error: { code: string } }).error.code).toBe('unauthorized');
  });

  it('serves an origin not listed, and a request without Origin, without CORS headers', async () => {
    const stranger = await fetch(`${listed.url}/v1/head`, { headers: { origin: STRANGER } });
    expect(stranger.status).toBe(200);
    expect(corsHeaders(stranger)).toEqual({ vary: 'Origin' });
    const noOrigin = await fetch(`${listed.url}/v1/head`);
    expect(noOrigin.status).toBe(200);
    expect(corsHeaders(noOrigin)).toEqual({ vary: 'Origin' });
  });

  it('adds nothing to the routes it does not cover', async () => {
    for (const path of ['/healthz', '/readyz', '/metrics']) {
      const res = await fetch(`${listed.url}${path}`, { headers: { origin: APP } });
      expect(res.status).toBe(200);
      expect(corsHeaders(res)).toEqual({});
      await res.body?.cancel();
    }
    // Not a CORS route: OPTIONS on the WebSocket path is the 426 it always was.
    const ws = await preflight(listed.url, '/v1/ws', APP, 'GET');
    expect(ws.status).toBe(426);
    expect(corsHeaders(ws)).toEqual({});
  });

  it('with * echoes any origin', async () => {
    const pre = await preflight(any.url, '/v1/events', STRANGER, 'POST');
    expect(pre.status).toBe(204);
    expect(corsHeaders(pre)).toEqual(preflightAnswer(STRANGER, 'GET, POST'));
    const head = await fetch(`${any.url}/v1/head`, { headers: { origin: 'null' } });
    expect(corsHeaders(head)).toEqual({ 'access-control-allow-origin': 'null', 'access-control-expose-headers': 'retry-after', vary: 'Origin' });
  });

  it('without the setting sends no CORS header, and OPTIONS stays 405', async () => {
    const head = await fetch(`${plain.url}/v1/head`, { headers: { origin: APP } });
    expect(head.status).toBe(200);
    expect(corsHeaders(head)).toEqual({});
    const pre = await preflight(plain.url, '/v1/events', APP, 'POST');
    expect(pre.status).toBe(405);
    expect(corsHeaders(pre)).toEqual({});
    expect(await pre.json()).toEqual({ error: { code: 'method_not_allowed', message: 'OPTIONS is not allowed on /v1/events', retryable: false } });
  });
});

describe('WebSocket Origin', () => {
  it('accepts a listed origin, a client without Origin, and a page of Herald’s own origin', async () => {
    expect(await upgrade(listed.url, { origin: APP })).toBe('open');
    expect(await upgrade(listed.url, { origin: OTHER_APP })).toBe('open');
    expect(await upgrade(listed.url, {})).toBe('open');
    expect(await upgrade(listed.url, { origin: listed.url })).toBe('open');
    // Behind a TLS proxy the page is https while this hop is http: the host decides.
    expect(await upgrade(listed.url, { origin: listed.url.replace('http:', 'https:') })).toBe('open');
  });

  it('refuses another browser origin with 403 forbidden before the upgrade', async () => {
    expect(await upgrade(listed.url, { origin: STRANGER })).toEqual({
      status: 403,
      contentType: 'application/json',
      body: {
        error: { code: 'forbidden', message: `WebSocket connections from origin ${STRANGER} are not allowed: add it to HERALD_CORS_ORIGINS`, retryable: false },
      },
    });
  });

  it('with * or without the setting accepts any origin', async () => {
    expect(await upgrade(any.url, { origin: STRANGER })).toBe('open');
    expect(await upgrade(plain.url, { origin: STRANGER })).toBe('open');
  });
});
