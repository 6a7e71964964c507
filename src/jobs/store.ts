/**
 * JobStore: every query on the job tables. Each status change and log line is written
 * together with its event on `job:<id>` (and creation/finish on `jobs`) in one transaction,
 * with the JSON built by the same SQL functions the API reads (herald.job_json,
 * herald.job_log_json), so followers and pollers see one shape and one order.
 *
 * A worker pool's writes go many at a time: cycle() records the outcomes of finished runs and
 * claims jobs for the free slots, writeLogs() appends log lines, each in one statement (the
 * pool gathers what comes meanwhile, src/group-commit.ts), so one commit and one turn of
 * the event log's id lock covers them all. In autocommit their events go straight into the
 * log (herald.append_rows as the statement's last step: the lock is held from there to the
 * commit only); inside a caller's transaction they are staged for its COMMIT. The hot
 * statements are prepared (pg named queries): parsed once per connection.
 */
import type pg from 'pg';
import { HeraldError } from '../errors.ts';
import { GroupCommit } from '../group-commit.ts';

/** Every status a job can have, in lifecycle order. */
export const JOB_STATUSES = ['queued', 'running', 'succeeded', 'failed'] as const;
/** A job's status. */
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

/** A job's log line as the API returns it (and `log` events carry it). */
export interface LogJson {
  id: number;
  level: LogLevel;
  message: string;
  at: string;
  truncated?: true;
}

/** Log levels and the numbers stored for them (a filter keeps lines at or above one). */
export const LOG_LEVELS = { debug: 10, info: 20, warn: 30, error: 40 } as const;
/** A log line's level. */
export type LogLevel = keyof typeof LOG_LEVELS;

/** The most bytes of a log line (64 KiB); longer ones are cut and marked `truncated`. */
export const MAX_LOG_BYTES = 64 * 1024;

/** A claimed job, with what the worker needs beyond the API shape. */
export interface ClaimedJob extends JobJson {
  maxAttempts: number;
  submittedBy: string | null;
}

/** What a submission asks for; the keys decide whether it folds into an existing job. */
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

/** One finished run, as cycle() records it. */
export type Outcome =
  | { jobId: number; runId: string; ok: true; result: unknown }
  /**
   * `retryInMs`: queued again after that long, or failed for good when null. `unstarted`: the
   * run never started (a prefetched job given back at shutdown): queued again at once, its
   * attempt given back, `error` and `retryInMs` ignored.
   */
  | { jobId: number; runId: string; ok: false; error: string; retryInMs: number | null; unstarted?: boolean };

/** A log line to write. */
export interface NewLogLine {
  jobId: number;
  level: LogLevel;
  message: string;
}

/** What one cycle() wrote. */
export interface CycleResult {
  /** Per outcome, in order: the job's new state, or null for a run that had lost its lease (nothing written). */
  finished: (JobJson | null)[];
  /** The jobs claimed, oldest first, each with the run id that holds its lease. */
  claimed: { job: ClaimedJob; runId: string }[];
  /** Every candidate the claim looked at was taken: more may be runnable. */
  full: boolean;
  /** When the next retry comes due or lease lapses (nothing announces those), or null. */
  nextDue: Date | null;
}

const JOB = 'herald.job_json(j)';

/**
 * Writes a batch of submissions (sql/015_submit_jobs.sql): each job with its `queued` and
 * `created` events, nothing for one whose key conflicts; the jobs written come back with
 * their 1-based place in the batch. One autocommit statement: the events go straight into the
 * log (herald.append_rows, the id lock taken last and held to the commit).
 */
const SUBMIT_SQL = `select nth, job from herald.submit_jobs($1::text[], $2::jsonb[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int[], $8::bytea[])`;

