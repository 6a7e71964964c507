/**
 * Bad input: each request gets a structured 4xx `{error:{code,message}}` and leaves every
 * stored byte as it was. The process keeps serving.
 */
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';
import { publish, startTestHerald, TEST_PUBLISH_TOKEN, type TestHerald } from '../support/herald.ts';

let db: TestDatabase;
let herald: TestHerald;

beforeAll(async () => {
  db = await createTestDatabase();
  herald = await startTestHerald(db.url, { maxBodyBytes: 4096, maxEventDataBytes: 1024 });
  await publish(herald.url, {
    events: [
      { topic: 'seed:a', type: 't', data: { v: 1 } },
      { topic: 'seed:b', type: 't' },
    ],
  });
});
afterAll(async () => {
  await herald.close();
  await db.drop();
});

/** A fingerprint of every stored event. */
async function snapshot(): Promise<string> {
  const { rows } = await herald.ctx.pool.query(
    `select count(*)::int as n, coalesce(md5(string_agg(id || topic || type || data::text || at::text, ',' order by id)), '') as h,
            (select pruned_through from herald.meta) as p from herald.events`,
  );
  return JSON.stringify(rows[0]);
}

const auth = { authorization: `Bearer ${TEST_PUBLISH_TOKEN}`, 'content-type': 'application/json' };
const big = 'x'.repeat(5000);

interface Case {
  name: string;
  method?: string;
  path: string;
  headers?: Record<string, string>;
  body?: string;
  status: number;
  code: string;
}

const cases: Case[] = [
  { name: 'negative since', path: '/v1/events?since=-1', status: 400, code: 'bad_request' },
  { name: 'non-integer since', path: '/v1/events?since=1.5', status: 400, code: 'bad_request' },
  { name: 'text since', path: '/v1/events?since=abc', status: 400, code: 'bad_request' },
  { name: 'huge since', path: '/v1/events?since=99999999999999999999', status: 400, code: 'bad_request' },
  { name: 'since with leading zeros', path: '/v1/events?since=007', status: 400, code: 'bad_request' },
  { name: 'since given twice', path: '/v1/events?since=1&since=2', status: 400, code: 'bad_request' },
  { name: 'since beyond head', path: '/v1/events?since=9000000', status: 409, code: 'cursor_ahead' },
  { name: 'bad topic', path: '/v1/events?topic=../x', status: 400, code: 'bad_request' },
  { name: 'upper-case topic', path: '/v1/events?topic=Job:1', status: 400, code: 'bad_request' },
  { name: 'star in the middle', path: '/v1/events?topic=job:*:x', status: 400, code: 'bad_request' },
  { name: 'topic too long', path: `/v1/events?topic=${'a'.repeat(300)}`, status: 400, code: 'bad_request' },
  { name: 'limit zero', path: '/v1/events?limit=0', status: 400, code: 'bad_request' },
  { name: 'limit over max', path: '/v1/events?limit=1001', status: 400, code: 'bad_request' },
  { name: 'limit text', path: '/v1/events?limit=ten', status: 400, code: 'bad_request' },
  { name: 'wait over max', path: '/v1/events?wait=61', status: 400, code: 'bad_request' },
  { name: 'negative wait', path: '/v1/events?wait=-1', status: 400, code: 'bad_request' },
  { name: 'bad epoch', path: '/v1/events?epoch=nope', status: 400, code: 'bad_request' },
  { name: 'SSE bad since', path: '/v1/events/stream?since=x', status: 400, code: 'bad_request' },
  { name: 'unknown route', path: '/v2/nothing', status: 404, code: 'not_found' },
  { name: 'wrong method', method: 'DELETE', path: '/v1/events', status: 405, code: 'method_not_allowed' },
  {
    name: 'publish without token',
    method: 'POST',
    path: '/v1/events',
    headers: { 'content-type': 'application/json' },
    body: '{"topic":"a","type":"t"}',
    status: 401,
    code: 'unauthorized',
  },
  {
    name: 'publish with wrong token',
    method: 'POST',
    path: '/v1/events',
    headers: { authorization: 'Bearer wrong', 'content-type': 'application/json' },
    body: '{"topic":"a","type":"t"}',
    status: 401,
    code: 'unauthorized',
  },
  { name: 'publish malformed JSON', method: 'POST', path: '/v1/events', headers: auth, body: '{"topic":', status: 400, code: 'bad_request' },
  {
    name: 'publish not JSON content-type',
    method: 'POST',
    path: '/v1/events',
    headers: { ...auth, 'content-type': 'text/plain' },
    body: 'hello',
    status: 415,
    code: 'unsupported_media_type',
  },
  {
    name: 'publish oversize body',
    method: 'POST',
    path: '/v1/events',
    headers: auth,
    body: JSON.stringify({ topic: 'a', type: 't', data: big }),
    status: 413,
    code: 'payload_too_large',
  },
  {
    name: 'publish oversize data',
    method: 'POST',
    path: '/v1/events',
    headers: auth,
    body: JSON.stringify({ topic: 'a', type: 't', data: 'y'.repeat(2000) }),
    status: 413,
    code: 'payload_too_large',
  },
  {
    name: 'publish bad topic',
    method: 'POST',
    path: '/v1/events',
    headers: auth,
    body: '{"topic":"../etc/passwd","type":"t"}',
    status: 400,
    code: 'bad_request',
  },
  {
    name: 'publish pattern as topic',
    method: 'POST',
    path: '/v1/events',
    headers: auth,
    body: '{"topic":"job:*","type":"t"}',
    status: 400,
    code: 'bad_request',
  },
  { name: 'publish missing type', method: 'POST', path: '/v1/events', headers: auth, body: '{"topic":"a"}', status: 400, code: 'bad_request' },
  { name: 'publish empty type', method: 'POST', path: '/v1/events', headers: auth, body: '{"topic":"a","type":""}', status: 400, code: 'bad_request' },
  {
    name: 'publish unknown field',
    method: 'POST',
    path: '/v1/events',
    headers: auth,
    body: '{"topic":"a","type":"t","extra":1}',
    status: 400,
    code: 'bad_request',
  },
  { name: 'publish empty batch', method: 'POST', path: '/v1/events', headers: auth, body: '{"events":[]}', status: 400, code: 'bad_request' },
  {
    name: 'publish batch with one bad topic',
    method: 'POST',
    path: '/v1/events',
    headers: auth,
    body: '{"events":[{"topic":"ok","type":"t"},{"topic":"BAD","type":"t"}]}',
    status: 400,
    code: 'bad_request',
  },
  { name: 'publish a JSON string', method: 'POST', path: '/v1/events', headers: auth, body: '"hello"', status: 400, code: 'bad_request' },
  { name: 'publish null', method: 'POST', path: '/v1/events', headers: auth, body: 'null', status: 400, code: 'bad_request' },
];

