/**
 * The exporter against a filesystem bucket and a real S3 protocol server (s3rver), driven
 * by real jobs through the HTTP API.
 */
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';
// @ts-expect-error s3rver ships no types
import S3rver from 's3rver';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Bucket } from '../../src/exporter/bucket.ts';
import { FsBucket } from '../../src/exporter/bucket-fs.ts';
import { Exporter, LATEST } from '../../src/exporter/exporter.ts';
import { openBucket } from '../../src/exporter/open-bucket.ts';
import { buildArchive } from '../../src/registry/archive.ts';
import { createTestDatabase } from '../support/db.ts';
import { startTestHerald, type TestHerald, until } from '../support/herald.ts';

const NEW = '2026.11.22';
const OLD = '2026.11.21';
const cleanups: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
});

async function tmp(prefix: string): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** A bucket URL for each backend: a directory, or a bucket on a fresh s3rver. */
async function bucketUrl(kind: 'fs' | 's3'): Promise<string> {
  const dir = await tmp(`herald-bucket-${kind}-`);
  if (kind === 'fs') return `file://${dir}`;
  const server = new S3rver({ port: 0, address: '127.0.0.1', silent: true, directory: dir, configureBuckets: [{ name: 'registry' }] });
  const { port } = (await server.run()) as { port: number };
  cleanups.push(() => server.close());
  return `s3://S3RVER:S3RVER@registry/export?endpoint=http://127.0.0.1:${port}`;
}

