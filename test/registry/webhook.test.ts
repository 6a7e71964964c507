/**
 * The index webhook's doors (issue 14): no secret, no route; a signed body sent again is a
 * replay, whatever its delivery id, across restarts and processes, until the replay window
 * has passed. Real HTTP, real Postgres, the real crates.io-index sample as the source.
 */
import { createHmac } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';
import { startTestHerald, type TestHerald, until } from '../support/herald.ts';

const SAMPLE = fileURLToPath(new URL('../fixtures/crates-index-sample', import.meta.url));
const SECRET = 'webhook-doors-secret';
const cleanups: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
});

async function database(): Promise<TestDatabase> {
  const db = await createTestDatabase();
  cleanups.push(db.drop);
  return db;
}

async function herald(db: TestDatabase, overrides: Record<string, unknown> = {}): Promise<TestHerald> {
  const h = await startTestHerald(db.url, {
    indexSourceUrl: `file://${SAMPLE}`,
    indexWebhookSecrets: [SECRET],
    indexSyncIntervalMs: 0,
    workers: 1,
    ...overrides,
  });
  cleanups.push(h.close);
  return h;
}

const sign = (body: string) => `sha256=${createHmac('sha256', SECRET).update(body).digest('hex')}`;

interface Answer {
  status: number;
  body: { jobId?: number | null; duplicate?: boolean; error?: { code: string } };
}

async function hook(h: TestHerald, body: string, delivery?: string, signature = sign(body)): Promise<Answer> {
  const res = await fetch(`${h.url}/_/index-webhook`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-hub-signature-256': signature, ...(delivery ? { 'x-github-delivery': delivery } : {}) },
    body,
  });
  return { status: res.status, body: (await res.json()) as Answer['body'] };
}

async function counts(h: TestHerald): Promise<{ jobs: number; deliveries: number; signatures: number }> {
  const { rows } = await h.ctx.pool.query(`
    select (select count(*) from herald.jobs)::int as jobs,
           (select count(*) from herald.webhook_deliveries)::int as deliveries,
           (select count(*) from herald.webhook_signatures)::int as signatures`);
  return rows[0];
}

async function finished(h: TestHerald, jobId: number): Promise<void> {
  await until(async () => ['succeeded', 'failed'].includes((await h.jobs.get(jobId))!.status), 60_000, `job ${jobId}`);
}