/** The most upload bytes one batch of submissions carries (a bigger upload goes alone). */
const SUBMIT_BATCH_MAX_BYTES = 16 * 1024 * 1024;
/** Submissions waiting for a write, past which submit() answers `unavailable` (Retry-After). */
const SUBMIT_QUEUE_MAX = 10_000;
/** Upload bytes waiting for a write, past which submit() answers `unavailable` (Retry-After). */
const SUBMIT_QUEUE_MAX_BYTES = 256 * 1024 * 1024;

/**
 * One statement, so one commit and one turn of the event log's id lock, for what a worker
 * pool has to write: outcomes ($1–$6 and $9, one array element per run) and claims for its
 * free slots ($7, one run id per slot; $8 the lease).
 *
 * Outcomes: succeeded, queued again (a retry, or a run that never started, whose attempt is
 * given back) or failed, each only while its run still holds the lease. The upload of a finished job is dropped (a published archive lives in
 * herald.versions).
 *
 * Claims: up to cardinality($7) runnable jobs, oldest first: queued and due, or running with
 * a lapsed lease (its worker died); the n-th claimed job's lease holder is $7[n].
 *
 * Events, in this order: per outcome, `status` on `job:<id>` and `finished` on `jobs` (not
 * for a retry); then per claimed job, its `running` status. The comment names the statement
 * in pg_stat_activity.
 *
 * In autocommit (the worker pool's writes) the events go straight into the log with
 * herald.append_rows, the statement's last step, so the id lock is held from there to the commit
 * only. Inside a caller's transaction (complete(), with a handler's effects) they are staged
 * and the commit trigger appends them at COMMIT, as herald.emit does: the lock is never held
 * across the caller's own work.
 */
const cycleSql = (events: { staged: string; appended: string }) => `
  with /* herald: job cycle */ input as (
    select * from unnest($1::bigint[], $2::text[], $3::boolean[], $4::jsonb[], $5::text[], $6::bigint[], $9::boolean[])
      with ordinality as i(id, run_id, ok, result, error, retry_ms, unstarted, ord)
  ), done as (
    update herald.jobs j
    set status = case when i.ok then 'succeeded' when i.unstarted or i.retry_ms is not null then 'queued' else 'failed' end,
        run_at = case when not i.ok and not i.unstarted and i.retry_ms is not null then now() + i.retry_ms * interval '1 millisecond' else j.run_at end,
        finished_at = case when i.ok or (i.retry_ms is null and not i.unstarted) then now() end,
        result = case when i.ok then i.result else j.result end,
        error = case when i.ok then null when i.unstarted then j.error else i.error end,
        attempts = case when i.unstarted then j.attempts - 1 else j.attempts end,
        started_at = case when i.unstarted and j.attempts = 1 then null else j.started_at end,
        locked_by = null, locked_until = null
    from input i
    where j.id = i.id and j.locked_by = i.run_id and j.status = 'running'
    returning j.id, j.status, j.run_at, ${JOB} as job, i.ord
  ), inputs as (
    delete from herald.job_inputs x using done d where x.job_id = d.id and d.status <> 'queued'
  ), slot as (
    select s.run_id, s.n from unnest($7::text[]) with ordinality as s(run_id, n)
  ), candidate as (
    select j.id, j.lock_key from herald.jobs j
    where ((j.status = 'queued' and j.run_at <= now()) or (j.status = 'running' and j.locked_until < now()))
      -- A lock key held by any running job, even one whose lease lapsed, is taken: that job
      -- is itself claimable (the OR above) and must be reclaimed first. Skipping only live
      -- holders would pick a queued job with the same key, hit the unique index, and never
      -- reach the lapsed one.
      and (j.lock_key is null or not exists (
        select 1 from herald.jobs r
        where r.lock_key = j.lock_key and r.status = 'running' and r.id <> j.id))
      -- Not a job this statement finishes (one whose lease lapsed is still its run's to record).
      and j.id <> all($1::bigint[])
    order by j.id
    limit cardinality($7::text[])
    for update skip locked
  ), chosen as (
    -- One job per lock key: two would collide on jobs_running_lock_idx. The others stay
    -- queued for a later claim.
    select c.id, row_number() over (order by c.id) as n
    from (select id, lock_key, row_number() over (partition by lock_key order by id) as nth from candidate) c
    where c.lock_key is null or c.nth = 1
  ), claimed as (
    update herald.jobs j
    set status = 'running', attempts = j.attempts + 1, locked_by = s.run_id,
        locked_until = now() + $8 * interval '1 millisecond', started_at = coalesce(j.started_at, now())
    from chosen c join slot s on s.n = c.n
    where j.id = c.id
    returning j.id, ${JOB} as job, j.max_attempts, j.submitted_by, j.locked_by
  )${events.staged}
  select
    (select coalesce(jsonb_agg(jsonb_build_object('ord', d.ord, 'job', d.job)), '[]') from done d) as finished,
    (select coalesce(jsonb_agg(jsonb_build_object('job', c.job, 'maxAttempts', c.max_attempts, 'submittedBy', c.submitted_by, 'runId', c.locked_by)
                               order by c.id), '[]') from claimed c) as claimed,
    (select count(*) from candidate)::int as candidates,
    -- When the next thing no event announces comes due: a queued job (a retry) or a lease
    -- lapsing. Read before this statement's own changes, so its claims and outcomes are
    -- left out and its retries added.
    least((select min(q.run_at) from herald.jobs q where q.status = 'queued' and q.id not in (select id from chosen)),
          (select min(r.locked_until) from herald.jobs r where r.status = 'running' and r.id <> all($1::bigint[])),
          (select min(d.run_at) from done d where d.status = 'queued')) as next_due${events.appended}`;

