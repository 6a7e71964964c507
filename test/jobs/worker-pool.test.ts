/**
 * A worker process killed mid-job (SIGKILL, no goodbye): the job's lease lapses, another
 * worker claims it, and it succeeds exactly once; the dead worker's half-done transaction
 * leaves nothing behind.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { describe, expect, it } from 'vitest';
import { buildArchive } from '../../src/registry/archive.ts';
import { blockPublishes } from '../support/blocker.ts';
import { createTestDatabase } from '../support/db.ts';
import { startTestHerald, until } from '../support/herald.ts';
import { HERALD_BIN, trackProcesses } from '../support/processes.ts';

const BIN = HERALD_BIN;
const { children, cleanups } = trackProcesses();

describe('worker pool', () => {
  it('a worker process killed mid-job: the job is retried after the lease and succeeds once', async () => {
    const db = await createTestDatabase();
    cleanups.push(db.drop);
    // This process serves the API but runs no workers (yet).
    const api = await startTestHerald(db.url, { workers: 0 });
    cleanups.push(api.close);
    const token = await api.tokens.create('carol', false);

    const worker = spawn(process.execPath, [BIN, 'worker'], {
      env: {
        PATH: process.env.PATH ?? '',
        DATABASE_URL: db.url,
        HERALD_WORKERS: '1',
        HERALD_JOB_LEASE_MS: '1000',
        LOG_LEVEL: 'info',
        HERALD_LOG_FORMAT: 'json',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.add(worker);
    let out = '';
    worker.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    await until(() => out.includes('herald worker'), 30_000, 'worker process to start');
    const workerId = /herald worker (w-[0-9a-f]+)/.exec(out)![1]!;

    // Block publishes inside their effects transaction, so the worker is mid-job when killed.
    const blocker = await blockPublishes(db.url);

    const body = await buildArchive({ 'manifest.json': JSON.stringify({ name: 'crashy', version: '1.0.0', dependencies: {} }) });
    const res = await fetch(`${api.url}/api/v1/publish?name=crashy&version=1.0.0`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/gzip' },
      body: new Uint8Array(body),
    });
    const { jobId } = (await res.json()) as { jobId: number };
    const row = async () =>
      (await api.ctx.pool.query('select status, locked_by, attempts from herald.jobs where id = $1', [jobId])).rows[0] as {
        status: string;
        locked_by: string | null;
        attempts: number;
      };
    await until(
      async () => {
        const r = await row();
        return r.status === 'running' && (r.locked_by ?? '').startsWith(`${workerId}/`);
      },
      15_000,
      'the worker process to claim the job',
    );
    await until(
      async () => (await api.ctx.pool.query(`select 1 from pg_stat_activity where wait_event_type = 'Lock' and datname = current_database()`)).rowCount! > 0,
      15_000,
      'the job to block on the lock',
    );

    worker.kill('SIGKILL');
    await once(worker, 'exit');
    await blocker.release();

    // A new worker pool (in this process) takes over once the lease lapses.
    const rescuer = await startTestHerald(db.url, { workers: 1, jobLeaseMs: 1000, jobPollMs: 200 });
    cleanups.push(rescuer.close);
    await until(async () => (await row()).status === 'succeeded', 20_000, 'the job to succeed after the lease');
    const final = await row();
    expect(final.attempts).toBe(2);
    expect(final.locked_by).toBeNull();
    const versions = await api.ctx.pool.query(`select count(*)::int as n from herald.versions where package = 'crashy'`);
    expect(versions.rows[0].n).toBe(1);
    const published = await api.ctx.pool.query(`select count(*)::int as n from herald.events where topic = 'package:crashy' and type = 'published'`);
    expect(published.rows[0].n).toBe(1);
    const statuses = await api.ctx.pool.query(`select data->>'status' as s from herald.events where topic = $1 and type = 'status' order by id`, [
      `job:${jobId}`,
    ]);
    expect(statuses.rows.map((r) => r.s)).toEqual(['queued', 'running', 'running', 'succeeded']);
  });
});

describe('timeouts and the health-check ping', () => {
  it('a job over its per-type time limit is stopped, retried, and failed after its attempts; the store is untouched', async () => {
    const db = await createTestDatabase();
    cleanups.push(db.drop);
    let runs = 0;
    const h = await startTestHerald(
      db.url,
      { workers: 1, jobTimeoutsMs: { stuck: 300 }, jobMaxAttempts: 2, jobRetryBackoffMs: 0 },
      {
        handlers: {
          stuck: {
            async run(_job, jc) {
              runs++;
              await jc.log('info', 'starting something slow');
              await new Promise((r) => setTimeout(r, 5000));
              await jc.commit(async () => 'should never commit');
            },
          },
        },
      },
    );
    cleanups.push(h.close);
    const { job } = await h.jobs.submit({ type: 'stuck', payload: {}, maxAttempts: 2 });
    await until(async () => (await h.jobs.get(job.id))!.status === 'failed', 15_000, 'the job to fail');
    const final = (await h.jobs.get(job.id))!;
    expect(final.attempts).toBe(2);
    expect(final.error).toMatch(/timed out after 300 ms/);
    expect(final.result).toBeNull();
    expect(runs).toBe(2);
  });

  it('pings HERALD_HEALTHCHECK_URL while healthy', async () => {
    const hits: string[] = [];
    const server = (await import('node:http')).createServer((req, res) => {
      hits.push(req.url!);
      res.end('ok');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    cleanups.push(() => new Promise((r) => server.close(r)));
    const db = await createTestDatabase();
    cleanups.push(db.drop);
    const port = (server.address() as { port: number }).port;
    const h = await startTestHerald(db.url, { workers: 0, healthcheckUrl: `http://127.0.0.1:${port}/ping/abc`, healthcheckIntervalMs: 1000 });
    cleanups.push(h.close);
    await until(() => hits.length >= 2, 10_000, 'two pings');
    expect(hits.every((u) => u === '/ping/abc')).toBe(true);
    // The URL identifies the check: it never reaches the logs.
    expect(h.logs.join('')).not.toContain('/ping/abc');
  });
});
