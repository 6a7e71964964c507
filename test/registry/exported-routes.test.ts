/**
 * Serving the exported API over real HTTP: content negotiation on Accept-Encoding (objects
 * are stored gzip-encoded), one ETag per representation, and 304 for each. Raw node:http
 * requests, because fetch always sends its own Accept-Encoding and decodes the body.
 */
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FsBucket } from '../../src/exporter/bucket-fs.ts';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';
import { startTestHerald, type TestHerald } from '../support/herald.ts';

const JSON_TEXT = JSON.stringify({ name: 'neg', latest: '1.0.0', versions: [{ version: '1.0.0', note: 'x'.repeat(2000) }] });
const GZIPPED = gzipSync(JSON_TEXT, { level: 9 });
const ARCHIVE = gzipSync('not really a tar, but bytes that are served as they are');
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

let db: TestDatabase;
let dir: string;
let herald: TestHerald;

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'herald-serve-'));
  const bucket = new FsBucket(dir);
  await bucket.put('latest/api/packages/neg', GZIPPED, {
    contentType: 'application/json',
    contentEncoding: 'gzip',
    cacheControl: 'public, max-age=60',
    sha256: sha(GZIPPED),
    writerVersion: '0.1.0',
  });
  await bucket.put('latest/api/archives/neg-1.0.0.tar.gz', ARCHIVE, {
    contentType: 'application/gzip',
    cacheControl: 'public, max-age=31536000, immutable',
    sha256: sha(ARCHIVE),
    writerVersion: '0.1.0',
  });
  db = await createTestDatabase();
  herald = await startTestHerald(db.url, { exportBucketUrl: `file://${dir}` });
});
afterAll(async () => {
  await herald?.close();
  await db?.drop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

/** GET with exactly these headers (none added). */
function get(p: string, headers: Record<string, string> = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port: new URL(herald.url).port, path: p, headers }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks) }));
      })
      .on('error', reject);
  });
}

describe('GET /api/packages/<name> and Accept-Encoding', () => {
  it('with no Accept-Encoding (any coding acceptable) sends the stored gzip bytes, their length and the bare hash as ETag', async () => {
    const r = await get('/api/packages/neg');
    expect(r.status).toBe(200);
    expect(r.headers['content-encoding']).toBe('gzip');
    expect(r.headers.vary).toMatch(/accept-encoding/i);
    expect(r.headers.etag).toBe(`"${sha(GZIPPED)}"`);
    expect(r.headers['content-length']).toBe(String(GZIPPED.length));
    expect(r.body.equals(GZIPPED)).toBe(true);
  });

  it.for(['gzip', 'gzip, deflate, br', 'br;q=1, gzip;q=0.5', 'x-gzip', 'GZIP', '*', 'br, *;q=0.1'])('Accept-Encoding %j gets gzip', async (ae) => {
    const r = await get('/api/packages/neg', { 'accept-encoding': ae });
    expect(r.headers['content-encoding']).toBe('gzip');
    expect(r.body.equals(GZIPPED)).toBe(true);
  });

  it.for(['identity', 'gzip;q=0', 'gzip;q=0, *', 'br', 'deflate, br', '*;q=0', ''])(
    'Accept-Encoding %j gets the decoded JSON with no Content-Encoding and its own ETag',
    async (ae) => {
      const r = await get('/api/packages/neg', { 'accept-encoding': ae });
      expect(r.status).toBe(200);
      expect(r.headers['content-encoding']).toBeUndefined();
      expect(r.headers['content-type']).toMatch(/^application\/json/);
      expect(r.headers.vary).toMatch(/accept-encoding/i);
      expect(r.headers['content-length']).toBe(String(Buffer.byteLength(JSON_TEXT)));
      expect(r.body.toString('utf8')).toBe(JSON_TEXT);
      expect(r.headers.etag).toBe(`"${sha(GZIPPED)}-identity"`);
    },
  );

  it('304 works for each representation, and only with its own ETag', async () => {
    const gz = `"${sha(GZIPPED)}"`;
    const plain = `"${sha(GZIPPED)}-identity"`;
    expect((await get('/api/packages/neg', { 'accept-encoding': 'gzip', 'if-none-match': gz })).status).toBe(304);
    expect((await get('/api/packages/neg', { 'if-none-match': `W/${gz}` })).status).toBe(304);
    const notModified = await get('/api/packages/neg', { 'accept-encoding': 'identity', 'if-none-match': plain });
    expect(notModified.status).toBe(304);
    expect(notModified.headers.etag).toBe(plain);
    expect(notModified.headers['content-encoding']).toBeUndefined();
    expect(notModified.body.length).toBe(0);
    // A tag of the other representation does not validate this one.
    const crossed = await get('/api/packages/neg', { 'accept-encoding': 'identity', 'if-none-match': gz });
    expect(crossed.status).toBe(200);
    expect(crossed.body.toString('utf8')).toBe(JSON_TEXT);
    expect((await get('/api/packages/neg', { 'accept-encoding': 'gzip', 'if-none-match': plain })).status).toBe(200);
  });

  it('an archive (stored with no Content-Encoding) is the same bytes for every Accept-Encoding, with no Vary', async () => {
    for (const ae of ['gzip', 'identity']) {
      const r = await get('/api/archives/neg-1.0.0.tar.gz', { 'accept-encoding': ae });
      expect(r.status).toBe(200);
      expect(r.headers['content-encoding']).toBeUndefined();
      expect(r.headers.vary).toBeUndefined();
      expect(r.headers.etag).toBe(`"${sha(ARCHIVE)}"`);
      expect(r.body.equals(ARCHIVE)).toBe(true);
    }
  });

  it('fetch (which sends gzip, deflate, br and decodes) reads the JSON', async () => {
    const res = await fetch(`${herald.url}/api/packages/neg`);
    expect(await res.json()).toEqual(JSON.parse(JSON_TEXT));
  });
});