/** The cycle's events, in order (see cycleSql). */
const CYCLE_EVENTS = `
  select 1 as part, d.ord, 1 as k, 'job:' || d.id as topic, 'status' as type, d.job as data from done d
  union all
  select 1, d.ord, 2, 'jobs', 'finished', d.job from done d where d.status <> 'queued'
  union all
  select 2, c.id, 1, 'job:' || c.id, 'status', c.job from claimed c`;

/** The cycle in autocommit: its events appended in the statement. */
const CYCLE_SQL = cycleSql({
  staged: '',
  appended: `,
    (select count(*) from (
      select array_agg(e.topic order by e.part, e.ord, e.k) as topics, array_agg(e.type order by e.part, e.ord, e.k) as types,
             array_agg(e.data order by e.part, e.ord, e.k) as datas
      from (${CYCLE_EVENTS}) e) a
     cross join lateral herald.append_rows(a.topics, a.types, a.datas)) as appended`,
});

/** The cycle inside a caller's transaction: its events staged for the commit trigger. */
const CYCLE_IN_TX_SQL = cycleSql({
  staged: `, events as (
    insert into herald.pending (topic, type, data)
    select e.topic, e.type, e.data from (${CYCLE_EVENTS}) e
    order by e.part, e.ord, e.k
  )`,
  appended: '',
});

/**
 * Appends log lines in input order, each with its `log` event in the same order, the events
 * straight into the log (herald.append_rows) as the statement's last step. Only the lines' ids
 * come back, in order (a chatty job's lines are not sent back to it). Each line's record is
 * built in RETURNING, from the row just inserted: built from a CTE's columns, as it was, it took
 * 3 ms of a 500-line flush's 11.7 (EXPLAIN ANALYZE, 2026-12-02), against 0.4.
 */
const logsSql = (tail: string) => `
  with l as (
    insert into herald.job_logs (job_id, level, message, truncated)
    select i.job_id, i.level, i.message, i.truncated
    from unnest($1::bigint[], $2::smallint[], $3::text[], $4::boolean[]) with ordinality as i(job_id, level, message, truncated, ord)
    order by i.ord
    returning id, job_id, herald.job_log_json(job_logs) as line
  )${tail}`;

