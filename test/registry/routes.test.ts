/**
 * The registry API's doors (issue 14): `Idempotency-Key` belongs to the user who sends it and
 * to the one request first sent with it; an archive hiding entries after its end-of-archive
 * marker is refused and stores nothing. Real HTTP, real workers, real Postgres.
 */
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildArchive } from '../../src/registry/archive.ts';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';
import { startTestHerald, type TestHerald, until } from '../support/herald.ts';
import { rawTar } from '../support/tar.ts';

let db: TestDatabase;
let herald: TestHerald;
let alice: string;
let carol: string;

beforeAll(async () => {
  db = await createTestDatabase();
  herald = await startTestHerald(db.url, { workers: 2 });
  alice = await herald.tokens.create('alice', false);
  carol = await herald.tokens.create('carol', false);
});
afterAll(async () => {
  await herald.close();
  await db.drop();
});

const manifest = (name: string, version: string) => JSON.stringify({ name, version, dependencies: {} });
const tarball = (name: string, version: string, extra: Record<string, string> = {}) => buildArchive({ 'manifest.json': manifest(name, version), ...extra });

interface Answer {
  status: number;
  body: { jobId?: number; status?: string; error?: { code: string; message: string; retryable: boolean } };
}

async function answer(res: Response): Promise<Answer> {
  return { status: res.status, body: (await res.json()) as Answer['body'] };
}

async function publish(token: string, name: string, version: string, archive: Buffer, key?: string): Promise<Answer> {
  return answer(
    await fetch(`${herald.url}/api/v1/publish?name=${name}&version=${version}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/gzip', ...(key ? { 'idempotency-key': key } : {}) },
      body: new Uint8Array(archive),
    }),
  );
}

async function post(route: string, token: string, body: unknown, key?: string): Promise<Answer> {
  return answer(
    await fetch(`${herald.url}/api/v1/${route}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', ...(key ? { 'idempotency-key': key } : {}) },
      body: JSON.stringify(body),
    }),
  );
}

async function finished(id: number) {
  await until(async () => ['succeeded', 'failed'].includes((await herald.jobs.get(id))!.status), 20_000, `job ${id}`);
  return (await herald.jobs.get(id))!;
}

async function published(token: string, name: string, version: string): Promise<void> {
  const a = await publish(token, name, version, await tarball(name, version));
  expect(a.status).toBe(201);
  expect((await finished(a.body.jobId!)).status).toBe('succeeded');
}

async function stored(): Promise<{ jobs: number; keys: number; packages: number; versions: number }> {
  const { rows } = await herald.ctx.pool.query(`
    select (select count(*) from herald.jobs)::int as jobs,
           (select count(*) from herald.idempotency_keys)::int as keys,
           (select count(*) from herald.packages)::int as packages,
           (select count(*) from herald.versions)::int as versions`);
  return rows[0];
}

const REUSED = {
  status: 422,
  body: {
    error: {
      code: 'idempotency_key_reused',
      message: 'this Idempotency-Key was first sent with a different request (another route, package or body): send a new key with a new request',
      retryable: false,
    },
  },
};