describe.each(['fs', 's3'] as const)('exporter with the %s bucket', (kind) => {
  let herald: TestHerald;
  let bucket: Bucket;
  let token: string;
  let trustee: string;
  let url: string;
  /** The exporter the tests wait on (replaced by the kill test). */
  let current: Exporter;

  beforeAll(async () => {
    const db = await createTestDatabase();
    cleanups.push(db.drop);
    url = await bucketUrl(kind);
    herald = await startTestHerald(db.url, { workers: 2, exportBucketUrl: url, runtimeVersion: NEW, exporter: true });
    cleanups.push(herald.close);
    bucket = herald.bucket;
    current = herald.exporter;
    token = await herald.tokens.create('alice', false);
    trustee = await herald.tokens.create('root', true);
  });

  async function job(path: string, body: unknown, as = token): Promise<void> {
    const res = await fetch(`${herald.url}/api/v1/${path}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${as}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    expect(res.status).toBe(201);
    await finish(((await res.json()) as { jobId: number }).jobId);
  }

  async function finish(jobId: number, waitForExport = true): Promise<void> {
    await until(
      async () => ((await (await fetch(`${herald.url}/api/v1/jobs/${jobId}`)).json()) as { status: string }).status === 'succeeded',
      20_000,
      `job ${jobId}`,
    );
    // The exporter has caught up once its cursor reaches the head.
    if (waitForExport) await until(() => current.position >= herald.ctx.hub.head, 20_000, 'exporter to catch up');
  }

  const archives = new Map<string, Buffer>();
  async function publish(name: string, version: string, waitForExport = true): Promise<void> {
    const body = await buildArchive({
      'manifest.json': JSON.stringify({ name, version, license: 'MIT', dependencies: {} }),
      'index.js': `// ${name}@${version}\n`,
    });
    archives.set(`${name}@${version}`, body);
    const res = await fetch(`${herald.url}/api/v1/publish?name=${name}&version=${version}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/gzip' },
      body: new Uint8Array(body),
    });
    expect(res.status).toBe(201);
    await finish(((await res.json()) as { jobId: number }).jobId, waitForExport);
  }

  /** Every object under a prefix, JSON decoded. */
  async function snapshot(prefix: string) {
    const out: Record<string, { json?: unknown; body: Buffer; contentType: string; contentEncoding?: string; cacheControl: string }> = {};
    for (const key of await bucket.list(prefix)) {
      const o = (await bucket.get(key))!;
      out[key.slice(prefix.length + 1)] = {
        body: o.body,
        json: o.meta.contentEncoding === 'gzip' ? JSON.parse(gunzipSync(o.body).toString()) : undefined,
        contentType: o.meta.contentType,
        contentEncoding: o.meta.contentEncoding,
        cacheControl: o.meta.cacheControl,
      };
    }
    return out;
  }

  async function expectBoth(check: (s: Awaited<ReturnType<typeof snapshot>>) => void) {
    const latest = await snapshot(LATEST);
    const own = await snapshot(NEW);
    check(latest);
    expect(Object.keys(own).sort()).toEqual(Object.keys(latest).sort());
    for (const k of Object.keys(own)) expect(own[k]!.body.equals(latest[k]!.body)).toBe(true);
  }

  it('publish, retract, publish again, advisory, unpublish, moderate: the bucket holds exactly the right objects, bytes and headers under both prefixes', async () => {
    await publish('pad', '1.0.0');
    await expectBoth((s) => {
      expect(Object.keys(s).sort()).toEqual(['api/archives/pad-1.0.0.tar.gz', 'api/packages/pad', 'api/packages/pad/advisories']);
      expect(s['api/archives/pad-1.0.0.tar.gz']!.body.equals(archives.get('pad@1.0.0')!)).toBe(true);
      expect(s['api/archives/pad-1.0.0.tar.gz']).toMatchObject({ contentType: 'application/gzip', cacheControl: 'public, max-age=31536000, immutable' });
      expect(s['api/packages/pad']).toMatchObject({ contentType: 'application/json', contentEncoding: 'gzip', cacheControl: 'public, max-age=60' });
      expect(s['api/packages/pad']!.json).toMatchObject({
        name: 'pad',
        latest: '1.0.0',
        versions: [{ version: '1.0.0', archive: '/api/archives/pad-1.0.0.tar.gz', retracted: false, manifest: { name: 'pad', version: '1.0.0' } }],
      });
      expect(s['api/packages/pad/advisories']!.json).toEqual({ name: 'pad', advisories: [] });
    });

    await job('retract', { name: 'pad', version: '1.0.0' });
    await expectBoth((s) => expect(s['api/packages/pad']!.json).toMatchObject({ latest: null, versions: [{ version: '1.0.0', retracted: true }] }));

    await publish('pad', '1.1.0');
    await expectBoth((s) => {
      expect(Object.keys(s).sort()).toEqual([
        'api/archives/pad-1.0.0.tar.gz',
        'api/archives/pad-1.1.0.tar.gz',
        'api/packages/pad',
        'api/packages/pad/advisories',
      ]);
      expect(s['api/packages/pad']!.json).toMatchObject({ latest: '1.1.0', versions: [{ version: '1.0.0' }, { version: '1.1.0' }] });
    });

    await job('advisory', { name: 'pad', id: 'PAD-1', summary: 'bad padding', affected: '<1.1.0' });
    await expectBoth((s) =>
      expect(s['api/packages/pad/advisories']!.json).toMatchObject({ advisories: [{ id: 'PAD-1', affected: '<1.1.0', summary: 'bad padding' }] }),
    );

    await job('unpublish', { name: 'pad', version: '1.0.0', reason: 'mistake' });
    await expectBoth((s) => {
      expect(Object.keys(s).sort()).toEqual(['api/archives/pad-1.1.0.tar.gz', 'api/packages/pad', 'api/packages/pad/advisories']);
      expect(s['api/packages/pad']!.json).toMatchObject({ versions: [{ version: '1.1.0' }] });
    });

    // Moderated: absent from the API, but the objects stay through the grace period.
    await job('moderate', { name: 'pad', reason: 'takedown' }, trustee);
    expect(Object.keys(await snapshot(LATEST))).toHaveLength(3);
  });

  it('a re-export with nothing changed writes zero objects', async () => {
    await publish('steady', '2.0.0');
    const counts = await herald.exporter.exportAll();
    expect(counts.written).toBe(0);
    expect(counts.skipped).toBeGreaterThan(0);
  });

  it('serves the exported API with stored headers, ETag and 304; 404 for an unknown package', async () => {
    const res = await fetch(`${herald.url}/api/packages/steady`, { headers: { 'accept-encoding': 'gzip' } });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^application\/json/);
    expect(res.headers.get('cache-control')).toBe('public, max-age=60');
    const etag = res.headers.get('etag')!;
    expect(etag).toMatch(/^"[0-9a-f]{64}"$/);
    expect(await res.json()).toMatchObject({ name: 'steady', latest: '2.0.0' }); // fetch decodes gzip
    const again = await fetch(`${herald.url}/api/packages/steady`, { headers: { 'if-none-match': etag } });
    expect(again.status).toBe(304);
    const archive = await fetch(`${herald.url}/api/archives/steady-2.0.0.tar.gz`);
    expect(Buffer.from(await archive.arrayBuffer()).equals(archives.get('steady@2.0.0')!)).toBe(true);
    expect((await fetch(`${herald.url}/api/packages/nope`)).status).toBe(404);
    // fetch would normalise %2e%2e away; send the bytes as an attacker would.
    const raw = (p: string) =>
      new Promise<number>((resolve, reject) =>
        http
          .get({ host: '127.0.0.1', port: new URL(herald.url).port, path: p }, (r) => {
            r.resume();
            resolve(r.statusCode!);
          })
          .on('error', reject),
      );
    expect(await raw('/api/packages/%2e%2e')).toBe(400);
    expect(await raw('/api/packages/%2E%2E%2Fetc')).toBe(400);
    expect(await raw('/api/archives/..%2Fx.tar.gz')).toBe(400);
    expect(await raw('/api/archives/%00.tar.gz')).toBe(400);
  });

  it('an exporter killed mid-run resumes from its cursor and the bucket ends correct', async () => {
    await herald.exporter.stop();
    const cursorNow = async () =>
      Number((await herald.ctx.pool.query(`select position from herald.export_cursors where consumer = $1`, [`exporter:${NEW}`])).rows[0].position);
    const before = await cursorNow();
    // A bucket that dies from the third write on, like a process killed mid-run.
    let puts = 0;
    const dying: Bucket = {
      id: bucket.id,
      put: async (k, b, m) => {
        if (++puts >= 3) throw new Error('killed');
        return bucket.put(k, b, m);
      },
      get: (k) => bucket.get(k),
      delete: (k) => bucket.delete(k),
      list: (p) => bucket.list(p),
    };
    const first = new Exporter(herald.exporter.deps, dying, { runtimeVersion: NEW, keepVersions: 3, graceMs: 86_400_000 });
    await first.start();
    await publish('crash-a', '1.0.0', false);
    await until(() => puts >= 3, 10_000, 'the dying write');
    await first.stop();
    expect(await cursorNow()).toBe(before); // not advanced past the failed work

    const second = new Exporter(herald.exporter.deps, bucket, { runtimeVersion: NEW, keepVersions: 3, graceMs: 86_400_000 });
    await second.start();
    current = second;
    cleanups.push(() => second.stop());
    await until(() => second.position >= herald.ctx.hub.head, 20_000, 'the restarted exporter to catch up');
    expect(await cursorNow()).toBeGreaterThan(before);
    const s = await snapshot(LATEST);
    expect(s['api/archives/crash-a-1.0.0.tar.gz']!.body.equals(archives.get('crash-a@1.0.0')!)).toBe(true);
    expect(s['api/packages/crash-a']!.json).toMatchObject({ latest: '1.0.0' });
  });

  it("two releases exporting at once: latest/ ends with the newer release's bytes everywhere; each prefix is complete", async () => {
    for (const n of ['r1', 'r2', 'r3', 'r4']) await publish(n, '1.0.0');
    const format = (v: string) => (_key: string, value: unknown) => ({ ...(value as object), format: v });
    const old = new Exporter(herald.exporter.deps, bucket, { runtimeVersion: OLD, keepVersions: 3, graceMs: 0, transformJson: format('old') });
    const neu = new Exporter(herald.exporter.deps, bucket, { runtimeVersion: NEW, keepVersions: 3, graceMs: 0, transformJson: format('new') });
    await Promise.all([old.exportAll(), neu.exportAll(), old.exportAll()]);
    const latest = await snapshot(LATEST);
    // Every exportable package (moderated `pad` is left for GC, not re-rendered).
    const jsonKeys = Object.keys(latest).filter((k) => latest[k]!.json && !k.includes('/pad'));
    expect(jsonKeys.length).toBeGreaterThanOrEqual(12);
    for (const k of jsonKeys) expect((latest[k]!.json as { format: string }).format, k).toBe('new');
    const oldPrefix = await snapshot(OLD);
    for (const n of ['r1', 'r2', 'r3', 'r4']) {
      expect((oldPrefix[`api/packages/${n}`]!.json as { format: string }).format).toBe('old');
      expect(oldPrefix[`api/archives/${n}-1.0.0.tar.gz`]).toBeDefined();
    }
    // The old release running again changes nothing under latest/.
    await old.exportAll();
    for (const k of jsonKeys) expect(((await snapshot(LATEST))[k]!.json as { format: string }).format).toBe('new');
  });

  it('GC: old release prefixes beyond N go; a moderated package stays through the grace period and goes after it', async () => {
    let clock = new Date();
    for (const v of ['2026.11.18', '2026.11.19', '2026.11.20']) {
      await new Exporter(herald.exporter.deps, bucket, { runtimeVersion: v, keepVersions: 3, graceMs: 0 }).exportAll();
    }
    const gcer = new Exporter(herald.exporter.deps, bucket, { runtimeVersion: NEW, keepVersions: 3, graceMs: 86_400_000, now: () => clock });
    const first = await gcer.gc();
    // Prefixes by version: 2026.11.22, .21, .20 kept; .19 and .18 removed.
    expect(first.deletedPrefixes.sort()).toEqual(['2026.11.18', '2026.11.19']);
    expect(await bucket.list('2026.11.18')).toEqual([]);
    expect((await bucket.list('2026.11.20')).length).toBeGreaterThan(0);
    // `pad` was moderated in the first test: within the grace period its objects stay.
    expect(await bucket.list(`${LATEST}/api/packages/pad`)).not.toEqual([]);
    clock = new Date(Date.now() + 2 * 86_400_000);
    await gcer.gc();
    expect((await bucket.list(LATEST)).filter((k) => k.includes('/pad'))).toEqual([]);
    expect((await bucket.list(NEW)).filter((k) => k.includes('/pad'))).toEqual([]);
    expect((await bucket.list(LATEST)).filter((k) => k.includes('/steady')).length).toBe(3);
    expect(first.strays).toEqual([]);
  });

  it('keys that could escape the bucket are never written', async () => {
    for (const key of ['../x', 'latest/../../x', 'latest/%2e%2e/x', 'a\0b', 'latest//x', '/abs', 'latest/./x', 'latest/a\\b']) {
      await expect(
        bucket.put(key, Buffer.from('x'), { contentType: 'text/plain', cacheControl: 'no-cache', sha256: '', writerVersion: NEW }),
      ).rejects.toMatchObject({ code: 'HERALD_ERR_BAD_REQUEST' });
    }
    if (kind === 'fs') {
      const parent = path.dirname(new URL(url).pathname);
      expect((await readdir(parent)).filter((f) => f === 'x')).toEqual([]);
    }
  });
});

describe('bucket URLs and rollback serving', () => {
  it('rejects unknown schemes and serves a release prefix for a rollback', async () => {
    await expect(openBucket('ftp://x')).rejects.toMatchObject({ code: 'HERALD_ERR_CONFIG' });
    const dir = await tmp('herald-rollback-');
    const fsb = new FsBucket(dir);
    await fsb.put(`${OLD}/api/packages/rb`, Buffer.from('{"name":"rb","from":"old"}'), {
      contentType: 'application/json',
      cacheControl: 'public, max-age=60',
      sha256: 'a'.repeat(64),
      writerVersion: OLD,
    });
    const db = await createTestDatabase();
    cleanups.push(db.drop);
    const h = await startTestHerald(db.url, { exportBucketUrl: `file://${dir}`, exportServePrefix: OLD });
    cleanups.push(h.close);
    const res = await fetch(`${h.url}/api/packages/rb`);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ name: 'rb', from: 'old' });
  });
});
