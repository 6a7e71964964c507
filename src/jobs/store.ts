/**
 * JobStore: every query on the job tables. Each status change and log line is written
 * together with its event on `job:<id>` (and creation/finish on `jobs`) in one transaction,
 * with the JSON built by the same SQL functions the API reads (herald.job_json,
 * herald.job_log_json), so followers and pollers see one shape and one order.
 */
import type pg from 'pg';
import { withTransaction } from '../db/pool.ts';
import { HeraldError } from '../errors.ts';

export const JOB_STATUSES = ['queued', 'running', 'succeeded', 'failed'] as const;
export type JobStatus = (typeof JOB_STATUSES)[number];

/** A job as the API returns it (and status events carry it). */
export interface JobJson {
  id: number;
  type: string;
  status: JobStatus;
  payload: Record<string, unknown>;
  createdAt: string;
  startedAt: string | null;
  finishedAt: string | null;
  attempts: number;
  result: unknown;
  error: string | null;
}

export interface LogJson {
  id: number;
  level: LogLevel;
  message: string;
  at: string;
  truncated?: true;
}

export const LOG_LEVELS = { debug: 10, info: 20, warn: 30, error: 40 } as const;
export type LogLevel = keyof typeof LOG_LEVELS;

/** A log line is at most 64 KiB; longer ones are cut and marked `truncated`. */
export const MAX_LOG_BYTES = 64 * 1024;

/** A claimed job, with what the worker needs beyond the API shape. */
export interface ClaimedJob extends JobJson {
  maxAttempts: number;
  submittedBy: string | null;
}

export interface SubmitOptions {
  type: string;
  payload: Record<string, unknown>;
  lockKey?: string;
  dedupeKey?: string;
  idempotencyKey?: string;
  submittedBy?: string;
  maxAttempts: number;
  archive?: Buffer;
  /** Fold into a queued job of the same type instead of adding another (index syncs). */
  coalesceQueued?: boolean;
}

const JOB = 'herald.job_json(j)';

/** Emits the job's status on `job:<id>`, and on `jobs` when it is created or finishes. */
async function emitStatus(tx: pg.PoolClient, job: JobJson, jobsType?: 'created' | 'finished'): Promise<void> {
  const data = JSON.stringify(job);
  if (jobsType) {
    await tx.query(`select herald.emit_many($1::jsonb)`, [
      `[{"topic":"job:${job.id}","type":"status","data":${data}},{"topic":"jobs","type":${JSON.stringify(jobsType)},"data":${data}}]`,
    ]);
  } else {
    await tx.query(`select herald.emit($1, 'status', $2::jsonb)`, [`job:${job.id}`, data]);
  }
}

function truncate(message: string): { message: string; truncated: boolean } {
  if (Buffer.byteLength(message) <= MAX_LOG_BYTES) return { message, truncated: false };
  // Cut on a character boundary: decode the first MAX_LOG_BYTES bytes, dropping a split character.
  const cut = Buffer.from(message)
    .subarray(0, MAX_LOG_BYTES)
    .toString('utf8')
    .replace(/\uFFFD$/, '');
  return { message: cut, truncated: true };
}

export class JobStore {
  constructor(private readonly pool: pg.Pool) {}

  /**
   * Creates a job, or returns the one already answering this request: the same
   * Idempotency-Key, or an identical request (dedupe key) still queued or running.
   */
  async submit(o: SubmitOptions): Promise<{ job: JobJson; created: boolean }> {
    for (let attempt = 0; attempt < 5; attempt++) {
      const out = await withTransaction(this.pool, async (tx) => {
        if (o.idempotencyKey) {
          const prior = await tx.query<{ job: JobJson }>(`select ${JOB} as job from herald.jobs j where idempotency_key = $1`, [o.idempotencyKey]);
          if (prior.rows[0]) return { job: prior.rows[0].job, created: false };
        }
        const inserted = await tx.query<{ job: JobJson }>(
          `insert into herald.jobs as j (type, payload, lock_key, dedupe_key, idempotency_key, submitted_by, max_attempts)
           values ($1, $2, $3, $4, $5, $6, $7)
           on conflict do nothing
           returning ${JOB} as job`,
          [o.type, JSON.stringify(o.payload), o.lockKey ?? null, o.dedupeKey ?? null, o.idempotencyKey ?? null, o.submittedBy ?? null, o.maxAttempts],
        );
        const job = inserted.rows[0]?.job;
        if (job) {
          if (o.archive) await tx.query('insert into herald.job_inputs (job_id, archive) values ($1, $2)', [job.id, o.archive]);
          await emitStatus(tx, job, 'created');
          return { job, created: true };
        }
        const existing = await tx.query<{ job: JobJson }>(
          `select ${JOB} as job from herald.jobs j
           where (dedupe_key = $1 and status in ('queued', 'running')) or idempotency_key = $2
              or ($3 and type = $4 and status = 'queued')
           order by id limit 1`,
          [o.dedupeKey ?? null, o.idempotencyKey ?? null, o.coalesceQueued ?? false, o.type],
        );
        return existing.rows[0] ? { job: existing.rows[0].job, created: false } : null;
      });
      // The conflicting job finished between our insert and our look-up: try again.
      if (out) return out;
    }
    throw new HeraldError('HERALD_ERR_UNAVAILABLE', 'could not submit the job under contention; retry');
  }

