/**
 * The web pages in a real browser: Debian's Chromium driven by playwright-core. Where
 * Chromium is not installed (it is installed by .ci/run), these tests say so and skip.
 */
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { SignJWT } from 'jose';
import pg from 'pg';
import { type Browser, chromium, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildArchive } from '../../src/registry/archive.ts';
import { blockPublishes } from '../support/blocker.ts';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';
import { startTestHerald, type TestHerald, until } from '../support/herald.ts';
import { freePort } from '../support/ports.ts';

const CHROMIUM = '/usr/bin/chromium';
const SHOTS = new URL('../../test-output/screenshots/', import.meta.url).pathname;
const haveChromium = existsSync(CHROMIUM);
if (!haveChromium) console.warn(`pages tests skipped: ${CHROMIUM} is not installed (apt-get install chromium)`);

let db: TestDatabase;
let herald: TestHerald;
let browser: Browser;
let port: number;
let token: string;

async function start(): Promise<TestHerald> {
  return startTestHerald(db.url, { port, workers: 2, exporter: true, exportBucketUrl: `file:///tmp/herald-pages-bucket-${port}` });
}

beforeAll(async () => {
  db = await createTestDatabase();
  port = await freePort();
  herald = await start();
  token = await herald.tokens.create('web', false);
  if (!haveChromium) return;
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
  await mkdir(SHOTS, { recursive: true });
});
afterAll(async () => {
  await browser?.close();
  await herald?.close();
  await db?.drop();
});

async function logLines(page: Page): Promise<{ id: string; text: string }[]> {
  return page.$$eval('#log li', (lis) => lis.map((li) => ({ id: (li as HTMLElement).dataset.id!, text: li.textContent ?? '' })));
}

// Exactly what every page answers with (src/registry/pages.ts PAGE_SECURITY_HEADERS).
const SECURITY_HEADERS = {
  'content-security-policy':
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
};

describe('security headers', () => {
  it('every page, error page, stylesheet and script carries the CSP, nosniff, no framing and no referrer', async () => {
    const { job } = await herald.jobs.submit({ type: 'takedown', payload: { package: 'headers' }, maxAttempts: 1 });
    const requests: [string, RequestInit | undefined, number, string][] = [
      ['/', undefined, 200, 'text/html'],
      ['/events?topic=jobs', undefined, 200, 'text/html'],
      [`/jobs/${job.id}`, undefined, 200, 'text/html'],
      ['/jobs/abc', undefined, 400, 'text/html'],
      ['/jobs/987654321', undefined, 404, 'text/html'],
      ['/packages/Not-A-Name', undefined, 400, 'text/html'],
      ['/packages/no-such-package', undefined, 404, 'text/html'],
      ['/takedown', undefined, 200, 'text/html'],
      ['/takedown', { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'package=..' }, 400, 'text/html'],
      ['/static/style.css', undefined, 200, 'text/css'],
      ['/assets/job.js', undefined, 200, 'text/javascript'],
    ];
    for (const [path, init, status, type] of requests) {
      const res = await fetch(`${herald.url}${path}`, init);
      await res.arrayBuffer();
      expect(res.status, path).toBe(status);
      expect(res.headers.get('content-type'), path).toMatch(new RegExp(`^${type}; charset=`));
      for (const [name, value] of Object.entries(SECURITY_HEADERS)) expect(res.headers.get(name), `${path} ${name}`).toBe(value);
    }
    // The API and the event transports are not pages: no page policy there.
    const api = await fetch(`${herald.url}/api/v1/jobs/${job.id}`);
    await api.arrayBuffer();
    expect(api.headers.get('content-security-policy')).toBeNull();
  });
});