/** The lines in autocommit: their events appended in the statement. */
const LOGS_SQL = logsSql(`
  select a.ids, (select count(*) from herald.append_rows(a.topics, array_fill('log'::text, array[cardinality(a.topics)]), a.datas)) as appended
  from (select jsonb_agg(id order by id) as ids, array_agg('job:' || job_id order by id) as topics, array_agg(line order by id) as datas from l) a`);

/** The lines inside a caller's transaction: their events staged for its COMMIT, as CYCLE_IN_TX_SQL's. */
const LOGS_IN_TX_SQL = logsSql(`, staged as (
    insert into herald.pending (topic, type, data)
    select 'job:' || job_id, 'log', line from l order by id
  )
  select (select jsonb_agg(id order by id) from l) as ids`);

function truncate(message: string): { message: string; truncated: boolean } {
  if (Buffer.byteLength(message) <= MAX_LOG_BYTES) return { message, truncated: false };
  // Cut on a character boundary: decode the first MAX_LOG_BYTES bytes, dropping a split character.
  const cut = Buffer.from(message)
    .subarray(0, MAX_LOG_BYTES)
    .toString('utf8')
    .replace(/\uFFFD$/, '');
  return { message: cut, truncated: true };
}

/** The error a run gets when its lease went to another run before its outcome was written. */
export function leaseLost(jobId: number): HeraldError {
  return new HeraldError('HERALD_ERR_UNAVAILABLE', `job ${jobId} was taken over by another worker (lease lapsed); its effects are rolled back`);
}

/** A job type's rule: the API filters by it, and herald.jobs checks the same (sql/003_jobs.sql). */
export const JOB_TYPE_RE = /^[a-z][a-z0-9-]{0,63}$/;

/** How a JobStore batches its submissions. */
export interface JobStoreOptions {
  /** Most submissions one write takes (HERALD_JOB_BATCH_MAX). Default 500. */
  readonly batchMax?: number;
}

/** Every query on herald.jobs, herald.job_logs and herald.job_inputs. */
export class JobStore {
  /**
   * Submissions, many per statement: those that arrive while one write is in flight go
   * together in the next (src/group-commit.ts), so concurrent submitters share a commit and
   * a turn of the event log's id lock instead of queueing on it one commit each. Two
   * processes' batches holding the same two keys in opposite orders can deadlock: PostgreSQL
   * rolls one back, and GroupCommit writes its submissions again one by one.
   */
  private readonly submissions: GroupCommit<SubmitOptions, JobJson | null>;

  constructor(
    private readonly pool: pg.Pool,
    opts: JobStoreOptions = {},
  ) {
    this.submissions = new GroupCommit({
      write: (batch) => this.writeSubmissions(batch),
      maxItems: opts.batchMax ?? 500,
      bytes: (o) => o.archive?.length ?? 0,
      maxBytes: SUBMIT_BATCH_MAX_BYTES,
      maxQueueItems: SUBMIT_QUEUE_MAX,
      maxQueueBytes: SUBMIT_QUEUE_MAX_BYTES,
      wording: { items: 'job submissions', written: 'written', whenClosed: 'retry shortly' },
    });
  }

  /** Refuses new submissions (`shutting_down`) and resolves once the queued ones are written. */
  close(): Promise<void> {
    return this.submissions.close();
  }