  async get(id: number): Promise<JobJson | null> {
    const { rows } = await this.pool.query<{ job: JobJson }>(`select ${JOB} as job from herald.jobs j where id = $1`, [id]);
    return rows[0]?.job ?? null;
  }

  async list(q: { type?: string; status?: JobStatus; since: number; limit: number }): Promise<{ jobs: JobJson[]; next: number }> {
    const { rows } = await this.pool.query<{ job: JobJson }>(
      `select ${JOB} as job from herald.jobs j
       where id > $1 and ($2::text is null or type = $2) and ($3::text is null or status = $3)
       order by id limit $4`,
      [q.since, q.type ?? null, q.status ?? null, q.limit],
    );
    const jobs = rows.map((r) => r.job);
    return { jobs, next: jobs.length ? jobs[jobs.length - 1]!.id : q.since };
  }

  /** Log lines of a job after a log id (or a time), at or above a level. */
  async logs(jobId: number, q: { since: number; after?: Date; level: LogLevel; limit: number }): Promise<{ logs: LogJson[]; next: number }> {
    const { rows } = await this.pool.query<{ line: LogJson }>(
      `select herald.job_log_json(l) as line from herald.job_logs l
       where job_id = $1 and id > $2 and ($3::timestamptz is null or at > $3) and level >= $4
       order by id limit $5`,
      [jobId, q.since, q.after ?? null, LOG_LEVELS[q.level], q.limit],
    );
    const logs = rows.map((r) => r.line);
    return { logs, next: logs.length ? logs[logs.length - 1]!.id : q.since };
  }

  /** Appends a log line and its event, in one statement (visible at once, whatever the job's fate). */
  async log(jobId: number, level: LogLevel, text: string): Promise<LogJson> {
    const { message, truncated } = truncate(text);
    const { rows } = await this.pool.query<{ line: LogJson }>(
      `with l as (
         insert into herald.job_logs (job_id, level, message, truncated) values ($1, $2, $3, $4) returning *
       ), e as (
         select herald.emit('job:' || l.job_id, 'log', herald.job_log_json(l)) from l
       )
       select herald.job_log_json(l) as line from l, e`,
      [jobId, LOG_LEVELS[level], message, truncated],
    );
    return rows[0]!.line;
  }

  async input(jobId: number): Promise<Buffer | null> {
    const { rows } = await this.pool.query<{ archive: Buffer }>('select archive from herald.job_inputs where job_id = $1', [jobId]);
    return rows[0]?.archive ?? null;
  }