describe.skipIf(!haveChromium)('web pages in Chromium', () => {
  it("/jobs/<id> shows a publishing job's log lines in order as they commit, and the final status without a reload", async () => {
    // Hold publishes inside their transaction so the page sees the job running.
    const blocker = await blockPublishes(db.url);
    const body = await buildArchive({ 'manifest.json': JSON.stringify({ name: 'web-pkg', version: '1.0.0', dependencies: { dep: '^1.0.0' } }) });
    const res = await fetch(`${herald.url}/api/v1/publish?name=web-pkg&version=1.0.0`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/gzip' },
      body: new Uint8Array(body),
    });
    const { jobId } = (await res.json()) as { jobId: number };
    const page = await browser.newPage();
    await page.goto(`${herald.url}/jobs/${jobId}`);
    await page.waitForFunction(() => document.querySelector('[data-job]')?.getAttribute('data-status') === 'running');
    await page.waitForFunction(() => document.querySelectorAll('#log li').length >= 3);
    expect(await page.isVisible('#progress')).toBe(true);
    expect(await page.getAttribute('meta[name="robots"]', 'content')).toBe('noindex, nofollow');
    // A line committed now appears live, after the others.
    await herald.jobs.log(jobId, 'warn', 'a line added while the page watches');
    await page.waitForFunction(() => [...document.querySelectorAll('#log li')].some((li) => li.textContent?.includes('while the page watches')));
    await blocker.release();
    await page.waitForFunction(() => document.querySelector('[data-job]')?.getAttribute('data-status') === 'succeeded', undefined, { timeout: 20_000 });
    expect(await page.isVisible('#progress')).toBe(false);
    const lines = await logLines(page);
    const api = (await (await fetch(`${herald.url}/api/v1/jobs/${jobId}/logs?level=info`)).json()) as { logs: { id: number }[] };
    expect(lines.map((l) => Number(l.id))).toEqual(api.logs.map((l) => l.id));
    await page.setViewportSize({ width: 1280, height: 900 });
    await page.screenshot({ path: `${SHOTS}job-desktop.png`, fullPage: true });
    await page.setViewportSize({ width: 375, height: 800 });
    await page.screenshot({ path: `${SHOTS}job-phone.png`, fullPage: true });

    // The level filter re-subscribes: debug lines appear, in order, each once.
    await page.selectOption('#level', 'debug');
    const all = (await (await fetch(`${herald.url}/api/v1/jobs/${jobId}/logs?level=debug`)).json()) as { logs: { id: number }[] };
    await page.waitForFunction((n) => document.querySelectorAll('#log li').length === n, all.logs.length);
    expect((await logLines(page)).map((l) => Number(l.id))).toEqual(all.logs.map((l) => l.id));
    await page.close();
  });

  it('survives a Herald restart while open: it reconnects and shows each line exactly once', async () => {
    const { job } = await herald.jobs.submit({ type: 'takedown', payload: { package: 'x' }, maxAttempts: 1 });
    await until(async () => (await herald.jobs.get(job.id))!.status === 'succeeded');
    const page = await browser.newPage();
    await page.goto(`${herald.url}/jobs/${job.id}`);
    await page.waitForFunction(() => document.querySelector('#connection')?.textContent === 'live');
    const before = (await logLines(page)).length;
    await herald.close();
    await page.waitForFunction(() => document.querySelector('#connection')?.textContent !== 'live');
    // Lines committed while Herald is down, then after it is back.
    const pool = new pg.Pool({ connectionString: db.url, max: 1 });
    pool.on('error', () => undefined);
    const down = await new (await import('../../src/jobs/store.ts')).JobStore(pool).log(job.id, 'info', 'written while herald was down');
    herald = await start();
    await page.waitForFunction(() => document.querySelector('#connection')?.textContent === 'live', undefined, { timeout: 20_000 });
    const up = await herald.jobs.log(job.id, 'info', 'written after the restart');
    await page.waitForFunction((id) => !!document.querySelector(`#log li[data-id="${id}"]`), up.id, { timeout: 20_000 });
    const lines = await logLines(page);
    expect(lines.length).toBe(before + 2);
    expect(new Set(lines.map((l) => l.id)).size).toBe(lines.length);
    expect(lines.slice(-2).map((l) => Number(l.id))).toEqual([down.id, up.id]);
    await pool.end();
    await page.close();
  });

  it('the takedown form: bad input is refused with messages and nothing stored; good input is stored and shows its id', async () => {
    const page = await browser.newPage();
    await page.goto(`${herald.url}/takedown`);
    await page.fill('#package', '../etc');
    await page.fill('#name', 'A');
    await page.fill('#email', 'not-an-email');
    await page.fill('#reason', 'short');
    // Bypass the browser's own checks: the server must validate.
    await page.$eval('form', (f) => f.setAttribute('novalidate', ''));
    await page.click('button[type=submit]');
    await page.waitForSelector('.errors');
    const errors = await page.$$eval('.errors li', (lis) => lis.map((li) => li.textContent));
    expect(errors).toEqual([
      'Package must be a package name (lower-case letters, digits, - and _).',
      'Your name is required.',
      'A valid email address is required, so a trustee can answer.',
      'Describe the request in at least 20 characters.',
    ]);
    expect(await page.inputValue('#package')).toBe('../etc');
    const count = async () => Number((await herald.ctx.pool.query('select count(*) as n from herald.takedown_requests')).rows[0].n);
    expect(await count()).toBe(0);
    await page.fill('#package', 'web-pkg');
    await page.fill('#name', 'Rights Holder');
    await page.fill('#email', 'legal@example.org');
    await page.fill('#reason', 'This package contains our copyrighted artwork without a licence.');
    await page.click('button[type=submit]');
    await page.waitForSelector('.notice');
    const notice = await page.textContent('.notice');
    const id = Number(/job (\d+)/.exec(notice ?? '')![1]);
    expect(await count()).toBe(1);
    const stored = (await herald.ctx.pool.query('select job_id, package, requester_email from herald.takedown_requests')).rows[0];
    expect(stored).toEqual({ job_id: id, package: 'web-pkg', requester_email: 'legal@example.org' });
    // The public job does not expose the requester.
    expect(JSON.stringify(await herald.jobs.get(id))).not.toContain('legal@example.org');
    await page.close();
  });

  it('/jobs/<unknown id> is a 404 page that says so, and /jobs/<not a number> a 400 page, with no script running and no console error', async () => {
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
    page.on('console', (m) => {
      // Chromium reports the document's own error status as a console error: that is the
      // status under test, not a script error.
      if (m.type() === 'error' && !(m.location().url === page.url() && /status of 40[04]/.test(m.text()))) errors.push(`console: ${m.text()}`);
    });
    const missing = await page.goto(`${herald.url}/jobs/987654321`);
    expect(missing!.status()).toBe(404);
    expect(await page.textContent('h1')).toBe('Job 987654321 not found');
    expect(await page.textContent('main')).toContain('There is no job 987654321.');
    expect(await page.$('[data-job]')).toBeNull();
    expect(await page.$('script')).toBeNull();
    expect(await page.getAttribute('meta[name="robots"]', 'content')).toBe('noindex, nofollow');
    for (const bad of ['abc', '0', '007', '1e3']) {
      const res = await page.goto(`${herald.url}/jobs/${bad}`);
      expect(res!.status(), bad).toBe(400);
      expect(await page.textContent('h1')).toBe('Not a job id');
      expect(await page.$('script')).toBeNull();
    }
    // A real job still gets the live page.
    const { job } = await herald.jobs.submit({ type: 'takedown', payload: { package: 'y' }, maxAttempts: 1 });
    expect((await page.goto(`${herald.url}/jobs/${job.id}`))!.status()).toBe(200);
    await page.waitForFunction(() => document.querySelector('#connection')?.textContent === 'live');
    expect(errors).toEqual([]);
    await page.close();
  });

  it('/events opened after events were published shows them, newest first, then new ones live', async () => {
    const before = await herald.ctx.log.emitMany(Array.from({ length: 5 }, (_, i) => ({ topic: 'hist:x', type: 'before', data: { i } })));
    const page = await browser.newPage();
    await page.goto(`${herald.url}/events`);
    await page.waitForFunction(() => document.querySelector('#connection')?.textContent === 'live');
    await page.waitForSelector(`#events li[data-id="${before[4]}"]`);
    const shown = async () => page.$$eval('#events li', (lis) => lis.map((li) => Number((li as HTMLElement).dataset.id)));
    expect((await shown()).slice(0, 5)).toEqual([...before].reverse());
    const [live] = await herald.ctx.log.emitMany([{ topic: 'hist:x', type: 'after' }]);
    await page.waitForSelector(`#events li[data-id="${live}"]`);
    expect((await shown()).slice(0, 6)).toEqual([live, ...[...before].reverse()]);
    await page.close();
  });

  it('/events keeps its filter and position in the address, and opening that address restores both', async () => {
    const since = (p: Page) => p.evaluate(() => Number(new URL(location.href).searchParams.get('since') ?? Number.NaN));
    const page = await browser.newPage();
    await page.goto(`${herald.url}/events`);
    await page.waitForFunction(() => document.querySelector('#connection')?.textContent === 'live');
    await page.fill('#topic', 'rt:a');
    await page.click('#filter button[type=submit]');
    await page.waitForFunction(() => new URL(location.href).searchParams.getAll('topic').join() === 'rt:a');
    await page.waitForFunction(() => document.querySelector('#connection')?.textContent === 'live');
    const [a1, b1] = await herald.ctx.log.emitMany([
      { topic: 'rt:a', type: 'one' },
      { topic: 'rt:b', type: 'other' },
    ]);
    await page.waitForSelector(`#events li[data-id="${a1}"]`);
    await page.waitForFunction((id) => Number(new URL(location.href).searchParams.get('since')) >= id, a1!);
    const saved = page.url();
    await page.close();

    // While no page is open: more than the history window of other events, then a match.
    await herald.ctx.log.emitMany(Array.from({ length: 60 }, (_, i) => ({ topic: 'rt:c', type: 'filler', data: { i } })));
    const [a2] = await herald.ctx.log.emitMany([{ topic: 'rt:a', type: 'two' }]);
    const again = await browser.newPage();
    await again.goto(saved);
    expect(await again.inputValue('#topic')).toBe('rt:a');
    await again.waitForSelector(`#events li[data-id="${a2}"]`);
    await again.waitForFunction(() => document.querySelector('#connection')?.textContent === 'live');
    // It resumed from the saved position: a1, 60 positions before the head, is shown as the
    // history before it, and the missed a2 after it; b1 (filtered out) is not.
    const ids = await again.$$eval('#events li', (lis) => lis.map((li) => Number((li as HTMLElement).dataset.id)));
    expect(ids).toEqual([a2, a1]);
    expect(ids).not.toContain(b1);
    // The address moves on as events arrive.
    const [a3] = await herald.ctx.log.emitMany([{ topic: 'rt:a', type: 'three' }]);
    await again.waitForSelector(`#events li[data-id="${a3}"]`);
    await again.waitForFunction((id) => Number(new URL(location.href).searchParams.get('since')) >= id, a3!);
    expect(await since(again)).toBeGreaterThanOrEqual(a3!);
    expect(new URL(again.url()).searchParams.getAll('topic')).toEqual(['rt:a']);
    await again.close();
  });

  it('every page renders at desktop and phone widths (screenshots in test-output/screenshots)', async () => {
    await until(async () => (await fetch(`${herald.url}/api/packages/web-pkg`)).status === 200, 20_000, 'the export of web-pkg');
    const page = await browser.newPage();
    const pages = { home: '/', events: '/events', package: '/packages/web-pkg', takedown: '/takedown' };
    for (const [name, path] of Object.entries(pages)) {
      for (const [label, width] of [
        ['desktop', 1280],
        ['phone', 375],
      ] as const) {
        await page.setViewportSize({ width, height: 900 });
        const res = await page.goto(`${herald.url}${path}`);
        expect(res!.status(), path).toBe(200);
        expect(await page.$$eval('h1', (h) => h.length)).toBe(1);
        // Nothing wider than the screen on a phone.
        expect(await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth + 1)).toBe(true);
        await page.screenshot({ path: `${SHOTS}${name}-${label}.png`, fullPage: true });
      }
    }
    await page.goto(`${herald.url}/`);
    await page.waitForFunction(() => /^\d+$/.test(document.querySelector('#head')?.textContent ?? ''));
    await page.goto(`${herald.url}/packages/web-pkg`);
    expect(await page.textContent('h1')).toBe('web-pkg');
    expect(await page.textContent('table')).toContain('1.0.0');
    // The live tail shows new events and can pause.
    await page.goto(`${herald.url}/events`);
    await page.waitForFunction(() => document.querySelector('#connection')?.textContent === 'live');
    const [id] = await herald.ctx.log.emitMany([{ topic: 'tail:x', type: 'hello', data: { n: 1 } }]);
    await page.waitForSelector(`#events li[data-id="${id}"]`);
    await page.click('#pause');
    await herald.ctx.log.emitMany([{ topic: 'tail:x', type: 'held' }]);
    await page.waitForFunction(() => document.querySelector('#pending')?.textContent === '1 new while paused');
    await page.click('#pause');
    await page.waitForFunction(() => document.querySelectorAll('#events li').length >= 2);
    await page.close();
  });
  it('the pages work under their policy: no violation on any page, the job page follows over WebSocket, and an injected inline script does not run', async () => {
    await until(async () => (await fetch(`${herald.url}/api/packages/web-pkg`)).status === 200, 20_000, 'the export of web-pkg');
    const { job } = await herald.jobs.submit({ type: 'takedown', payload: { package: 'csp' }, maxAttempts: 1 });
    const page = await browser.newPage();
    await page.addInitScript(() => {
      const w = window as unknown as { violations: string[] };
      w.violations = [];
      document.addEventListener('securitypolicyviolation', (e) => w.violations.push(`${e.effectiveDirective} ${e.blockedURI}`));
    });
    const sockets: string[] = [];
    page.on('websocket', (ws) => sockets.push(new URL(ws.url()).pathname));
    const violations = () => page.evaluate(() => (window as unknown as { violations: string[] }).violations);
    for (const path of ['/', '/events', '/packages/web-pkg', '/takedown']) {
      expect((await page.goto(`${herald.url}${path}`))!.status(), path).toBe(200);
      if (path === '/') await page.waitForFunction(() => /^\d+$/.test(document.querySelector('#head')?.textContent ?? ''));
      if (path === '/events') await page.waitForFunction(() => document.querySelector('#connection')?.textContent === 'live');
      // The stylesheet applied: the header is laid out as a flex row by /static/style.css.
      expect(await page.evaluate(() => getComputedStyle(document.querySelector('header')!).display), path).toBe('flex');
      expect(await violations(), path).toEqual([]);
    }
    await page.goto(`${herald.url}/jobs/${job.id}`);
    await page.waitForFunction(() => document.querySelector('#connection')?.textContent === 'live');
    expect(sockets).toContain('/v1/ws');
    expect(await violations()).toEqual([]);
    // What the policy is for: markup that slipped through would not run.
    const ran = await page.evaluate(() => {
      const s = document.createElement('script');
      s.textContent = 'window.injected = true';
      document.body.append(s);
      return (window as unknown as { injected?: boolean }).injected ?? false;
    });
    expect(ran).toBe(false);
    await page.waitForFunction(() => (window as unknown as { violations: string[] }).violations.length > 0);
    expect(await violations()).toEqual(['script-src-elem inline']);
    await page.close();
  });
});