  /**
   * Creates a job, or returns the one already answering this request: the same
   * Idempotency-Key, or an identical request (dedupe key) still queued or running.
   */
  async submit(o: SubmitOptions): Promise<{ job: JobJson; created: boolean }> {
    if (o.idempotencyKey) {
      const prior = await this.pool.query<{ job: JobJson }>({
        name: 'herald_job_by_idempotency_key',
        text: `select ${JOB} as job from herald.jobs j where idempotency_key = $1`,
        values: [o.idempotencyKey],
      });
      if (prior.rows[0]) return { job: prior.rows[0].job, created: false };
    }
    for (let attempt = 0; attempt < 5; attempt++) {
      // One statement (one commit, shared with concurrent submissions) creates the job with
      // its events, the usual case.
      const inserted = await this.submissions.push(o);
      if (inserted) return { job: inserted, created: true };
      const existing = await this.pool.query<{ job: JobJson }>({
        name: 'herald_job_submit_existing',
        text: `select ${JOB} as job from herald.jobs j
               where (dedupe_key = $1 and status in ('queued', 'running')) or idempotency_key = $2
                  or ($3 and type = $4 and status = 'queued')
               order by id limit 1`,
        values: [o.dedupeKey ?? null, o.idempotencyKey ?? null, o.coalesceQueued ?? false, o.type],
      });
      if (existing.rows[0]) return { job: existing.rows[0].job, created: false };
      // The conflicting job finished between our insert and our look-up: try again.
    }
    throw new HeraldError('HERALD_ERR_UNAVAILABLE', 'could not submit the job under contention; retry');
  }

  /** Writes `batch` in one statement: per submission, its job, or null where a key conflicted. */
  private async writeSubmissions(batch: readonly SubmitOptions[]): Promise<(JobJson | null)[]> {
    const { rows } = await this.pool.query<{ nth: number; job: JobJson }>({
      name: 'herald_job_submit',
      text: SUBMIT_SQL,
      values: [
        batch.map((o) => o.type),
        batch.map((o) => JSON.stringify(o.payload)),
        batch.map((o) => o.lockKey ?? null),
        batch.map((o) => o.dedupeKey ?? null),
        batch.map((o) => o.idempotencyKey ?? null),
        batch.map((o) => o.submittedBy ?? null),
        batch.map((o) => o.maxAttempts),
        batch.map((o) => o.archive ?? null),
      ],
    });
    const out: (JobJson | null)[] = batch.map(() => null);
    for (const r of rows) out[r.nth - 1] = r.job;
    return out;
  }

  /** The job, or null if there is none. */
  async get(id: number): Promise<JobJson | null> {
    const { rows } = await this.pool.query<{ job: JobJson }>(`select ${JOB} as job from herald.jobs j where id = $1`, [id]);
    return rows[0]?.job ?? null;
  }