describe('Idempotency-Key', () => {
  it("is scoped per user: carol's key never answers alice's publish, which gets and runs its own job", async () => {
    await published(carol, 'carol-pkg', '1.0.0');
    const c = await post('retract', carol, { name: 'carol-pkg', version: '1.0.0' }, 'shared-key');
    expect(c.status).toBe(201);
    const a = await publish(alice, 'alice-pkg', '1.0.0', await tarball('alice-pkg', '1.0.0'), 'shared-key');
    expect(a.status).toBe(201);
    expect(a.body.jobId).not.toBe(c.body.jobId);
    const aliceJob = await finished(a.body.jobId!);
    expect(aliceJob).toMatchObject({ type: 'publish', status: 'succeeded', payload: { name: 'alice-pkg', version: '1.0.0' } });
    expect((await finished(c.body.jobId!)).type).toBe('retract');
    // Each one's retry gets its own job back.
    expect(await publish(alice, 'alice-pkg', '1.0.0', await tarball('alice-pkg', '1.0.0'), 'shared-key')).toEqual({
      status: 200,
      body: { jobId: a.body.jobId, status: 'succeeded' },
    });
    expect(await post('retract', carol, { name: 'carol-pkg', version: '1.0.0' }, 'shared-key')).toEqual({
      status: 200,
      body: { jobId: c.body.jobId, status: 'succeeded' },
    });
    const pkg = (await (await fetch(`${herald.url}/api/v1/packages/alice-pkg`)).json()) as { owners: string[]; versions: { version: string }[] };
    expect(pkg.owners).toEqual(['alice']);
    expect(pkg.versions.map((v) => v.version)).toEqual(['1.0.0']);
  });

  it('the same key with a different route, package or body is 422 idempotency_key_reused and stores nothing; the same request however written is 200', async () => {
    await published(alice, 'keyed', '1.0.0');
    await published(alice, 'keyed-too', '1.0.0');
    const r = await post('retract', alice, { name: 'keyed', version: '1.0.0' }, 'k-json');
    expect(r.status).toBe(201);
    // The same request: fields in another order, the default written out.
    expect(await post('retract', alice, { retracted: true, version: '1.0.0', name: 'keyed' }, 'k-json')).toEqual({
      status: 200,
      body: { jobId: r.body.jobId, status: expect.any(String) },
    });
    const before = await stored();
    expect(await post('retract', alice, { name: 'keyed', version: '1.0.0', retracted: false }, 'k-json')).toEqual(REUSED);
    expect(await post('unpublish', alice, { name: 'keyed', version: '1.0.0', reason: 'oops' }, 'k-json')).toEqual(REUSED);
    expect(await post('retract', alice, { name: 'keyed-too', version: '1.0.0' }, 'k-json')).toEqual(REUSED);
    expect(await publish(alice, 'keyed', '2.0.0', await tarball('keyed', '2.0.0'), 'k-json')).toEqual(REUSED);

    const archive = await tarball('keyed', '1.1.0');
    const p = await publish(alice, 'keyed', '1.1.0', archive, 'k-upload');
    expect(p.status).toBe(201);
    const during = await stored();
    expect(await publish(alice, 'keyed', '1.1.0', await tarball('keyed', '1.1.0', { 'README.md': 'other bytes' }), 'k-upload')).toEqual(REUSED);
    // The same archive as a multipart form is the same request.
    const form = new FormData();
    form.set('name', 'keyed');
    form.set('version', '1.1.0');
    form.set('archive', new Blob([new Uint8Array(archive)]), 'keyed-1.1.0.tar.gz');
    const multipart = await fetch(`${herald.url}/api/v1/publish`, {
      method: 'POST',
      headers: { authorization: `Bearer ${alice}`, 'idempotency-key': 'k-upload' },
      body: form,
    });
    expect(await answer(multipart)).toEqual({ status: 200, body: { jobId: p.body.jobId, status: expect.any(String) } });
    await finished(p.body.jobId!);
    expect(await stored()).toEqual({ ...during, versions: during.versions + 1 });
    expect(during).toEqual({ ...before, jobs: before.jobs + 1, keys: before.keys + 1 });
  });

  it('ten different requests racing with one key: exactly one gets a job, nine get 422; ten equal ones get one job', async () => {
    await published(alice, 'racer', '1.0.0');
    const before = await stored();
    const different = await Promise.all(Array.from({ length: 10 }, (_, i) => post('retract', alice, { name: 'racer', version: `1.0.${i}` }, 'k-race')));
    expect(different.filter((a) => a.status === 201)).toHaveLength(1);
    expect(different.filter((a) => a.status !== 201)).toEqual(Array(9).fill(REUSED));
    const equal = await Promise.all(
      Array.from({ length: 10 }, () => post('advisory', alice, { name: 'racer', id: 'A-1', summary: 's', affected: '<2' }, 'k-same')),
    );
    const ids = new Set(equal.map((a) => a.body.jobId));
    expect(ids.size).toBe(1);
    expect(equal.filter((a) => a.status === 201)).toHaveLength(1);
    expect(equal.filter((a) => a.status === 200)).toHaveLength(9);
    expect(await stored()).toMatchObject({ jobs: before.jobs + 2, keys: before.keys + 2 });
  });
});

describe('publish', () => {
  it('an archive hiding ../../../../tmp/x and a link to /etc/passwd after its end-of-archive marker fails its job as bad input and stores nothing', async () => {
    const hidden = Buffer.concat([
      rawTar([{ name: 'manifest.json', body: manifest('hidden-pkg', '1.0.0') }]),
      rawTar([
        { name: '../../../../tmp/x', body: 'pwned' },
        { name: 'link', type: '2', linkname: '/etc/passwd' },
      ]),
    ]);
    const before = await stored();
    const a = await publish(alice, 'hidden-pkg', '1.0.0', gzipSync(hidden));
    expect(a.status).toBe(201);
    const job = await finished(a.body.jobId!);
    expect(job).toMatchObject({ status: 'failed', attempts: 1, error: 'archive is not a valid tar: data after the end-of-archive marker' });
    expect(await stored()).toEqual({ ...before, jobs: before.jobs + 1 });
    expect((await fetch(`${herald.url}/api/v1/packages/hidden-pkg`)).status).toBe(404);
    expect((await fetch(`${herald.url}/api/v1/packages/hidden-pkg/1.0.0/archive`)).status).toBe(404);
  });
});