describe.skipIf(!haveChromium)('the pages with private job topics (HERALD_PRIVATE_TOPIC_PREFIXES=job:,jobs)', () => {
  const SECRET = 'pages-test-secret-of-at-least-32-characters';
  let privDb: TestDatabase;
  let priv: TestHerald;
  const jwt = (subscribe: string[]) =>
    new SignJWT({ sub: 'alice', herald: { subscribe } }).setProtectedHeader({ alg: 'HS256' }).setExpirationTime('10m').sign(new TextEncoder().encode(SECRET));
  const connection = (p: Page) => p.textContent('#connection');

  beforeAll(async () => {
    privDb = await createTestDatabase();
    // No workers: the test moves the job through its statuses itself, while the page watches.
    priv = await startTestHerald(privDb.url, { port: await freePort(), workers: 0, privateTopicPrefixes: ['job:', 'jobs'], jwtSecrets: [SECRET] });
  });
  afterAll(async () => {
    await priv?.close();
    await privDb?.drop();
  });

  it('#token=<JWT granting job:<id>> follows the job live: status changes and log lines, each once, as the API has them', async () => {
    const { job } = await priv.jobs.submit({ type: 'takedown', payload: { package: 'private' }, maxAttempts: 1 });
    await priv.jobs.log(job.id, 'info', 'before the page opened');
    const page = await browser.newPage();
    const requests: string[] = [];
    page.on('request', (r) => requests.push(r.url()));
    await page.goto(`${priv.url}/jobs/${job.id}#token=${await jwt([`job:${job.id}`])}`);
    await page.waitForFunction(() => document.querySelector('#connection')?.textContent === 'live');
    expect(await page.getAttribute('[data-job]', 'data-status')).toBe('queued');
    expect(await page.isHidden('#access')).toBe(true);
    const [claimed] = (await priv.jobs.cycle([], ['run-1'], 60_000)).claimed;
    await page.waitForFunction(() => document.querySelector('[data-job]')?.getAttribute('data-status') === 'running');
    const live = await priv.jobs.log(job.id, 'info', 'a private line, live');
    await page.waitForSelector(`#log li[data-id="${live.id}"]`);
    await priv.jobs.cycle([{ jobId: job.id, runId: claimed!.runId, ok: true, result: {} }], [], 60_000);
    await page.waitForFunction(() => document.querySelector('[data-job]')?.getAttribute('data-status') === 'succeeded');
    const api = (await priv.jobs.logs(job.id, { since: 0, level: 'info', limit: 100 })).logs;
    expect(api.map((l) => l.message)).toEqual(['before the page opened', 'a private line, live']);
    const lines = await logLines(page);
    expect(lines.map((l) => Number(l.id))).toEqual(api.map((l) => l.id));
    expect(lines.map((l) => l.text.slice(9))).toEqual(['info before the page opened', 'info a private line, live']);
    expect(await connection(page)).toBe('live');
    expect(await page.isHidden('#access')).toBe(true);
    // The fragment itself is never requested: only the WebSocket carries the token, as ?token=.
    expect(requests.filter((u) => u.includes('#'))).toEqual([]);
    await page.close();
  });

  it('without a token (or with one for another job) it says the events are private and shows none live', async () => {
    const { job } = await priv.jobs.submit({ type: 'takedown', payload: { package: 'private-2' }, maxAttempts: 1 });
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`${priv.url}/jobs/${job.id}`);
    await page.waitForSelector('#access:not([hidden])');
    expect(await page.textContent('#access')).toBe(
      `This job's events are private: open the link with #token=<a token that may read job:${job.id}> to follow it live.`,
    );
    expect(await connection(page)).toBe('stopped: forbidden');
    // Nothing arrives live: a status change and a log line after the refusal stay off the page.
    const shownBefore = await logLines(page);
    await priv.jobs.cycle([], ['run-2'], 60_000);
    const line = await priv.jobs.log(job.id, 'info', 'not for anonymous eyes');
    await new Promise((r) => setTimeout(r, 1000));
    // The job's record and log lines are refused like its events: no status is shown at all.
    expect(await page.getAttribute('[data-job]', 'data-status')).toBeNull();
    expect(shownBefore).toEqual([]);
    expect(await logLines(page)).toEqual([]);
    expect(await page.$(`#log li[data-id="${line.id}"]`)).toBeNull();

    // A valid JWT for another job: refused too, with its own message.
    await page.goto(`${priv.url}/jobs/${job.id}#token=${await jwt(['job:999999'])}`);
    await page.reload();
    await page.waitForSelector('#access:not([hidden])');
    expect(await page.textContent('#access')).toBe(`The token in this link may not read job:${job.id}: ask for a link with a token that grants it.`);
    expect(await connection(page)).toBe('stopped: forbidden');
    expect(errors).toEqual([]);
    await page.close();
    // The page of a private job is served whether the job exists or not: the request has no
    // token (it is in the fragment), so its status must not tell a stranger which jobs exist.
    for (const id of [job.id, 999_999]) expect((await fetch(`${priv.url}/jobs/${id}`)).status).toBe(200);
  });

  it('/ shows the job counts though `jobs` is private: refused live, it refreshes them from /api/v1/status, without a page error', async () => {
    await priv.jobs.submit({ type: 'takedown', payload: { package: 'private-home' }, maxAttempts: 1 });
    const { queued } = await priv.jobs.counts();
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`${priv.url}/`);
    await page.waitForFunction((n) => document.querySelector('#jobs')?.textContent?.includes(`${n} queued`), queued);
    expect(errors).toEqual([]);
    await page.close();
  });

  it('/events?topic=job:<id> takes the #token too, keeps it in the address, and without it says the topic is private', async () => {
    const { job } = await priv.jobs.submit({ type: 'takedown', payload: { package: 'private-3' }, maxAttempts: 1 });
    const page = await browser.newPage();
    await page.goto(`${priv.url}/events?topic=job:${job.id}`);
    await page.waitForFunction(() => document.querySelector('#connection')?.textContent?.startsWith('stopped:'));
    expect(await connection(page)).toContain('open the link with #token=');
    const token = await jwt([`job:${job.id}`]);
    await page.goto(`${priv.url}/events?topic=job:${job.id}#token=${token}`);
    await page.reload();
    await page.waitForFunction(() => document.querySelector('#connection')?.textContent === 'live');
    await priv.jobs.log(job.id, 'info', 'shown on the tail');
    await page.waitForFunction(() => [...document.querySelectorAll('#events li')].some((li) => li.textContent?.includes('shown on the tail')));
    // The address moved on (since=) and kept the token.
    await page.waitForFunction(() => new URL(location.href).searchParams.has('since'));
    expect(new URL(page.url()).hash).toBe(`#token=${token}`);
    await page.close();
  });
});
