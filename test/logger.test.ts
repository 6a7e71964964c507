/**
 * Logs: JSON lines when the output is not a terminal, readable lines when asked, and an
 * access log per request that never carries a secret (checked against a real Herald).
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { afterAll, describe, expect, it } from 'vitest';
import { createLogger, resolveLogFormat } from '../src/logger.ts';
import { redactUrl } from '../src/http/access-log.ts';
import { createTestDatabase } from './support/db.ts';
import { publish, startTestHerald, TEST_PUBLISH_TOKEN } from './support/herald.ts';
import { LineCollector } from './support/lines.ts';

const cleanups: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
});

describe('logger', () => {
  it('auto means pretty on a terminal and JSON otherwise; an explicit format wins', () => {
    expect(resolveLogFormat('auto', true)).toBe('pretty');
    expect(resolveLogFormat('auto', false)).toBe('json');
    expect(resolveLogFormat('json', true)).toBe('json');
    expect(resolveLogFormat('pretty', false)).toBe('pretty');
  });

  it('on a stdout that is not a terminal, every line is one JSON object', async () => {
    const script = `import { createLogger } from './src/logger.ts';
      const logger = createLogger('info');
      logger.info({ n: 0 }, 'first');
      for (let n = 1; n < 200; n++) logger.info({ n, pad: 'x'.repeat(200) }, 'bulk');
      logger.warn({ n: 200 }, 'last');
      process.exit(0);`;
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      cwd: new URL('..', import.meta.url),
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const out = new LineCollector();
    child.stdout.setEncoding('utf8').on('data', (d: string) => out.push(d));
    const [code] = await once(child, 'close');
    expect(code).toBe(0);
    const lines = out.json();
    expect(lines.every((l) => l.service === 'herald')).toBe(true);
    // Written just before process.exit(): nothing may be lost or reordered.
    expect(lines.map((l) => l.n)).toEqual(Array.from({ length: 201 }, (_, n) => n));
    expect([lines[0]!.msg, lines[200]!.level, lines[200]!.msg]).toEqual(['first', 40, 'last']);
  });

  it('pretty format writes readable lines, not JSON', () => {
    const out = new LineCollector();
    const logger = createLogger('info', out.writable(), 'pretty');
    logger.info({ url: 'http://127.0.0.1:8080' }, 'herald listening on http://127.0.0.1:8080');
    const text = out.lines.join('\n');
    expect(text).toMatch(/INFO.*herald listening on http:\/\/127\.0\.0\.1:8080/);
    expect(() => JSON.parse(out.lines[0]!)).toThrow();
  });
});

describe('access log', () => {
  it('redactUrl hides secret-bearing query values and keeps the rest byte for byte', () => {
    expect(redactUrl('/v1/events?since=0&token=abc&topic=a%3Ab')).toBe('/v1/events?since=0&token=[redacted]&topic=a%3Ab');
    expect(redactUrl('/x?access_token=a&api_key=b&X-Amz-Signature=c&password=d&sig=e&author=f')).toBe(
      '/x?access_token=[redacted]&api_key=[redacted]&X-Amz-Signature=[redacted]&password=[redacted]&sig=[redacted]&author=f',
    );
    expect(redactUrl('/v1/head')).toBe('/v1/head');
    expect(redactUrl('/x?tok%65n=a&flag')).toBe('/x?tok%65n=[redacted]&flag');
  });

  it('logs one line per request with method, redacted path, status and duration; probes at debug; never a token or the Authorization header', async () => {
    const db = await createTestDatabase();
    cleanups.push(db.drop);
    const out = new LineCollector();
    const READ_TOKEN = 'read-token-0123456789';
    const herald = await startTestHerald(
      db.url,
      { logLevel: 'debug', readTokens: [READ_TOKEN], workers: 0 },
      { logger: createLogger('debug', out.writable()) },
    );
    cleanups.push(herald.close);
    const request = (path: string) => out.waitForJson((l) => l.msg === 'request' && l.path === path, 10_000, `the access log line of ${path}`);

    const polled = await fetch(`${herald.url}/v1/events?since=0&token=${READ_TOKEN}&limit=5`);
    expect(polled.status).toBe(200);
    await polled.body?.cancel();
    const poll = await request('/v1/events?since=0&token=[redacted]&limit=5');
    expect(poll).toMatchObject({ level: 30, method: 'GET', status: 200 });
    expect(poll.durationMs).toEqual(expect.any(Number));

    const head = await fetch(`${herald.url}/v1/head`, { headers: { authorization: `Bearer ${READ_TOKEN}` } });
    await head.body?.cancel();
    expect(await request('/v1/head')).toMatchObject({ level: 30, method: 'GET', status: 200 });

    const published = await publish(herald.url, { events: [{ topic: 'log:a', type: 't' }] });
    await published.body?.cancel();
    expect(await request('/v1/events')).toMatchObject({ level: 30, method: 'POST', status: published.status });

    const missing = await fetch(`${herald.url}/nowhere?password=hunter2`);
    await missing.body?.cancel();
    expect(await request('/nowhere?password=[redacted]')).toMatchObject({ level: 30, status: 404 });

    for (const probe of ['/healthz', '/readyz', '/metrics']) {
      const res = await fetch(`${herald.url}${probe}`);
      await res.body?.cancel();
      expect(await request(probe)).toMatchObject({ level: 20, method: 'GET', status: 200 });
    }

    const all = out.lines.join('\n');
    expect(all).not.toContain(READ_TOKEN);
    expect(all).not.toContain('hunter2');
    expect(all).not.toContain(TEST_PUBLISH_TOKEN);
    expect(all).not.toMatch(/authorization/i);
    expect(out.json().length).toBe(out.lines.length);
  });
});
