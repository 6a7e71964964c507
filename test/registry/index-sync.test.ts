/**
 * Index webhook and sync, against the real crates.io-index sample in test/fixtures and an index
 * generated here, through the real webhook, job queue and workers.
 */
import { createHmac } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { createPool } from '../../src/db/pool.ts';
import { createLogger } from '../../src/logger.ts';
import { indexPath, parseIndexFile } from '../../src/registry/index-format.ts';
import { DirectorySource } from '../../src/registry/index-source.ts';
import { syncIndex } from '../../src/registry/index-sync.ts';
import { verifySignature } from '../../src/registry/webhook.ts';
import { createTestDatabase } from '../support/db.ts';
import { startTestHerald, type TestHerald, until } from '../support/herald.ts';

// Real files from rust-lang/crates.io-index, kept in the repository (test/fixtures/SOURCE.md).
const SAMPLE = fileURLToPath(new URL('../fixtures/crates-index-sample', import.meta.url));
if (!existsSync(path.join(SAMPLE, 'config.json'))) throw new Error(`the crates.io-index sample is missing: expected ${SAMPLE} (test/fixtures/SOURCE.md)`);
const SECRET = 'webhook-secret-1';
const cleanups: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
});

const sign = (body: string, secret = SECRET) => `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;

let pushes = 0;
/** A signed delivery; by default a new push each time, as GitHub sends them (the same body again is a replay: webhook.test.ts). */
async function hook(h: TestHerald, body = `{"ref":"refs/heads/master","after":"${++pushes}"}`, headers: Record<string, string> = {}) {
  return fetch(`${h.url}/_/index-webhook`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-hub-signature-256': sign(body), ...headers },
    body,
  });
}

async function finished(h: TestHerald, jobId: number) {
  await until(async () => ['succeeded', 'failed'].includes((await h.jobs.get(jobId))!.status), 60_000, `job ${jobId}`);
  return (await h.jobs.get(jobId))!;
}

async function count(h: TestHerald, sql: string): Promise<number> {
  return Number((await h.ctx.pool.query(sql)).rows[0].n);
}
const indexEvents = (h: TestHerald) => count(h, `select count(*) as n from herald.events where type like 'index-%' or topic = 'index'`);

/** A generated index: names of every path shape, upper case and underscores, yanks, one malformed line. */
async function generateIndex(dir: string, packages: number): Promise<Map<string, string[]>> {
  const files = new Map<string, string[]>();
  const names = ['a', 'q', 'xy', 'z9', 'abc', 'k_v', 'Zed', 'Serde_JSON'];
  for (let i = 0; names.length < packages; i++) names.push(`pkg-${i.toString(36)}`);
  for (const [n, name] of names.entries()) {
    const lines = [1, 2, 3].map((v) =>
      JSON.stringify({
        name,
        vers: `${v}.0.${n % 5}`,
        deps: [],
        cksum: createHmac('sha256', 'c').update(`${name}${v}`).digest('hex'),
        features: {},
        yanked: (n + v) % 7 === 0,
      }),
    );
    files.set(indexPath(name), lines);
  }
  // One bad line in the middle of a good file.
  files.get(indexPath('abc'))!.splice(1, 0, '{"name":"abc","vers":');
  await writeIndex(dir, files);
  return files;
}

async function writeIndex(dir: string, files: Map<string, string[]>): Promise<void> {
  await writeFile(path.join(dir, 'config.json'), '{"dl":"http://localhost/dl","api":"http://localhost"}');
  for (const [p, lines] of files) {
    await mkdir(path.dirname(path.join(dir, p)), { recursive: true });
    await writeFile(path.join(dir, p), `${lines.join('\n')}\n`);
  }
}

describe('webhook signatures', () => {
  it("GitHub's published test vector verifies; near misses do not", () => {
    const body = Buffer.from('Hello, World!');
    const sig = 'sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17';
    expect(verifySignature(["It's a Secret to Everybody"], body, sig)).toBe(true);
    expect(verifySignature(['other', "It's a Secret to Everybody"], body, sig)).toBe(true); // rotation
    expect(verifySignature(['wrong'], body, sig)).toBe(false);
    expect(verifySignature(["It's a Secret to Everybody"], Buffer.from('Hello, World?'), sig)).toBe(false);
    expect(verifySignature(["It's a Secret to Everybody"], body, sig.slice(0, -2))).toBe(false);
    expect(verifySignature(["It's a Secret to Everybody"], body, undefined)).toBe(false);
  });

  it('wrong, missing, truncated and non-hex signatures are 401, an oversize body 413; nothing is stored or queued', async () => {
    const db = await createTestDatabase();
    cleanups.push(db.drop);
    const h = await startTestHerald(db.url, { indexWebhookSecrets: [SECRET, 'old-secret'], indexWebhookMaxBytes: 1024, workers: 0 });
    cleanups.push(h.close);
    const body = '{"zen":"hi"}';
    const cases: [Record<string, string>, string, number][] = [
      [{ 'x-hub-signature-256': sign(body, 'nope') }, body, 401],
      [{ 'x-hub-signature-256': '' }, body, 401],
      [{ 'x-hub-signature-256': sign(body).slice(0, 40) }, body, 401],
      [{ 'x-hub-signature-256': `sha256=${'z'.repeat(64)}` }, body, 401],
      [{ 'x-hub-signature-256': sign(body).replace('sha256=', 'sha1=') }, body, 401],
      [{ 'x-hub-signature-256': sign('x'.repeat(2000)) }, 'x'.repeat(2000), 413],
    ];
    for (const [headers, b, status] of cases) {
      const res = await fetch(`${h.url}/_/index-webhook`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: b });
      expect(res.status).toBe(status);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe(status === 401 ? 'unauthorized' : 'payload_too_large');
    }
    expect(await count(h, 'select count(*) as n from herald.jobs')).toBe(0);
    expect(await count(h, 'select count(*) as n from herald.webhook_deliveries')).toBe(0);
    // The rotated-out secret still verifies; a repeated delivery is acknowledged, not re-run.
    const first = await fetch(`${h.url}/_/index-webhook`, {
      method: 'POST',
      headers: { 'x-hub-signature-256': sign(body, 'old-secret'), 'x-github-delivery': 'd-1' },
      body,
    });
    expect(first.status).toBe(202);
    const { jobId } = (await first.json()) as { jobId: number };
    const again = await fetch(`${h.url}/_/index-webhook`, { method: 'POST', headers: { 'x-hub-signature-256': sign(body), 'x-github-delivery': 'd-1' }, body });
    expect(again.status).toBe(200);
    expect(await again.json()).toEqual({ jobId, duplicate: true });
    expect(await count(h, 'select count(*) as n from herald.jobs')).toBe(1);
  });
});

describe('index sync', () => {
  it('the real crates.io-index sample: every file, version and yank; upper-case names keyed lower-case; extra fields kept; a re-sync emits nothing', async () => {
    const db = await createTestDatabase();
    cleanups.push(db.drop);
    const h = await startTestHerald(db.url, { indexSourceUrl: `file://${SAMPLE}`, indexWebhookSecrets: [SECRET], workers: 1 });
    cleanups.push(h.close);
    const job = await finished(h, ((await (await hook(h)).json()) as { jobId: number }).jobId);
    expect(job.status).toBe('succeeded');
    expect(job.result).toMatchObject({ files: 24, versions: 295, added: 295, problems: 0 });
    expect(await count(h, 'select count(*) as n from herald.index_versions')).toBe(295);
    expect(await count(h, 'select count(*) as n from herald.index_versions where yanked')).toBe(5);
    const infl = (await h.ctx.pool.query(`select name, lname from herald.index_versions where lname = 'inflector' limit 1`)).rows[0];
    expect(infl).toEqual({ name: 'Inflector', lname: 'inflector' });
    expect(await count(h, `select count(*) as n from herald.index_versions where entry ? 'features2'`)).toBeGreaterThan(0);
    expect(await count(h, `select count(*) as n from herald.index_versions where vers like '%+%'`)).toBeGreaterThan(0);
    expect(await count(h, `select count(*) as n from herald.events where type = 'index-version'`)).toBe(295);
    // Every line of the sample re-parses and is stored verbatim.
    const lazy = (await readFile(path.join(SAMPLE, 'la/zy/lazy_static'), 'utf8')).trim().split('\n');
    expect(await count(h, `select count(*) as n from herald.index_versions where lname = 'lazy_static'`)).toBe(lazy.length);

    const before = await indexEvents(h);
    const second = await finished(h, ((await (await hook(h)).json()) as { jobId: number }).jobId);
    expect(second.result).toMatchObject({ added: 0, yanked: 0, unyanked: 0 });
    expect(await indexEvents(h)).toBe(before);
  });

  it('a generated index with every path shape and a malformed line; a yank upstream flips exactly one flag with one event; ten webhooks at once run at most two syncs', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'herald-index-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const files = await generateIndex(dir, 300);
    const db = await createTestDatabase();
    cleanups.push(db.drop);
    const h = await startTestHerald(db.url, { indexSourceUrl: `file://${dir}`, indexWebhookSecrets: [SECRET], workers: 2 });
    cleanups.push(h.close);

    const first = await finished(h, ((await (await hook(h)).json()) as { jobId: number }).jobId);
    expect(first.result).toMatchObject({ files: 300, versions: 900, added: 900, problems: 1 });
    const logs = await h.jobs.logs(first.id, { since: 0, level: 'warn', limit: 100 });
    expect(logs.logs.map((l) => l.message)).toEqual([`${indexPath('abc')}:2: not valid JSON (skipped)`]);
    const expectedYanked = [...files.values()].flat().filter((l) => l.includes('"yanked":true')).length;
    expect(await count(h, 'select count(*) as n from herald.index_versions where yanked')).toBe(expectedYanked);
    expect(await count(h, `select count(*) as n from herald.index_versions where lname = 'serde_json' and name = 'Serde_JSON'`)).toBe(3);

    // No change upstream: nothing changes, nothing is emitted.
    const quiet = await indexEvents(h);
    const second = await finished(h, ((await (await hook(h)).json()) as { jobId: number }).jobId);
    expect(second.result).toMatchObject({ added: 0, yanked: 0, unyanked: 0 });
    expect(await indexEvents(h)).toBe(quiet);

    // One yank upstream: one flag, one change event (plus the summary on `index`).
    const lines = files.get(indexPath('xy'))!;
    const target = lines.findIndex((l) => l.includes('"yanked":false'));
    const vers = JSON.parse(lines[target]!).vers as string;
    lines[target] = lines[target]!.replace('"yanked":false', '"yanked":true');
    await writeIndex(dir, files);
    const head = h.ctx.hub.head;
    const third = await finished(h, ((await (await hook(h)).json()) as { jobId: number }).jobId);
    expect(third.result).toMatchObject({ added: 0, yanked: 1, unyanked: 0 });
    const events = (
      await h.ctx.pool.query(`select topic, type, data from herald.events where id > $1 and (type like 'index-%' or topic = 'index') order by id`, [head])
    ).rows;
    expect(events).toEqual([
      { topic: 'package:xy', type: 'index-yank', data: { name: 'xy', vers, yanked: true } },
      { topic: 'index', type: 'synced', data: expect.objectContaining({ yanked: 1, added: 0 }) },
    ]);

    // Ten webhooks at once: one sync runs, at most one more waits; the rest fold into it. The
    // table is held locked meanwhile, so no sync can finish while the webhooks arrive (on a
    // loaded machine one could, and a third job would be right, but prove nothing).
    const jobsBefore = await count(h, `select count(*) as n from herald.jobs where type = 'index-sync'`);
    const holder = createPool(db.url, 2, createLogger('silent'));
    cleanups.push(() => holder.end());
    const lock = await holder.connect();
    await lock.query('begin');
    await lock.query('lock table herald.index_versions in access exclusive mode');
    const answers = await Promise.all(Array.from({ length: 10 }, (_, i) => hook(h, `{"n":${i}}`).then((r) => r.json() as Promise<{ jobId: number }>)));
    await lock.query('rollback');
    lock.release();
    const ids = new Set(answers.map((a) => a.jobId));
    expect(ids.size).toBeLessThanOrEqual(2);
    for (const id of ids) expect((await finished(h, id)).status).toBe('succeeded');
    expect(await count(h, `select count(*) as n from herald.jobs where type = 'index-sync'`)).toBe(jobsBefore + ids.size);
    expect(await count(h, 'select count(*) as n from herald.index_versions where yanked')).toBe(expectedYanked + 1);
  });

  it('a sparse HTTP index: conditional requests, 304s on the second sync, same state', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'herald-sparse-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const files = await generateIndex(dir, 40);
    const statuses: number[] = [];
    const server = http.createServer(async (req, res) => {
      const p = decodeURIComponent(new URL(req.url!, 'http://x').pathname).replace(/^\/index\//, '');
      if (!files.has(p)) {
        res.writeHead(404).end();
        statuses.push(404);
        return;
      }
      const body = `${files.get(p)!.join('\n')}\n`;
      const etag = `"${createHmac('sha256', 'e').update(body).digest('hex').slice(0, 16)}"`;
      if (req.headers['if-none-match'] === etag) {
        res.writeHead(304, { etag }).end();
        statuses.push(304);
        return;
      }
      res.writeHead(200, { etag, 'content-type': 'text/plain' }).end(body);
      statuses.push(200);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    cleanups.push(() => new Promise((r) => server.close(r)));
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/index/`;
    const db = await createTestDatabase();
    cleanups.push(db.drop);
    const names = [...files.values()].map((ls) => JSON.parse(ls.find((l) => l.endsWith('}'))!).name as string);
    const h = await startTestHerald(db.url, { indexSourceUrl: base, indexNames: names, indexFetchConcurrency: 4, indexWebhookSecrets: [SECRET], workers: 1 });
    cleanups.push(h.close);
    const first = await finished(h, ((await (await hook(h)).json()) as { jobId: number }).jobId);
    expect(first.result).toMatchObject({ files: 40, unchangedFiles: 0, versions: 120, added: 120, problems: 1 });
    expect(statuses.filter((s) => s === 200)).toHaveLength(40);
    statuses.length = 0;
    const second = await finished(h, ((await (await hook(h)).json()) as { jobId: number }).jobId);
    expect(second.result).toMatchObject({ files: 40, unchangedFiles: 40, added: 0 });
    expect(statuses).toEqual(Array(40).fill(304));
    expect(await count(h, 'select count(*) as n from herald.index_versions')).toBe(120);
  });

  it('two syncs at once from two processes (two pools) leave the same state and emit each change once', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'herald-race-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    await generateIndex(dir, 120);
    const db = await createTestDatabase();
    cleanups.push(db.drop);
    const pools = [createPool(db.url, 4, createLogger('silent')), createPool(db.url, 4, createLogger('silent'))];
    cleanups.push(() => Promise.all(pools.map((p) => p.end())));
    const quiet = async () => undefined;
    const results = await Promise.all(pools.map((p) => syncIndex(p, new DirectorySource(dir), quiet)));
    expect(results[0]!.added + results[1]!.added).toBe(360);
    const { rows } = await pools[0]!.query(
      `select count(*)::int as n, count(distinct topic || (data->>'vers'))::int as d from herald.events where type = 'index-version'`,
    );
    expect(rows[0]).toEqual({ n: 360, d: 360 });
    expect((await pools[0]!.query('select count(*)::int as n from herald.index_versions')).rows[0].n).toBe(360);
  });

  it('the periodic fallback sync runs without any webhook', async () => {
    const db = await createTestDatabase();
    cleanups.push(db.drop);
    const h = await startTestHerald(db.url, { indexSourceUrl: `file://${SAMPLE}`, indexSyncIntervalMs: 200, workers: 1 });
    cleanups.push(h.close);
    await until(
      async () => (await count(h, `select count(*) as n from herald.jobs where type = 'index-sync' and status = 'succeeded'`)) >= 1,
      20_000,
      'a periodic sync',
    );
    expect(await count(h, 'select count(*) as n from herald.index_versions')).toBe(295);
    // Requests while one is queued fold into it: never more than one waiting.
    expect(await count(h, `select count(*) as n from herald.jobs where type = 'index-sync' and status = 'queued'`)).toBeLessThanOrEqual(1);
  });

  it('parses tolerantly: each problem names its file and line', () => {
    const { entries, problems } = parseIndexFile(
      '3/a/abc',
      [
        `{"name":"abc","vers":"1.0.0","cksum":"${'a'.repeat(64)}","yanked":false}`,
        'garbage',
        '[1]',
        `{"name":"other","vers":"1","cksum":"${'a'.repeat(64)}","yanked":false}`,
        '{"name":"abc","vers":"2","cksum":"short","yanked":false}',
      ].join('\n'),
    );
    expect(entries.map((e) => e.vers)).toEqual(['1.0.0']);
    expect(problems.map((p) => [p.line, p.message])).toEqual([
      [2, 'not valid JSON'],
      [3, 'not a JSON object'],
      [4, 'name other does not belong in 3/a/abc'],
      [5, 'bad or missing cksum'],
    ]);
  });
});