describe('bad input', () => {
  it.for(cases)('$name → $status $code, store unchanged', async (c) => {
    const before = await snapshot();
    const res = await fetch(`${herald.url}${c.path}`, { method: c.method ?? 'GET', headers: c.headers, body: c.body });
    const text = await res.text();
    expect(res.status).toBe(c.status);
    const body = JSON.parse(text) as { error: { code: string; message: string } };
    expect(body.error.code).toBe(c.code);
    expect(body.error.message.length).toBeGreaterThan(10);
    expect(text).not.toMatch(/at \w+ \(|node_modules|\.ts:\d+/); // no stack traces
    expect(await snapshot()).toBe(before);
  });

  it('garbage on the socket does not crash the server', async () => {
    await new Promise<void>((resolve) => {
      const s = net.connect(Number(new URL(herald.url).port), '127.0.0.1', () => s.end('\x00\x01GARBAGE / HTTP/9.9\r\n\r\n'));
      s.on('close', () => resolve());
      s.on('error', () => resolve());
      s.resume();
    });
    const res = await fetch(`${herald.url}/healthz`);
    expect(res.status).toBe(200);
  });

  it('no token value ever reaches the logs', async () => {
    await fetch(`${herald.url}/v1/events`, {
      method: 'POST',
      headers: { authorization: 'Bearer leaked-secret-value', 'content-type': 'application/json' },
      body: '{}',
    });
    await publish(herald.url, { topic: 'ok', type: 't' });
    const logs = herald.logs.join('');
    expect(logs.length).toBeGreaterThan(0);
    expect(logs).not.toContain('leaked-secret-value');
    expect(logs).not.toContain(TEST_PUBLISH_TOKEN);
  });
});
