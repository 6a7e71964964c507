/**
 * Claims the docs make that no other test pinned down, each checked against a real Herald
 * (and, for `herald tail`, the real command): an empty `since=` (docs/protocol.md,
 * docs/jobs.md), a malformed `epoch` on every transport (docs/protocol.md), and what the
 * client library and `herald tail` do when the upgrade is refused with 401 or 404
 * (docs/protocol.md "Client library", docs/operations.md "herald tail").
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { connect, type HeraldClientError } from 'herald-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';
import { startTestHerald, type TestHerald } from '../support/herald.ts';
import { openWs } from '../support/ws.ts';

const BIN = fileURLToPath(new URL('../../bin/herald.js', import.meta.url));
const NOT_A_UUID = ['abc', 'D8DD9638-5A1C-4C1E-9A53-1F0F3B0B8A11', '{d8dd9638-5a1c-4c1e-9a53-1f0f3b0b8a1}', 'd8dd9638-5a1c-4c1e-9a53-1f0f3b0b8a11x'];

let db: TestDatabase;
let herald: TestHerald;

beforeAll(async () => {
  db = await createTestDatabase();
  // No workers: the job below stays queued, and its log holds only the lines written here.
  herald = await startTestHerald(db.url, { workers: 0 });
});
afterAll(async () => {
  await herald?.close();
  await db?.drop();
});

async function json(path: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${herald.url}${path}`);
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

describe('an empty since=', () => {
  it('on GET /v1/events means now (docs/protocol.md)', async () => {
    await herald.ctx.log.emitMany([{ topic: 'claims:a', type: 'x' }]);
    const { status, body } = await json('/v1/events?since=&topic=claims:*');
    expect(status).toBe(200);
    expect(body.events).toEqual([]);
    expect(body.next).toBe((await herald.ctx.log.readHead()).head);
  });

  it('on GET /api/v1/jobs/<id>/logs is since=0, not an error (docs/jobs.md); a bad since is 400', async () => {
    const { job } = await herald.jobs.submit({ type: 'docs-claim', payload: {}, maxAttempts: 1 });
    const first = await herald.jobs.log(job.id, 'info', 'first line');
    await herald.jobs.log(job.id, 'info', 'second line');
    const empty = await json(`/api/v1/jobs/${job.id}/logs?since=`);
    expect(empty.status).toBe(200);
    expect(empty.body).toEqual((await json(`/api/v1/jobs/${job.id}/logs?since=0`)).body);
    expect((empty.body.logs as { id: number }[])[0]!.id).toBe(first.id);
    for (const bad of ['abc', '-1', '007']) {
      const r = await json(`/api/v1/jobs/${job.id}/logs?since=${bad}`);
      expect(r.status, bad).toBe(400);
      expect((r.body.error as { code: string }).code).toBe('bad_request');
    }
    // Checked after the job: an unknown job is 404 whatever since says.
    expect((await json('/api/v1/jobs/987654321/logs?since=abc')).status).toBe(404);
  });

  it('on GET /api/v1/jobs is 400 (docs/jobs.md)', async () => {
    const r = await json('/api/v1/jobs?since=');
    expect(r.status).toBe(400);
    expect((r.body.error as { code: string }).code).toBe('bad_request');
  });
});

describe('an epoch that is not a UUID is 400 bad_request on every transport (docs/protocol.md)', () => {
  it.for(NOT_A_UUID)('poll and SSE: %j', async (epoch) => {
    for (const route of ['/v1/events', '/v1/events/stream']) {
      const r = await json(`${route}?since=0&epoch=${encodeURIComponent(epoch)}`);
      expect(r.status, route).toBe(400);
      expect(r.body).toEqual({ error: { code: 'bad_request', message: 'epoch must be the UUID returned by /v1/head', retryable: false } });
    }
  });

  it('poll and SSE: an empty epoch= is an error too', async () => {
    for (const route of ['/v1/events', '/v1/events/stream']) expect((await json(`${route}?since=0&epoch=`)).status, route).toBe(400);
  });

  it.for(NOT_A_UUID)('WebSocket subscribe: %j gets an error frame, not epoch_mismatch, and the connection stays open', async (epoch) => {
    const c = await openWs(herald.url);
    c.send({ op: 'subscribe', topics: ['claims:a'], since: 0, epoch });
    const err = await c.waitFor((m) => m.op === 'error');
    expect(err).toMatchObject({ op: 'error', code: 'bad_request', message: expect.stringContaining('epoch must be the UUID returned by /v1/head') });
    c.send({ op: 'ping' });
    await c.waitFor((m) => m.op === 'pong');
    c.ws.close();
  });

  it('the client library treats it as fatal: onError gets bad_request and ready rejects', async () => {
    const errors: HeraldClientError[] = [];
    const conn = connect({ url: herald.url, topics: ['claims:a'], since: 0, epoch: 'not-a-uuid', onEvent: () => undefined, onError: (e) => errors.push(e) });
    await expect(conn.ready).rejects.toMatchObject({ code: 'bad_request' });
    expect(errors.map((e) => e.code)).toEqual(['bad_request']);
    expect(conn.state).toBe('closed');
  });
});

describe('a refused upgrade (docs/protocol.md "Refused upgrades", docs/operations.md "herald tail")', () => {
  it('the client library on Node with ws: 401 and 404 are fatal unauthorized / not_found, with no retry', async () => {
    for (const [url, token, code] of [
      [herald.url, 'not-a-read-token', 'unauthorized'],
      [`${herald.url}/wrong/path`, undefined, 'not_found'],
    ] as const) {
      const states: string[] = [];
      const errors: HeraldClientError[] = [];
      const conn = connect({
        url,
        token,
        topics: ['*'],
        backoff: { initialMs: 10, maxMs: 20 },
        onEvent: () => undefined,
        onError: (e) => errors.push(e),
        onStateChange: (s) => states.push(s),
      });
      await expect(conn.ready).rejects.toMatchObject({ code });
      expect(errors.map((e) => [e.code, e.message])).toEqual([[code, `the server refused the connection (${code === 'unauthorized' ? 401 : 404})`]]);
      expect(states).toEqual(['closed']);
    }
  });

  it('herald tail with a token that is not a read token: one line on stderr, nothing on stdout, status 1', async () => {
    const child = spawn(process.execPath, [BIN, 'tail', '--url', herald.url, '--token', 'not-a-read-token', '--since', '0'], {
      env: { PATH: process.env.PATH ?? '' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    const [code] = await once(child, 'exit');
    expect(code).toBe(1);
    expect(out).toBe('');
    expect(err).toBe('herald tail: unauthorized: the server refused the connection (401)\n');
  });
});
