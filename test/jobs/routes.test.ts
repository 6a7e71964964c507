/** The job API end to end: real HTTP, real workers, real WebSocket followers, real Postgres. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildArchive } from '../../src/registry/archive.ts';
import { rawTgz } from '../support/tar.ts';
import { blockPublishes } from '../support/blocker.ts';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';
import { startTestHerald, type TestHerald, until } from '../support/herald.ts';
import { openWs } from '../support/ws.ts';

let db: TestDatabase;
let herald: TestHerald;
let alice: string;
let bob: string;
let trustee: string;

beforeAll(async () => {
  db = await createTestDatabase();
  herald = await startTestHerald(db.url, { workers: 4, jobLeaseMs: 2000, maxArchiveBytes: 64 * 1024 });
  alice = await herald.tokens.create('alice', false);
  bob = await herald.tokens.create('bob', false);
  trustee = await herald.tokens.create('root', true);
});
afterAll(async () => {
  await herald.close();
  await db.drop();
});

const manifest = (name: string, version: string, extra: Record<string, unknown> = {}) =>
  JSON.stringify({ name, version, description: `the ${name} package`, license: 'MIT', dependencies: {}, ...extra });

async function tarball(name: string, version: string, extra: Record<string, unknown> = {}): Promise<Buffer> {
  return buildArchive({ 'manifest.json': manifest(name, version, extra), 'src/index.js': `export const v = ${JSON.stringify(version)};\n` });
}

async function publish(token: string | null, body: Buffer, name: string, version: string, headers: Record<string, string> = {}) {
  return fetch(`${herald.url}/api/v1/publish?name=${encodeURIComponent(name)}&version=${encodeURIComponent(version)}`, {
    method: 'POST',
    headers: { 'content-type': 'application/gzip', ...(token ? { authorization: `Bearer ${token}` } : {}), ...headers },
    body: new Uint8Array(body),
  });
}

async function post(path: string, token: string | null, body: unknown) {
  return fetch(`${herald.url}/api/v1/${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify(body),
  });
}

async function job(id: number) {
  return (await (await fetch(`${herald.url}/api/v1/jobs/${id}`)).json()) as {
    id: number;
    status: string;
    error: string | null;
    attempts: number;
    result: unknown;
  };
}

async function finished(id: number) {
  await until(async () => ['succeeded', 'failed'].includes((await job(id)).status), 20_000, `job ${id} to finish`);
  return job(id);
}

async function storeFingerprint(): Promise<string> {
  const { rows } = await herald.ctx.pool.query(
    `select (select count(*) from herald.packages) p, (select count(*) from herald.versions) v,
            (select coalesce(md5(string_agg(package || version || sha256 || retracted, ',' order by package, version)), '') from herald.versions) h,
            (select count(*) from herald.package_owners) o`,
  );
  return JSON.stringify(rows[0]);
}

describe('publish', () => {
  it('a real tarball: the job is followed live over WebSocket from its creation, logs and statuses in order, ending succeeded; polling gives the same lines', async () => {
    const { head } = (await (await fetch(`${herald.url}/v1/head`)).json()) as { head: number };
    const res = await publish(alice, await tarball('left-pad', '1.0.0'), 'left-pad', '1.0.0');
    expect(res.status).toBe(201);
    const { jobId } = (await res.json()) as { jobId: number };
    const ws = await openWs(herald.url);
    ws.send({ op: 'subscribe', topics: [`job:${jobId}`], since: head });
    await ws.waitFor((m) => m.op === 'event' && m.type === 'status' && (m.data as { status: string }).status === 'succeeded', 20_000);
    const events = ws.messages.filter((m) => m.op === 'event');
    const statuses = events.filter((e) => e.type === 'status').map((e) => (e.data as { status: string }).status);
    expect(statuses).toEqual(['queued', 'running', 'succeeded']);
    // Logs come between running and succeeded, in order.
    const kinds = events.map((e) => (e.type === 'status' ? (e.data as { status: string }).status : 'log'));
    expect(kinds[0]).toBe('queued');
    expect(kinds[1]).toBe('running');
    expect(kinds.at(-1)).toBe('succeeded');
    const logEvents = events.filter((e) => e.type === 'log').map((e) => e.data as { id: number; message: string });
    expect(logEvents.length).toBeGreaterThanOrEqual(3);
    expect(logEvents[0]!.message).toBe('publishing left-pad@1.0.0');
    // Polling the logs endpoint gives the same lines, byte for byte the same shape.
    const polled = (await (await fetch(`${herald.url}/api/v1/jobs/${jobId}/logs`)).json()) as { logs: unknown[]; next: number };
    expect(polled.logs).toEqual(logEvents);
    expect(polled.next).toBe(logEvents.at(-1)!.id);
    const since = (await (await fetch(`${herald.url}/api/v1/jobs/${jobId}/logs?since=${logEvents[0]!.id}&level=info`)).json()) as { logs: { id: number }[] };
    expect(since.logs.map((l) => l.id)).toEqual(
      logEvents
        .slice(1)
        .filter((l) => (l as unknown as { level: string }).level !== 'debug')
        .map((l) => l.id),
    );
    // The status event carries the job exactly as GET jobs/<id> returns it.
    const final = events.at(-1)!.data;
    expect(final).toEqual(await job(jobId));
    expect(final).toMatchObject({
      status: 'succeeded',
      attempts: 1,
      result: { name: 'left-pad', version: '1.0.0', sha256: expect.stringMatching(/^[0-9a-f]{64}$/) },
    });
    // The package is readable, with the archive's bytes.
    const pkg = (await (await fetch(`${herald.url}/api/v1/packages/left-pad`)).json()) as { owners: string[]; versions: { version: string; sha256: string }[] };
    expect(pkg.owners).toEqual(['alice']);
    expect(pkg.versions.map((v) => v.version)).toEqual(['1.0.0']);
    const archive = await fetch(`${herald.url}/api/v1/packages/left-pad/1.0.0/archive`);
    expect(archive.headers.get('x-checksum-sha256')).toBe(pkg.versions[0]!.sha256);
    ws.ws.close();
  });

  it('multipart upload works the same; a duplicate in flight returns 200 with the same id; Idempotency-Key makes retries safe', async () => {
    const form = new FormData();
    form.set('name', 'multi');
    form.set('version', '0.1.0');
    form.set('archive', new Blob([new Uint8Array(await tarball('multi', '0.1.0'))]), 'multi-0.1.0.tar.gz');
    const res = await fetch(`${herald.url}/api/v1/publish`, { method: 'POST', headers: { authorization: `Bearer ${alice}` }, body: form });
    expect(res.status).toBe(201);
    const { jobId } = (await res.json()) as { jobId: number };
    expect((await finished(jobId)).status).toBe('succeeded');

    const body = await tarball('multi', '0.2.0');
    const first = await publish(alice, body, 'multi', '0.2.0', { 'idempotency-key': 'k-123' });
    const again = await publish(alice, body, 'multi', '0.2.0', { 'idempotency-key': 'k-123' });
    const a = (await first.json()) as { jobId: number };
    const b = (await again.json()) as { jobId: number };
    expect(first.status).toBe(201);
    expect(again.status).toBe(200);
    expect(b.jobId).toBe(a.jobId);
    await finished(a.jobId);
    // After it finished, the same key still answers with the same job.
    const third = await publish(alice, body, 'multi', '0.2.0', { 'idempotency-key': 'k-123' });
    expect(third.status).toBe(200);
    expect(((await third.json()) as { jobId: number }).jobId).toBe(a.jobId);
  });
});

describe('locks', () => {
  it('two publishes of one package run one after the other; different packages run in parallel', async () => {
    const { head } = (await (await fetch(`${herald.url}/v1/head`)).json()) as { head: number };
    // Hold the versions table: every publish blocks inside its effects transaction.
    const blocker = await blockPublishes(db.url);
    const submit = async (name: string, version: string) =>
      ((await (await publish(alice, await tarball(name, version), name, version)).json()) as { jobId: number }).jobId;
    const a1 = await submit('lock-a', '1.0.0');
    const a2 = await submit('lock-a', '2.0.0');
    const b1 = await submit('lock-b', '1.0.0');
    await until(async () => (await job(a1)).status === 'running' && (await job(b1)).status === 'running', 10_000, 'a1 and b1 to run together');
    // One process claims one job at a time, the lowest runnable id first: b1 (a higher id
    // than a2) was claimed after a2 was passed over. One more claim makes it certain that a2
    // is still held back: c1 runs only after the claimer passed a2 again.
    const c1 = await submit('lock-c', '1.0.0');
    await until(async () => (await job(c1)).status === 'running', 10_000, 'c1 to run');
    // The log is in commit order: had a2 been claimed, its `running` would be there, before c1's.
    const { rows: events } = await herald.ctx.pool.query<{ topic: string; status: string }>(
      `select topic, data->>'status' as status from herald.events where topic = any($1) and type = 'status' and id > $2 order by id`,
      [[a2, b1, c1].map((id) => `job:${id}`), head],
    );
    const statuses = (id: number) => events.filter((e) => e.topic === `job:${id}`).map((e) => e.status);
    expect(statuses(b1)).toEqual(['queued', 'running']);
    expect(statuses(c1)).toEqual(['queued', 'running']);
    expect(statuses(a2)).toEqual(['queued']);
    expect((await job(a2)).status).toBe('queued');
    await blocker.release();
    for (const id of [a1, a2, b1, c1]) expect((await finished(id)).status).toBe('succeeded');
    const { rows } = await herald.ctx.pool.query<{ id: number; started_at: Date; finished_at: Date }>(
      'select id, started_at, finished_at from herald.jobs where id = any($1)',
      [[a1, a2]],
    );
    const byId = new Map(rows.map((r) => [Number(r.id), r]));
    expect(byId.get(a2)!.started_at.getTime()).toBeGreaterThanOrEqual(byId.get(a1)!.finished_at.getTime());
  });
});

describe('auth and permissions', () => {
  it("no token and a wrong token are 401; a publisher on someone else's package is 403; trustee-only paths refuse publishers", async () => {
    const before = await storeFingerprint();
    const body = await tarball('left-pad', '9.0.0');
    expect((await publish(null, body, 'left-pad', '9.0.0')).status).toBe(401);
    const wrong = await publish('hrld_not-a-real-token', body, 'left-pad', '9.0.0');
    expect(wrong.status).toBe(401);
    expect(await wrong.json()).toMatchObject({ error: { code: 'unauthorized' } });
    const forbidden = await publish(bob, body, 'left-pad', '9.0.0');
    expect(forbidden.status).toBe(403);
    expect(await forbidden.json()).toMatchObject({ error: { code: 'forbidden', message: expect.stringContaining('bob does not own left-pad') } });
    expect((await post('moderate', alice, { name: 'left-pad', reason: 'test' })).status).toBe(403);
    expect((await post('transfer', bob, { name: 'left-pad', newOwner: 'bob' })).status).toBe(403);
    expect((await post('unpublish', bob, { name: 'left-pad', version: '1.0.0', reason: 'mine' })).status).toBe(403);
    expect((await post('transfer', alice, { name: 'left-pad', newOwner: 'nobody' })).status).toBe(404);
    expect((await post('retract', alice, { name: 'no-such-package', version: '1.0.0' })).status).toBe(404);
    expect(await storeFingerprint()).toBe(before);
  });

  it('trustee and owner paths: retract, advisory, moderate, transfer, unpublish each change the store through a job', async () => {
    const run = async (path: string, token: string, body: unknown) => {
      const res = await post(path, token, body);
      expect(res.status).toBe(201);
      const done = await finished(((await res.json()) as { jobId: number }).jobId);
      expect(done.status, `${path}: ${done.error}`).toBe('succeeded');
    };
    const pkg = async () =>
      (await (await fetch(`${herald.url}/api/v1/packages/left-pad`)).json()) as {
        owners: string[];
        moderated: boolean;
        versions: { version: string; retracted: boolean }[];
        advisories: { id: string; affected: string }[];
      };
    await run('retract', alice, { name: 'left-pad', version: '1.0.0' });
    expect((await pkg()).versions[0]!.retracted).toBe(true);
    await run('advisory', trustee, { name: 'left-pad', id: 'HRLD-2026-1', summary: 'prototype pollution', affected: '<1.0.1' });
    expect((await pkg()).advisories).toEqual([expect.objectContaining({ id: 'HRLD-2026-1', affected: '<1.0.1' })]);
    await run('moderate', trustee, { name: 'left-pad', moderated: true, reason: 'takedown request' });
    expect((await pkg()).moderated).toBe(true);
    await run('moderate', trustee, { name: 'left-pad', moderated: false, reason: 'resolved' });
    await run('transfer', alice, { name: 'left-pad', newOwner: 'bob' });
    expect((await pkg()).owners).toEqual(['bob']);
    await run('unpublish', trustee, { name: 'left-pad', version: '1.0.0', reason: 'legal' });
    expect((await pkg()).versions).toEqual([]);
    // The number is never reused: its archive was served as immutable.
    const again = await publish(bob, await tarball('left-pad', '1.0.0'), 'left-pad', '1.0.0');
    expect(again.status).toBe(201);
    const failed = await finished(((await again.json()) as { jobId: number }).jobId);
    expect(failed.status).toBe('failed');
    expect(failed.error).toMatch(/never reused/);
    // A trustee who also owns a package may still act as a trustee on it.
    const own = await publish(trustee, await tarball('root-pkg', '1.0.0'), 'root-pkg', '1.0.0');
    expect((await finished(((await own.json()) as { jobId: number }).jobId)).status).toBe('succeeded');
    await run('moderate', trustee, { name: 'root-pkg', reason: 'trustee-owned' });
  });

  it('no token value ever appears in the logs', async () => {
    await publish('hrld_leaky-secret-token', Buffer.from('x'), 'x', '1.0.0');
    const logs = herald.logs.join('');
    for (const t of [alice, bob, trustee, 'hrld_leaky-secret-token']) expect(logs).not.toContain(t);
  });
});

describe('bad input', () => {
  const cases: {
    name: string;
    body: () => Promise<Buffer> | Buffer;
    pkg: string;
    version: string;
    expect: { status?: number; code?: string; failed?: RegExp };
  }[] = [
    { name: 'not gzip', body: () => Buffer.from('definitely not a tarball'), pkg: 'bad-a', version: '1.0.0', expect: { failed: /gzip/i } },
    {
      name: 'path traversal entry',
      body: () =>
        rawTgz([
          { name: 'manifest.json', body: manifest('bad-t', '1.0.0') },
          { name: '../../etc/evil', body: 'x' },
        ]),
      pkg: 'bad-t',
      version: '1.0.0',
      expect: { failed: /\.\./ },
    },
    {
      name: 'symlink out of the package',
      body: () =>
        rawTgz([
          { name: 'manifest.json', body: manifest('bad-s', '1.0.0') },
          { name: 'link', type: '2', linkname: '../../../etc/passwd' },
        ]),
      pkg: 'bad-s',
      version: '1.0.0',
      expect: { failed: /link/i },
    },
    { name: 'manifest version mismatch', body: () => tarball('bad-b', '1.0.0'), pkg: 'bad-b', version: '1.0.1', expect: { failed: /version/i } },
    { name: 'manifest name mismatch', body: () => tarball('other-name', '1.0.0'), pkg: 'bad-c', version: '1.0.0', expect: { failed: /name/i } },
    {
      name: 'manifest with bad semver',
      body: () => buildArchive({ 'manifest.json': JSON.stringify({ name: 'bad-d', version: '1.0', dependencies: {} }) }),
      pkg: 'bad-d',
      version: '1.0.0',
      expect: { failed: /semver|version/i },
    },
    { name: 'too big', body: () => Buffer.alloc(70 * 1024, 1), pkg: 'bad-e', version: '1.0.0', expect: { status: 413, code: 'payload_too_large' } },
    { name: 'bad name in the request', body: () => tarball('x', '1.0.0'), pkg: '../etc', version: '1.0.0', expect: { status: 400, code: 'bad_request' } },
    { name: 'bad version in the request', body: () => tarball('x', '1.0.0'), pkg: 'x', version: 'v1', expect: { status: 400, code: 'bad_request' } },
  ];

  it.for(cases)('$name: a clear 4xx or failed job, and the store unchanged', async (c) => {
    const before = await storeFingerprint();
    const res = await publish(alice, await c.body(), c.pkg, c.version);
    if (c.expect.status) {
      expect(res.status).toBe(c.expect.status);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe(c.expect.code);
    } else {
      expect(res.status).toBe(201);
      const done = await finished(((await res.json()) as { jobId: number }).jobId);
      expect(done.status).toBe('failed');
      expect(done.attempts).toBe(1); // bad input is not retried
      expect(done.error).toMatch(c.expect.failed!);
    }
    expect(await storeFingerprint()).toBe(before);
  });

  it('bad job ids, queries and bodies are 400/404', async () => {
    expect((await fetch(`${herald.url}/api/v1/jobs/abc`)).status).toBe(400);
    expect((await fetch(`${herald.url}/api/v1/jobs/999999`)).status).toBe(404);
    expect((await fetch(`${herald.url}/api/v1/jobs?status=exploded`)).status).toBe(400);
    expect((await fetch(`${herald.url}/api/v1/jobs/1/logs?level=loud`)).status).toBe(400);
    expect((await fetch(`${herald.url}/api/v1/jobs/1/logs?after=yesterday`)).status).toBe(400);
    expect((await post('unpublish', alice, { name: 'left-pad' })).status).toBe(400);
    expect((await post('advisory', alice, { name: 'left-pad', id: 'A', summary: 's', affected: 'not a range!' })).status).toBe(400);
    const raw = await fetch(`${herald.url}/api/v1/transfer`, {
      method: 'POST',
      headers: { authorization: `Bearer ${alice}`, 'content-type': 'application/json' },
      body: '{"name":',
    });
    expect(raw.status).toBe(400);
    expect((await fetch(`${herald.url}/api/v1/packages/..%2Fetc`)).status).toBe(400);
  });
});

describe('jobs listing, logs and status', () => {
  it('lists jobs by type and status with a since cursor; logs filter by level and after=; long lines are truncated and marked', async () => {
    const all = (await (await fetch(`${herald.url}/api/v1/jobs?type=publish&status=succeeded&limit=2`)).json()) as {
      jobs: { id: number; type: string; status: string }[];
      next: number;
    };
    expect(all.jobs.length).toBe(2);
    expect(all.jobs.every((j) => j.type === 'publish' && j.status === 'succeeded')).toBe(true);
    const rest = (await (await fetch(`${herald.url}/api/v1/jobs?type=publish&status=succeeded&since=${all.next}`)).json()) as { jobs: { id: number }[] };
    expect(rest.jobs.every((j) => j.id > all.next)).toBe(true);

    const id = all.jobs[0]!.id;
    const long = await herald.jobs.log(id, 'warn', 'é'.repeat(40_000));
    expect(long.truncated).toBe(true);
    expect(Buffer.byteLength(long.message)).toBeLessThanOrEqual(64 * 1024);
    const warn = (await (await fetch(`${herald.url}/api/v1/jobs/${id}/logs?level=warn`)).json()) as { logs: { id: number; level: string }[] };
    expect(warn.logs.map((l) => l.level)).toEqual(['warn']);
    const after = new Date(Date.parse(long.at) - 1).toISOString();
    const byTime = (await (await fetch(`${herald.url}/api/v1/jobs/${id}/logs?after=${after}`)).json()) as { logs: { id: number }[] };
    expect(byTime.logs.map((l) => l.id)).toEqual([long.id]);
  });

  it('/api/v1/status reports database, listener, workers and job counts', async () => {
    const res = await fetch(`${herald.url}/api/v1/status`);
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({
      status: 'ok',
      database: 'ok',
      listener: { state: 'listening' },
      workers: { state: 'running', size: 4 },
      jobs: { succeeded: expect.any(Number) },
    });
  });
});

describe('bearer tokens', () => {
  it("a request writes the token's last_used_at at most once a minute", async () => {
    const dave = await herald.tokens.create('dave', false);
    const lastUsed = async () =>
      (
        await herald.ctx.pool.query<{ last_used_at: Date | null; tx: string }>(
          `select last_used_at, xmin::text as tx from herald.tokens where user_name = 'dave'`,
        )
      ).rows[0]!;
    expect((await lastUsed()).last_used_at).toBeNull();
    // Authenticated, then refused for its body: the token was used.
    const use = async () =>
      (
        await fetch(`${herald.url}/api/v1/unpublish`, {
          method: 'POST',
          headers: { authorization: `Bearer ${dave}`, 'content-type': 'application/json' },
          body: '{}',
        })
      ).status;
    expect(await use()).toBe(400);
    const first = await lastUsed();
    expect(first.last_used_at).toBeInstanceOf(Date);
    // Five more at once, within the minute: the row is not written again (same row version).
    expect(await Promise.all(Array.from({ length: 5 }, use))).toEqual([400, 400, 400, 400, 400]);
    expect(await lastUsed()).toEqual(first);
    // A minute old: the next request moves it forward.
    await herald.ctx.pool.query(`update herald.tokens set last_used_at = now() - interval '2 minutes' where user_name = 'dave'`);
    expect(await use()).toBe(400);
    expect((await lastUsed()).last_used_at!.getTime()).toBeGreaterThan(Date.now() - 30_000);
  });
});
