/**
 * HERALD_METRICS_TOKEN over real HTTP: /metrics answers only the bearer of the token (never
 * logged), while /healthz and /readyz stay public; without it /metrics stays public and
 * start-up says so once.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';
import { startTestHerald, type TestHerald } from '../support/herald.ts';

const METRICS_TOKEN = 'scrape-token-5f0c2a9e7d1b4c36';
const PUBLIC_WARNING = '/metrics is public: set HERALD_METRICS_TOKEN to require a bearer token (docs/operations.md)';

let db: TestDatabase;
let guarded: TestHerald;
let open: TestHerald;

beforeAll(async () => {
  db = await createTestDatabase();
  [guarded, open] = await Promise.all([startTestHerald(db.url, { metricsToken: METRICS_TOKEN }), startTestHerald(db.url)]);
});
afterAll(async () => {
  await Promise.all([guarded?.close(), open?.close()]);
  await db.drop();
});

/** The log lines written at warn, by message. */
const warnings = (herald: TestHerald) =>
  herald.logs
    .map((line) => JSON.parse(line) as { level: number; msg: string })
    .filter((l) => l.level === 40)
    .map((l) => l.msg);

describe('HERALD_METRICS_TOKEN', () => {
  it('refuses /metrics without the token with 401 unauthorized', async () => {
    const none = await fetch(`${guarded.url}/metrics`);
    expect(none.status).toBe(401);
    expect(await none.json()).toEqual({
      error: { code: 'unauthorized', message: '/metrics needs a bearer token: send Authorization: Bearer <token>', retryable: false },
    });
    for (const authorization of [`Bearer ${METRICS_TOKEN}x`, `Bearer ${METRICS_TOKEN.slice(0, -1)}`, 'Bearer read-token']) {
      const wrong = await fetch(`${guarded.url}/metrics`, { headers: { authorization } });
      expect(wrong.status).toBe(401);
      expect(await wrong.json()).toEqual({ error: { code: 'unauthorized', message: 'the bearer token is not valid for /metrics', retryable: false } });
    }
    // Basic credentials are not a bearer token.
    const basic = await fetch(`${guarded.url}/metrics`, { headers: { authorization: `Basic ${Buffer.from(`x:${METRICS_TOKEN}`).toString('base64')}` } });
    expect(basic.status).toBe(401);
    await basic.body?.cancel();
  });

  it('serves /metrics to the bearer of the token', async () => {
    const res = await fetch(`${guarded.url}/metrics`, { headers: { authorization: `Bearer ${METRICS_TOKEN}` } });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/plain; version=0.0.4; charset=utf-8');
    expect(await res.text()).toMatch(/^herald_events_appended_total 0$/m);
  });

  it('keeps /healthz and /readyz public', async () => {
    const healthz = await fetch(`${guarded.url}/healthz`);
    expect(healthz.status).toBe(200);
    expect(await healthz.json()).toEqual({ status: 'ok' });
    const readyz = await fetch(`${guarded.url}/readyz`);
    expect(readyz.status).toBe(200);
    expect(((await readyz.json()) as { status: string }).status).toBe('ready');
  });

  it('never logs the token, and does not warn', () => {
    expect(guarded.logs.filter((line) => line.includes(METRICS_TOKEN))).toEqual([]);
    expect(warnings(guarded)).not.toContain(PUBLIC_WARNING);
  });

  it('unset: /metrics stays public and start-up warns once', async () => {
    const res = await fetch(`${open.url}/metrics`);
    expect(res.status).toBe(200);
    expect(await res.text()).toMatch(/^herald_events_appended_total 0$/m);
    expect(warnings(open).filter((msg) => msg === PUBLIC_WARNING)).toHaveLength(1);
  });
});