  /**
   * Claims the oldest runnable job: queued and due, or running with a lapsed lease (its
   * worker died). Skips jobs whose lock key a live running job holds; the unique index on
   * running lock keys settles races between claimers. Returns null when nothing is runnable.
   */
  async claim(workerId: string, leaseMs: number): Promise<ClaimedJob | null> {
    try {
      return await withTransaction(this.pool, async (tx) => {
        const { rows } = await tx.query<{ job: JobJson; max_attempts: number; submitted_by: string | null }>(
          `with candidate as (
             select j.id from herald.jobs j
             where ((j.status = 'queued' and j.run_at <= now()) or (j.status = 'running' and j.locked_until < now()))
               -- A lock key held by any running job, even one whose lease lapsed, is taken:
               -- that job is itself claimable (the OR above) and must be reclaimed first.
               -- Skipping only live holders would pick a queued job with the same key, hit
               -- the unique index, and never reach the lapsed one.
               and (j.lock_key is null or not exists (
                 select 1 from herald.jobs r
                 where r.lock_key = j.lock_key and r.status = 'running' and r.id <> j.id))
             order by j.id
             limit 1
             for update skip locked
           )
           update herald.jobs j
           set status = 'running', attempts = j.attempts + 1, locked_by = $1,
               locked_until = now() + $2 * interval '1 millisecond', started_at = coalesce(j.started_at, now())
           from candidate where j.id = candidate.id
           returning ${JOB} as job, j.max_attempts, j.submitted_by`,
          [workerId, leaseMs],
        );
        const row = rows[0];
        if (!row) return null;
        await emitStatus(tx, row.job);
        return { ...row.job, maxAttempts: row.max_attempts, submittedBy: row.submitted_by };
      });
    } catch (err) {
      // Another claimer took a job with the same lock key first.
      if ((err as { code?: string }).code === '23505') return null;
      throw err;
    }
  }

  /** Extends the lease; false if this worker no longer holds the job. */
  async renew(jobId: number, workerId: string, leaseMs: number): Promise<boolean> {
    const { rowCount } = await this.pool.query(
      `update herald.jobs set locked_until = now() + $3 * interval '1 millisecond' where id = $1 and locked_by = $2 and status = 'running'`,
      [jobId, workerId, leaseMs],
    );
    return rowCount === 1;
  }

  /** Marks the job succeeded inside the caller's effects transaction; throws if the lease was lost. */
  async complete(tx: pg.PoolClient, jobId: number, workerId: string, result: unknown): Promise<JobJson> {
    const { rows } = await tx.query<{ job: JobJson }>(
      `update herald.jobs j set status = 'succeeded', finished_at = now(), result = $3, error = null, locked_by = null, locked_until = null
       where id = $1 and locked_by = $2 and status = 'running'
       returning ${JOB} as job`,
      [jobId, workerId, JSON.stringify(result ?? null)],
    );
    const job = rows[0]?.job;
    if (!job) throw new HeraldError('HERALD_ERR_UNAVAILABLE', `job ${jobId} was taken over by another worker (lease lapsed); its effects are rolled back`);
    // The upload has served its purpose (a published archive lives in herald.versions).
    await tx.query('delete from herald.job_inputs where job_id = $1', [jobId]);
    await emitStatus(tx, job, 'finished');
    return job;
  }

  /** Records a failed run: queued again after `retryInMs`, or failed for good when null. */
  async fail(jobId: number, workerId: string, error: string, retryInMs: number | null): Promise<JobJson | null> {
    return withTransaction(this.pool, async (tx) => {
      const { rows } = await tx.query<{ job: JobJson }>(
        `update herald.jobs j
         set status = case when $4::bigint is null then 'failed' else 'queued' end,
             run_at = case when $4::bigint is null then j.run_at else now() + $4 * interval '1 millisecond' end,
             finished_at = case when $4::bigint is null then now() else null end,
             error = $3, locked_by = null, locked_until = null
         where id = $1 and locked_by = $2 and status = 'running'
         returning ${JOB} as job`,
        [jobId, workerId, error.slice(0, 4096), retryInMs],
      );
      const job = rows[0]?.job ?? null;
      if (job?.status === 'failed') await tx.query('delete from herald.job_inputs where job_id = $1', [jobId]);
      if (job) await emitStatus(tx, job, job.status === 'failed' ? 'finished' : undefined);
      return job;
    });
  }

  /** When the next queued job comes due (for the worker pool's timer), or null. */
  async nextDue(): Promise<Date | null> {
    const { rows } = await this.pool.query<{ at: Date | null }>(
      `select least((select min(run_at) from herald.jobs where status = 'queued'),
                    (select min(locked_until) from herald.jobs where status = 'running')) as at`,
    );
    return rows[0]?.at ?? null;
  }

  async counts(): Promise<Record<JobStatus, number>> {
    const { rows } = await this.pool.query<{ status: JobStatus; n: number }>(`select status, count(*)::int as n from herald.jobs group by status`);
    const out = { queued: 0, running: 0, succeeded: 0, failed: 0 };
    for (const r of rows) out[r.status] = r.n;
    return out;
  }
}
