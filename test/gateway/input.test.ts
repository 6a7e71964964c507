/**
 * Input, exactly (issue 12): bytes a stranger sends that Herald cannot store or decode (NUL,
 * unpaired surrogates, nesting past JSON_MAX_DEPTH, numbers beyond PostgreSQL numeric, a
 * body that does not decode as its Content-Encoding) get a 4xx with a stable code on every
 * route that takes them, are logged below error level, and change nothing stored. Numbers
 * published over HTTP are stored, and read back, with every digit.
 */
import zlib, { brotliCompressSync, deflateSync, gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { JSON_MAX_DEPTH } from '../../src/http/json-input.ts';
import { buildArchive } from '../../src/registry/archive.ts';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';
import { startTestHerald, TEST_PUBLISH_TOKEN, type TestHerald, until } from '../support/herald.ts';
import { openSse } from '../support/sse.ts';
import { openWs } from '../support/ws.ts';

const WEBHOOK_SECRET = 'input-test-webhook-secret';

let db: TestDatabase;
let herald: TestHerald;
let alice: string;

beforeAll(async () => {
  db = await createTestDatabase();
  herald = await startTestHerald(db.url, { indexWebhookSecrets: [WEBHOOK_SECRET], takedownBurst: 1000, workers: 1 });
  alice = await herald.tokens.create('alice', false);
  // A package alice owns, so that job bodies get past their permission checks to the store.
  const archive = await buildArchive({
    'manifest.json': JSON.stringify({ name: 'in-pkg', version: '1.0.0', description: 'x', license: 'MIT', dependencies: {} }),
  });
  const res = await fetch(`${herald.url}/api/v1/publish?name=in-pkg&version=1.0.0`, {
    method: 'POST',
    headers: { 'content-type': 'application/gzip', authorization: `Bearer ${alice}` },
    body: new Uint8Array(archive),
  });
  expect(res.status).toBe(201);
  const { jobId } = (await res.json()) as { jobId: number };
  await until(async () => (await herald.jobs.get(jobId))?.status === 'succeeded', 30_000, 'the seed package to publish');
});
afterAll(async () => {
  await herald.close();
  await db.drop();
});

/** What a rejected request must leave as it was: the log head, events, jobs, takedowns, webhook deliveries. */
async function stored(): Promise<unknown> {
  const { head } = await herald.ctx.log.readHead();
  const { rows } = await herald.ctx.pool.query(`
    select (select count(*) from herald.events)::int as events,
           (select count(*) from herald.jobs)::int as jobs,
           (select count(*) from herald.takedown_requests)::int as takedowns,
           (select count(*) from herald.webhook_deliveries)::int as deliveries`);
  return { head, ...rows[0] };
}

/** Log lines at error level or above (pino: 50), or carrying a stack, since line `from`. */
function badLogs(from: number): string[] {
  return herald.logs.slice(from).filter((line) => (JSON.parse(line) as { level: number }).level >= 50 || line.includes('"stack"'));
}

const json = { 'content-type': 'application/json' };
const publisher = { ...json, authorization: `Bearer ${TEST_PUBLISH_TOKEN}` };
const deep = (levels: number, inner = '1') => '['.repeat(levels) + inner + ']'.repeat(levels);
const gzipTruncated = (text: string) => {
  const gz = gzipSync(text);
  return gz.subarray(0, gz.length - 6);
};

interface Case {
  name: string;
  path: string;
  headers: Record<string, string>;
  body: string | Buffer;
  status: number;
  code: string;
}
/** A case before its route is chosen: `headers` are added to the route's own. */
type BodyCase = Omit<Case, 'path' | 'headers'> & { headers?: Record<string, string> };

const event = (fields: string) => `{"topic":"in:x",${fields}}`;
const publishCases: BodyCase[] = [
  { name: 'NUL in type', body: event('"type":"a\\u0000b"'), status: 400, code: 'bad_request' },
  { name: 'NUL in data', body: event('"type":"t","data":"a\\u0000b"'), status: 400, code: 'bad_request' },
  { name: 'NUL in a key of data', body: event('"type":"t","data":{"ok":1,"k\\u0000":1}'), status: 400, code: 'bad_request' },
  {
    name: 'NUL in the data of a batch',
    body: `{"events":[${event('"type":"t"')},${event('"type":"t","data":["\\u0000"]')}]}`,
    status: 400,
    code: 'bad_request',
  },
  { name: 'lone high surrogate in type', body: event('"type":"a\\ud800"'), status: 400, code: 'bad_request' },
  { name: 'lone low surrogate in data', body: event('"type":"t","data":"\\udc00x"'), status: 400, code: 'bad_request' },
  { name: 'high surrogate then a letter in data', body: event('"type":"t","data":"\\ud800\\u0041"'), status: 400, code: 'bad_request' },
  { name: 'lone surrogate in a key of data', body: event('"type":"t","data":{"\\ud800":1}'), status: 400, code: 'bad_request' },
  { name: 'data nested 5,000 deep', body: event(`"type":"t","data":${deep(5000)}`), status: 400, code: 'bad_request' },
  { name: 'data nested 5,000 deep in a batch', body: `{"events":[${event(`"type":"t","data":${deep(5000)}`)}]}`, status: 400, code: 'bad_request' },
  { name: `data nested ${JSON_MAX_DEPTH + 1} deep`, body: event(`"type":"t","data":${deep(JSON_MAX_DEPTH + 1)}`), status: 400, code: 'bad_request' },
  { name: 'a body nested 5,000 deep outside data', body: `{"topic":${deep(5000, '"x"')},"type":"t"}`, status: 400, code: 'bad_request' },
  { name: 'a number beyond numeric (integer digits)', body: event('"type":"t","data":1e131072'), status: 400, code: 'bad_request' },
  { name: 'a number beyond numeric (scale)', body: event('"type":"t","data":1.5e-16383'), status: 400, code: 'bad_request' },
  { name: 'an exponent of a billion', body: event('"type":"t","data":0e1000000000'), status: 400, code: 'bad_request' },
  { name: 'numbers written out past the data limit', body: event('"type":"t","data":[1e131071,1e131071]'), status: 413, code: 'payload_too_large' },
  {
    name: "a batch whose numbers, written out, exceed the body's limit",
    body: `{"events":[${Array.from({ length: 9 }, () => event('"type":"t","data":[1e131071]')).join(',')}]}`,
    status: 413,
    code: 'payload_too_large',
  },
  {
    name: 'invalid UTF-8',
    body: Buffer.concat([Buffer.from(event('"type":"')), Buffer.from([0xff, 0xfe]), Buffer.from('"}')]),
    status: 400,
    code: 'bad_request',
  },
  { name: 'a raw NUL byte', body: event('"type":"a\u0000"'), status: 400, code: 'bad_request' },
  { name: 'an empty body', body: '', status: 400, code: 'bad_request' },
];

const GOOD = event('"type":"t","data":{"v":1}');
/** Content-Encoding cases, for every route that reads a body through body-parser. */
function encodingCases(good: string): BodyCase[] {
  return [
    { name: 'Content-Encoding: br on a body that is not brotli', headers: { 'content-encoding': 'br' }, body: good, status: 400, code: 'bad_request' },
    { name: 'a truncated gzip body', headers: { 'content-encoding': 'gzip' }, body: gzipTruncated(good), status: 400, code: 'bad_request' },
    { name: 'Content-Encoding: gzip on a body that is not gzip', headers: { 'content-encoding': 'gzip' }, body: good, status: 400, code: 'bad_request' },
    {
      name: 'Content-Encoding: deflate on a body that is not deflate',
      headers: { 'content-encoding': 'deflate' },
      body: good,
      status: 400,
      code: 'bad_request',
    },
    { name: 'an unknown Content-Encoding', headers: { 'content-encoding': 'x-squash' }, body: good, status: 415, code: 'unsupported_media_type' },
    { name: 'two Content-Encodings', headers: { 'content-encoding': 'gzip, br' }, body: good, status: 415, code: 'unsupported_media_type' },
    // zstd is decoded where node:zlib has it (Node 22.15+), and refused as unknown elsewhere.
    'createZstdDecompress' in zlib
      ? { name: 'Content-Encoding: zstd on a body that is not zstd', headers: { 'content-encoding': 'zstd' }, body: good, status: 400, code: 'bad_request' }
      : { name: 'Content-Encoding: zstd (not in this Node)', headers: { 'content-encoding': 'zstd' }, body: good, status: 415, code: 'unsupported_media_type' },
  ];
}

const unpublish = (reason: string) => `{"name":"in-pkg","version":"1.0.0","reason":${reason}}`;
const takedown = (reason: string) => `package=in-pkg&name=Someone&email=someone%40example.com&reason=${reason}`;
const form = { 'content-type': 'application/x-www-form-urlencoded' };
// alice's token exists only once beforeAll has run: filled in when the request is sent.
const aliceAuth = { authorization: 'Bearer <alice>' };

const cases: Case[] = [
  ...[...publishCases, ...encodingCases(GOOD)].map((c) => ({ ...c, path: '/v1/events', headers: { ...publisher, ...c.headers } })),
  {
    name: 'a charset other than UTF-8',
    path: '/v1/events',
    headers: { ...publisher, 'content-type': 'application/json; charset=iso-8859-1' },
    body: GOOD,
    status: 415,
    code: 'unsupported_media_type',
  },

  // The job API's JSON bodies: the reason would go into the job's jsonb payload.
  ...[
    ['NUL in a field', '"a reason with a \\u0000 in it"'],
    ['a lone surrogate in a field', '"a reason with a \\ud800 in it"'],
    ['a field nested 5,000 deep', deep(5000, '"x"')],
  ].map(([name, reason]) => ({
    name: `job API: ${name}`,
    path: '/api/v1/unpublish',
    headers: { ...json, ...aliceAuth },
    body: unpublish(reason!),
    status: 400,
    code: 'bad_request',
  })),
  ...encodingCases(unpublish('"no longer maintained"')).map((c) => ({
    ...c,
    name: `job API: ${c.name}`,
    path: '/api/v1/unpublish',
    headers: { ...json, ...aliceAuth, ...c.headers },
  })),
  {
    name: 'job API: a charset other than UTF-8',
    path: '/api/v1/unpublish',
    headers: { 'content-type': 'application/json; charset=utf-16le', ...aliceAuth },
    body: unpublish('"x"'),
    status: 415,
    code: 'unsupported_media_type',
  },
  // The archive upload is stored as sent, so any Content-Encoding is refused, raw or multipart.
  ...['gzip', 'br'].map((enc) => ({
    name: `job API: an archive upload with Content-Encoding: ${enc}`,
    path: '/api/v1/publish?name=in-pkg&version=2.0.0',
    headers: { 'content-type': 'application/gzip', 'content-encoding': enc, ...aliceAuth },
    body: gzipTruncated('not an archive'),
    status: 415,
    code: 'unsupported_media_type',
  })),
  {
    name: 'job API: a multipart upload with Content-Encoding: gzip',
    path: '/api/v1/publish?name=in-pkg&version=2.0.0',
    headers: { 'content-type': 'multipart/form-data; boundary=x', 'content-encoding': 'gzip', ...aliceAuth },
    body: gzipTruncated('--x\r\nContent-Disposition: form-data; name="archive"; filename="a.tgz"\r\n\r\nzz\r\n--x--\r\n'),
    status: 415,
    code: 'unsupported_media_type',
  },

  // The index webhook: the body is decoded before its signature can be checked.
  ...encodingCases('{"ref":"refs/heads/master"}').map((c) => ({
    ...c,
    name: `webhook: ${c.name}`,
    path: '/_/index-webhook',
    headers: { ...json, 'x-hub-signature-256': `sha256=${'0'.repeat(64)}`, ...c.headers },
  })),

  // The takedown form.
  ...encodingCases(takedown('x'.repeat(30))).map((c) => ({ ...c, name: `takedown form: ${c.name}`, path: '/takedown', headers: { ...form, ...c.headers } })),
];

describe('bad input is a 4xx with a stable code, logged below error level, and stores nothing', () => {
  it.for(cases)('$name → $status $code', async (c) => {
    const before = await stored();
    const logsFrom = herald.logs.length;
    const headers = Object.fromEntries(Object.entries(c.headers).map(([k, v]) => [k, v.replace('<alice>', alice)]));
    const res = await fetch(`${herald.url}${c.path}`, { method: 'POST', headers, body: typeof c.body === 'string' ? c.body : new Uint8Array(c.body) });
    const text = await res.text();
    expect(res.status, text).toBe(c.status);
    const body = JSON.parse(text) as { error: { code: string; message: string } };
    expect(body.error.code).toBe(c.code);
    expect(body.error.message).not.toMatch(/internal|Maximum call stack/);
    expect(text).not.toMatch(/at \w+ \(|node_modules|\.ts:\d+/);
    expect(await stored()).toEqual(before);
    expect(badLogs(logsFrom)).toEqual([]);
  });

  it('the messages say what was found', async () => {
    const message = async (body: string) =>
      ((await (await fetch(`${herald.url}/v1/events`, { method: 'POST', headers: publisher, body })).json()) as { error: { message: string } }).error.message;
    expect(await message(event('"type":"t","data":{"k\\u0000":1}'))).toMatch(/NUL character .* at offset 37/);
    expect(await message(event('"type":"a\\ud800"'))).toMatch(/unpaired UTF-16 surrogate/);
    expect(await message(event(`"type":"t","data":${deep(5000)}`))).toMatch(new RegExp(`nests more than ${JSON_MAX_DEPTH + 3} levels`));
    expect(await message(event(`"type":"t","data":${deep(JSON_MAX_DEPTH + 2)}`))).toBe(
      `data nests ${JSON_MAX_DEPTH + 2} levels of arrays and objects; at most ${JSON_MAX_DEPTH} are allowed: flatten it`,
    );
    // In a batch, data is 3 levels down: one level too many is already past the body's limit.
    expect(await message(`{"events":[${event('"type":"t"')},${event(`"type":"t","data":{"a":${deep(JSON_MAX_DEPTH)}}`)}]}`)).toMatch(
      new RegExp(`^body nests more than ${JSON_MAX_DEPTH + 3} levels of arrays and objects \\(at offset 141\\)`),
    );
    expect(await message(event('"type":"t","data":1e-16384'))).toMatch(/number out of range at offset 34: PostgreSQL numeric stores at most/);
  });

  it('the takedown form refuses a NUL in its text fields with the form and its message, and stores nothing', async () => {
    for (const body of [takedown(`${'x'.repeat(30)}%00`), takedown('x'.repeat(30)).replace('name=Someone', 'name=Some%00one')]) {
      const before = await stored();
      const logsFrom = herald.logs.length;
      const res = await fetch(`${herald.url}/takedown`, { method: 'POST', headers: form, body });
      expect(res.status).toBe(400);
      expect(await res.text()).toMatch(/contains a NUL character; remove it/);
      expect(await stored()).toEqual(before);
      expect(badLogs(logsFrom)).toEqual([]);
    }
  });

  it('an uploaded archive whose manifest.json has a NUL or an unpaired surrogate fails its job once, as bad input, and stores no version', async () => {
    for (const [version, description] of [
      ['1.0.1', 'a \\u0000 in it'],
      ['1.0.2', 'a \\udfff in it'],
    ] as const) {
      const logsFrom = herald.logs.length;
      const manifest = `{"name":"in-pkg","version":"${version}","description":"${description}","license":"MIT","dependencies":{}}`;
      const res = await fetch(`${herald.url}/api/v1/publish?name=in-pkg&version=${version}`, {
        method: 'POST',
        headers: { 'content-type': 'application/gzip', authorization: `Bearer ${alice}` },
        body: new Uint8Array(await buildArchive({ 'manifest.json': manifest })),
      });
      expect(res.status).toBe(201);
      const { jobId } = (await res.json()) as { jobId: number };
      await until(async () => (await herald.jobs.get(jobId))?.status === 'failed', 30_000, `job ${jobId} to fail`);
      const job = (await herald.jobs.get(jobId))!;
      expect(job.attempts).toBe(1);
      expect(job.error).toMatch(/^manifest\.json has (a NUL character|an unpaired UTF-16 surrogate)/);
      const versions = await herald.ctx.pool.query('select version from herald.versions where package = $1', ['in-pkg']);
      expect(versions.rows).toEqual([{ version: '1.0.0' }]);
      expect(badLogs(logsFrom)).toEqual([]);
    }
  });

  it('WebSocket: NUL, surrogates and deep nesting in a message are bad_request errors; the connection stays open and nothing else changes', async () => {
    const ws = await openWs(herald.url);
    const logsFrom = herald.logs.length;
    const messages = [
      `{"op":${deep(5000, '"subscribe"')}}`,
      `{"op":"subscribe","topics":["in:x"],"since":${deep(5000)}}`,
      `{"op":"subscribe","topics":${deep(5000, '"in:x"')}}`,
      `{"op":"subscribe","topics":["in:\\u0000"]}`,
      `{"op":"subscribe","topics":["in:\\ud800"]}`,
      `{"op":"subscribe","topics":["in:x"],"epoch":"\\udc00"}`,
      `{"op":"ping","x\\u0000":1}`,
    ];
    for (const [i, m] of messages.entries()) {
      ws.send(m);
      ws.send({ op: 'ping' });
      await until(() => ws.messages.filter((x) => x.op === 'pong').length === i + 1, 5000, `pong ${i}`);
      const answers = ws.messages.filter((x) => x.op !== 'pong');
      expect(answers).toHaveLength(i + 1);
      expect(answers[i]).toMatchObject({ op: 'error', code: 'bad_request' });
    }
    expect(ws.ws.readyState).toBe(ws.ws.OPEN);
    expect(badLogs(logsFrom)).toEqual([]);
    ws.ws.close();
  });
});

describe('numbers published over HTTP are stored exactly as sent', () => {
  // Polls below wait (`wait=5`) for the event: a poll sent right after the 201 can be
  // answered before this process's Listener has the event, and return nothing yet.
  // Plain decimals, written with jsonb's own spacing: read back byte for byte.
  const DATA = '[12345678901234567890, 0.10000000000000000000000001, 1.50, -7, 3.14159265358979323846264338327950288, 0.000, -12345678901234567890.5]';

  it('publish → poll, WebSocket and SSE return the same digits, byte for byte in the raw text', async () => {
    const { head } = await herald.ctx.log.readHead();
    const ws = await openWs(herald.url);
    ws.send({ op: 'subscribe', topics: ['num:x'], since: head });
    await ws.waitFor((m) => m.op === 'subscribed');
    const sse = await openSse(`${herald.url}/v1/events/stream?topic=num:x&since=${head}`);
    const res = await fetch(`${herald.url}/v1/events`, { method: 'POST', headers: publisher, body: `{"topic":"num:x","type":"t","data":${DATA}}` });
    expect(res.status).toBe(201);
    const { ids } = (await res.json()) as { ids: number[] };

    const poll = await (await fetch(`${herald.url}/v1/events?topic=num:x&since=${head}&wait=5`)).text();
    expect(poll).toContain(`"type":"t","data":${DATA},"at":`);
    await ws.waitFor((m) => m.op === 'event' && m.id === ids[0]);
    expect(ws.raw.find((r) => r.includes('"op":"event"'))).toContain(`"data":${DATA},"at":`);
    const message = await sse.waitFor((m) => m.id === String(ids[0]));
    expect(message.data).toContain(`"data":${DATA},"at":`);
    const stored = await herald.ctx.pool.query('select data::text as data from herald.events where id = $1', [ids[0]]);
    expect(stored.rows[0].data).toBe(DATA);
    ws.ws.close();
    sse.destroy();
  });

  it('the examples from the issue, in a batch and gzip-compressed; exponents come back written out in full', async () => {
    const body = '{"events":[{"topic":"num:y","type":"t","data":{"a":12345678901234567890,"b":1e400,"c":0.10000000000000000000000001,"d":1E2,"e":2.5e-3}}]}';
    const res = await fetch(`${herald.url}/v1/events`, {
      method: 'POST',
      headers: { ...publisher, 'content-encoding': 'gzip' },
      body: new Uint8Array(gzipSync(body)),
    });
    expect(res.status).toBe(201);
    const { ids } = (await res.json()) as { ids: number[] };
    const poll = await (await fetch(`${herald.url}/v1/events?topic=num:y&since=${ids[0]! - 1}&wait=5`)).text();
    expect(poll).toContain(`"data":{"a": 12345678901234567890, "b": 1${'0'.repeat(400)}, "c": 0.10000000000000000000000001, "d": 100, "e": 0.0025},"at":`);
  });

  it('what JSON.parse would do with duplicate keys, the stored data does too: the last one wins', async () => {
    const body = '{"topic":"num:z","type":"t","data":1,"data":{"k":2,"k":3}}';
    const res = await fetch(`${herald.url}/v1/events`, {
      method: 'POST',
      headers: { ...publisher, 'content-encoding': 'br' },
      body: new Uint8Array(brotliCompressSync(body)),
    });
    expect(res.status).toBe(201);
    const batch = '{"events":[{"topic":"num:z","type":"t","data":1}],"events":[{"topic":"num:z","type":"t"},{"topic":"num:z","type":"u","data":[4]}]}';
    const res2 = await fetch(`${herald.url}/v1/events`, {
      method: 'POST',
      headers: { ...publisher, 'content-encoding': 'deflate' },
      body: new Uint8Array(deflateSync(batch)),
    });
    expect(res2.status).toBe(201);
    const [first] = ((await res.json()) as { ids: number[] }).ids;
    const rows = await herald.ctx.pool.query('select type, data::text as data from herald.events where topic = $1 and id >= $2 order by id', ['num:z', first]);
    expect(rows.rows).toEqual([
      { type: 't', data: '{"k": 3}' },
      { type: 't', data: 'null' },
      { type: 'u', data: '[4]' },
    ]);
  });

  it(`data nested ${JSON_MAX_DEPTH} deep, and numbers at the edge of numeric, are accepted and read back`, async () => {
    const data = deep(JSON_MAX_DEPTH, '1e-16383');
    const res = await fetch(`${herald.url}/v1/events`, {
      method: 'POST',
      headers: publisher,
      body: `{"events":[{"topic":"num:deep","type":"t","data":${data}}]}`,
    });
    expect(res.status).toBe(201);
    const { ids } = (await res.json()) as { ids: number[] };
    const poll = await (await fetch(`${herald.url}/v1/events?topic=num:deep&since=${ids[0]! - 1}&wait=5`)).text();
    expect(poll).toContain(`"data":${deep(JSON_MAX_DEPTH, `0.${'0'.repeat(16382)}1`)},"at":`);
  });
});