describe('POST /_/index-webhook', () => {
  it('without a secret the route does not exist: 404 not_found for any request, and nothing is stored or queued', async () => {
    const db = await database();
    const h = await herald(db, { indexWebhookSecrets: [] });
    const body = '{"ref":"refs/heads/master"}';
    const signed: Record<string, string> = { 'x-hub-signature-256': sign(body), 'x-github-delivery': 'd-1' };
    for (const headers of [{}, signed]) {
      const res = await fetch(`${h.url}/_/index-webhook`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body });
      expect(res.status).toBe(404);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe('not_found');
    }
    expect(await counts(h)).toEqual({ jobs: 0, deliveries: 0, signatures: 0 });
  });

  it('a captured delivery replayed 20 times with new delivery ids is a duplicate each time: the first job, nothing queued, across a restart and on another process', async () => {
    const db = await database();
    let h = await herald(db);
    const body = '{"ref":"refs/heads/master","after":"abc"}';
    const first = await hook(h, body, 'delivery-0');
    expect(first.status).toBe(202);
    const jobId = first.body.jobId!;
    expect(first.body).toEqual({ jobId });
    await finished(h, jobId);
    for (let i = 1; i <= 20; i++) expect(await hook(h, body, `delivery-${i}`)).toEqual({ status: 200, body: { jobId, duplicate: true } });
    // With no delivery id at all, too.
    expect(await hook(h, body)).toEqual({ status: 200, body: { jobId, duplicate: true } });
    // Only the delivery that queued the job is recorded; one signature.
    expect(await counts(h)).toEqual({ jobs: 1, deliveries: 1, signatures: 1 });

    // Stored in the database: a restarted process, and a second one beside it, know it.
    await h.close();
    h = await herald(db);
    const other = await herald(db, { workers: 0 });
    expect(await hook(h, body, 'after-restart')).toEqual({ status: 200, body: { jobId, duplicate: true } });
    expect(await hook(other, body, 'other-process')).toEqual({ status: 200, body: { jobId, duplicate: true } });
    expect(await counts(h)).toEqual({ jobs: 1, deliveries: 1, signatures: 1 });

    // A new push (a new body) queues a new sync.
    const next = await hook(h, '{"ref":"refs/heads/master","after":"def"}', 'delivery-new');
    expect(next.status).toBe(202);
    expect(next.body.jobId).toBeGreaterThan(jobId);
    expect(await counts(h)).toEqual({ jobs: 2, deliveries: 2, signatures: 2 });
  });

  it('ten copies of one body at once: one queues a sync, nine are duplicates', async () => {
    const db = await database();
    const h = await herald(db, { workers: 0 });
    const body = '{"ref":"refs/heads/master","after":"burst"}';
    const answers = await Promise.all(Array.from({ length: 10 }, (_, i) => hook(h, body, `burst-${i}`)));
    const queued = answers.filter((a) => a.status === 202);
    expect(queued).toHaveLength(1);
    const jobId = queued[0]!.body.jobId!;
    const duplicates = answers.filter((a) => a.status === 200);
    expect(duplicates).toHaveLength(9);
    // A copy that arrives while the first is still queueing its job is told so with a null id.
    for (const d of duplicates) expect([jobId, null]).toContain(d.body.jobId);
    for (const d of duplicates) expect(d.body.duplicate).toBe(true);
    expect(await counts(h)).toEqual({ jobs: 1, deliveries: 1, signatures: 1 });
    expect(await hook(h, body, 'burst-late')).toEqual({ status: 200, body: { jobId, duplicate: true } });
  });

  it('past the replay window the same body is new again, and older signatures are pruned; a custom window is honoured', async () => {
    const db = await database();
    const h = await herald(db, { workers: 0 });
    const a = '{"after":"a"}';
    const b = '{"after":"b"}';
    const first = await hook(h, a, 'a-1');
    expect(first.status).toBe(202);
    // A new body: not a duplicate, though it folds into the sync already waiting.
    expect(await hook(h, b, 'b-1')).toEqual({ status: 202, body: { jobId: first.body.jobId } });
    // Just inside the default day: still a replay.
    await h.ctx.pool.query(`update herald.webhook_signatures set received_at = now() - interval '23 hours 59 minutes'`);
    expect(await hook(h, a, 'a-2')).toEqual({ status: 200, body: { jobId: first.body.jobId, duplicate: true } });
    // A day and a minute ago: new again (the waiting sync absorbs it), and `b`'s expired row is gone.
    await h.ctx.pool.query(`update herald.webhook_signatures set received_at = now() - interval '1 day 1 minute'`);
    expect(await hook(h, a, 'a-3')).toEqual({ status: 202, body: { jobId: first.body.jobId } });
    const { rows } = await h.ctx.pool.query<{ signature: Buffer }>('select signature from herald.webhook_signatures');
    expect(rows.map((r) => `sha256=${r.signature.toString('hex')}`)).toEqual([sign(a)]);

    const short = await herald(await database(), { workers: 0, indexWebhookReplayWindowMs: 60_000 });
    const q = await hook(short, a, 's-1');
    expect(q.status).toBe(202);
    await short.ctx.pool.query(`update herald.webhook_signatures set received_at = now() - interval '59 seconds'`);
    expect((await hook(short, a, 's-2')).status).toBe(200);
    await short.ctx.pool.query(`update herald.webhook_signatures set received_at = now() - interval '61 seconds'`);
    expect((await hook(short, a, 's-3')).status).toBe(202);
  });

  it('a delivery whose sync could not be queued leaves no claim: the sender retrying the same body is not a duplicate', async () => {
    const db = await database();
    const h = await herald(db, { workers: 0 });
    // Every job insert fails, as it would with the jobs table unwritable.
    await h.ctx.pool.query(`
      create function herald.test_refuse_jobs() returns trigger language plpgsql as $$ begin raise exception 'no jobs today'; end $$;
      create trigger test_refuse_jobs before insert on herald.jobs for each row execute function herald.test_refuse_jobs()`);
    const body = '{"after":"retry"}';
    const failed = await hook(h, body, 'r-1');
    expect(failed.status).toBe(500);
    expect(failed.body.error!.code).toBe('internal');
    expect(await counts(h)).toEqual({ jobs: 0, deliveries: 0, signatures: 0 });
    await h.ctx.pool.query('drop trigger test_refuse_jobs on herald.jobs; drop function herald.test_refuse_jobs()');
    const retried = await hook(h, body, 'r-1');
    expect(retried.status).toBe(202);
    expect(await counts(h)).toEqual({ jobs: 1, deliveries: 1, signatures: 1 });
  });
});