  /** Jobs after `since` in id order, filtered by type and status; `next` is the cursor for the next page. */
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
    const [id] = await this.writeLogs([{ jobId, level, message: text }]);
    const { rows } = await this.pool.query<{ line: LogJson }>('select herald.job_log_json(l) as line from herald.job_logs l where id = $1', [id]);
    return rows[0]!.line;
  }

  /**
   * Appends log lines (each cut to MAX_LOG_BYTES) and their events in one statement, in the
   * order given; returns their ids in that order. In `client`'s transaction when given: the
   * events then wait for its COMMIT, as a cycle's do there.
   */
  async writeLogs(lines: readonly NewLogLine[], client: pg.Pool | pg.PoolClient = this.pool): Promise<number[]> {
    const cut = lines.map((l) => truncate(l.message));
    if (lines.length === 0) return [];
    const { rows } = await client.query<{ ids: number[] }>({
      ...(client === this.pool ? { name: 'herald_job_logs', text: LOGS_SQL } : { name: 'herald_job_logs_in_tx', text: LOGS_IN_TX_SQL }),
      values: [lines.map((l) => l.jobId), lines.map((l) => LOG_LEVELS[l.level]), cut.map((c) => c.message), cut.map((c) => c.truncated)],
    });
    return rows[0]!.ids;
  }

  /** The job's uploaded input (a publish archive), or null. */
  async input(jobId: number): Promise<Buffer | null> {
    const { rows } = await this.pool.query<{ archive: Buffer }>('select archive from herald.job_inputs where job_id = $1', [jobId]);
    return rows[0]?.archive ?? null;
  }

  /**
   * Claims the oldest runnable job for `workerId` (see cycle()), or returns null when
   * nothing is runnable.
   */
  async claim(workerId: string, leaseMs: number): Promise<ClaimedJob | null> {
    return (await this.cycle([], [workerId], leaseMs)).claimed[0]?.job ?? null;
  }

  /**
   * Records `outcomes` and claims up to `runIds.length` jobs, in one statement (in `client`'s
   * transaction when given; see CYCLE_SQL). A claim skips jobs whose lock key a running job
   * holds and takes one job per key; the unique index on running lock keys settles races
   * between claimers (the loser's statement is refused whole and tried again: it then sees
   * the key taken).
   */
  async cycle(outcomes: readonly Outcome[], runIds: readonly string[], leaseMs: number, client: pg.Pool | pg.PoolClient = this.pool): Promise<CycleResult> {
    for (let attempt = 0; ; attempt++) {
      try {
        const { rows } = await client.query<{
          finished: { ord: number; job: JobJson }[];
          claimed: { job: JobJson; maxAttempts: number; submittedBy: string | null; runId: string }[];
          candidates: number;
          next_due: Date | null;
        }>({
          // In a caller's transaction the events wait for its COMMIT (see cycleSql).
          ...(client === this.pool ? { name: 'herald_job_cycle', text: CYCLE_SQL } : { name: 'herald_job_cycle_in_tx', text: CYCLE_IN_TX_SQL }),
          values: [
            outcomes.map((o) => o.jobId),
            outcomes.map((o) => o.runId),
            outcomes.map((o) => o.ok),
            outcomes.map((o) => (o.ok ? JSON.stringify(o.result ?? null) : null)),
            outcomes.map((o) => (o.ok ? null : o.error.slice(0, 4096))),
            outcomes.map((o) => (o.ok ? null : o.retryInMs)),
            runIds,
            leaseMs,
            outcomes.map((o) => !o.ok && o.unstarted === true),
          ],
        });
        const r = rows[0]!;
        const finished: (JobJson | null)[] = outcomes.map(() => null);
        for (const f of r.finished) finished[f.ord - 1] = f.job;
        return {
          finished,
          claimed: r.claimed.map((c) => ({ job: { ...c.job, maxAttempts: c.maxAttempts, submittedBy: c.submittedBy }, runId: c.runId })),
          full: r.claimed.length > 0 && r.candidates === runIds.length,
          nextDue: r.next_due,
        };
      } catch (err) {
        // Another claimer took a job with the same lock key first. Inside a caller's
        // transaction the statement cannot simply run again: give up the claims.
        if ((err as { code?: string }).code === '23505' && client === this.pool && attempt < 3) continue;
        throw err;
      }
    }
  }

  /** Extends the lease; false if this worker no longer holds the job. */
  async renew(jobId: number, workerId: string, leaseMs: number): Promise<boolean> {
    const { rowCount } = await this.pool.query({
      name: 'herald_job_renew',
      text: `update herald.jobs set locked_until = now() + $3 * interval '1 millisecond' where id = $1 and locked_by = $2 and status = 'running'`,
      values: [jobId, workerId, leaseMs],
    });
    return rowCount === 1;
  }

  /** Marks the job succeeded inside the caller's effects transaction; throws if the lease was lost. */
  async complete(tx: pg.PoolClient, jobId: number, workerId: string, result: unknown): Promise<JobJson> {
    const job = (await this.cycle([{ jobId, runId: workerId, ok: true, result }], [], 0, tx)).finished[0];
    if (!job) throw leaseLost(jobId);
    return job;
  }

  /** How many jobs have each status. */
  async counts(): Promise<Record<JobStatus, number>> {
    const { rows } = await this.pool.query<{ status: JobStatus; n: number }>(`select status, count(*)::int as n from herald.jobs group by status`);
    const out = { queued: 0, running: 0, succeeded: 0, failed: 0 };
    for (const r of rows) out[r.status] = r.n;
    return out;
  }
}
