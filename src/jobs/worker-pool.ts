/**
 * WorkerPool: runs jobs in this process. It wakes on `jobs` events read through a
 * Subscription (the same path as every client), not a polling loop; a timer covers only
 * what no event announces (a retry coming due, a lapsed lease). Each running job holds a
 * lease it renews; its effects commit in one transaction with its success, so a job that
 * fails or times out leaves the store as it was.
 */
import { randomBytes } from 'node:crypto';
import type pg from 'pg';
import type { Config } from '../config.ts';
import { type HeraldContext, subscribe } from '../context.ts';
import { withTransaction } from '../db/pool.ts';
import { coerceError, HeraldError } from '../errors.ts';
import type { Subscription } from '../events/subscription.ts';
import { TopicFilter } from '../events/topic.ts';
import type { ClaimedJob, JobStore, LogLevel } from './store.ts';

/** What a handler gets besides its job. */
export interface JobContext {
  /** Appends a log line (visible live on `job:<id>`). */
  log(level: LogLevel, message: string): Promise<void>;
  /** The uploaded input (publish archive), if any. */
  input(): Promise<Buffer | null>;
  /** Applies the effects and marks the job succeeded, in one transaction. */
  commit<T>(effects: (tx: pg.PoolClient) => Promise<T>): Promise<T>;
  /** Aborted on timeout or shutdown. */
  signal: AbortSignal;
}

export interface JobHandler {
  run(job: ClaimedJob, jc: JobContext): Promise<void>;
}

export type WorkerPoolState = 'idle' | 'running' | 'stopping' | 'stopped';

export class WorkerPool {
  readonly id = `w-${randomBytes(4).toString('hex')}`;
  private _state: WorkerPoolState = 'idle';
  /** Running jobs by run id. */
  private readonly active = new Map<string, Promise<void>>();
  private sub: Subscription | null = null;
  private timer: NodeJS.Timeout | null = null;
  private claiming: Promise<void> | null = null;
  private claimAgain = false;
  private readonly aborter = new AbortController();

  constructor(
    private readonly ctx: HeraldContext,
    private readonly store: JobStore,
    private readonly handlers: Record<string, JobHandler>,
    private readonly size: number = ctx.config.workers,
  ) {}

  get state(): WorkerPoolState {
    return this._state;
  }

  get running(): number {
    return this.active.size;
  }

  async start(): Promise<void> {
    if (this._state !== 'idle' || this.size === 0) return;
    this._state = 'running';
    this.sub = await subscribe(this.ctx, 'worker', { trusted: true }, { filter: TopicFilter.parse(['jobs']), since: 'now' });
    void this.follow(this.sub);
    this.wake();
  }

  /** Stops claiming and waits for running jobs (their leases let others retry any that hang). */
  async stop(graceMs = this.ctx.config.shutdownGraceMs): Promise<void> {
    if (this._state !== 'running') return;
    this._state = 'stopping';
    this.sub?.close();
    if (this.timer) clearTimeout(this.timer);
    const late = setTimeout(() => this.aborter.abort(), graceMs);
    // A claim in flight may still add a job: wait for it before collecting the runs.
    await this.claiming;
    await Promise.allSettled([...this.active.values()]);
    clearTimeout(late);
    this._state = 'stopped';
  }

  private async follow(sub: Subscription): Promise<void> {
    let current = sub;
    while (this._state === 'running') {
      try {
        const events = await current.next();
        if (current.state === 'closed') return;
        if (events.length > 0) this.wake();
      } catch (err) {
        // The stream failed (database away): the timer covers the gap; reopen shortly.
        this.ctx.logger.warn({ err: coerceError(err).message }, 'worker wake-up stream failed; reopening');
        current.close();
        await new Promise((r) => setTimeout(r, this.ctx.config.jobPollMs));
        if (this._state !== 'running') return;
        try {
          current = this.sub = await subscribe(this.ctx, 'worker', { trusted: true }, { filter: TopicFilter.parse(['jobs']), since: 'now' });
          this.wake();
        } catch {
          // Still away: try again on the next round.
        }
      }
    }
  }

  /** Claims jobs until the pool is full or nothing is runnable; folds concurrent calls. */
  wake(): void {
    if (this._state !== 'running') return;
    if (this.claiming) {
      this.claimAgain = true;
      return;
    }
    this.claiming = this.claimLoop().finally(() => {
      this.claiming = null;
      if (this.claimAgain) {
        this.claimAgain = false;
        this.wake();
      }
    });
  }

  private async claimLoop(): Promise<void> {
    let drained = false;
    try {
      while (this._state === 'running' && this.active.size < this.size) {
        // The lease holder is this run, not just this process: if a lease lapses and this
        // same process reclaims the job, the first run's renew/complete must fail.
        const runId = `${this.id}/${randomBytes(3).toString('hex')}`;
        const job = await this.store.claim(runId, this.ctx.config.jobLeaseMs);
        if (!job) {
          drained = true;
          break;
        }
        const run = this.execute(job, runId).finally(() => {
          this.active.delete(runId);
          this.wake();
        });
        this.active.set(runId, run);
      }
    } catch (err) {
      this.ctx.logger.warn({ err: coerceError(err).message }, 'claiming jobs failed; retrying on the timer');
      drained = true;
    }
    // With every worker busy, a finishing job wakes the pool; the timer (and its query) is
    // only needed when nothing was claimable.
    if (drained || !this.timer) await this.schedule();
  }

  /** Sets the timer for the next thing no event will announce. */
  private async schedule(): Promise<void> {
    if (this._state !== 'running') return;
    if (this.timer) clearTimeout(this.timer);
    let delay = this.ctx.config.jobPollMs;
    try {
      const due = await this.store.nextDue();
      if (due) delay = Math.min(delay, Math.max(10, due.getTime() - Date.now() + 5));
    } catch {
      // Database unavailable: the default interval applies.
    }
    this.timer = setTimeout(() => this.wake(), delay);
  }

  private timeoutFor(type: string, config: Config): number {
    return config.jobTimeoutsMs[type] ?? config.jobTimeoutMs;
  }

  private async execute(job: ClaimedJob, runId: string): Promise<void> {
    const { config, logger } = this.ctx;
    const handler = this.handlers[job.type];
    const aborter = new AbortController();
    const onShutdown = () => aborter.abort(new HeraldError('HERALD_ERR_SHUTTING_DOWN', 'worker shutting down'));
    this.aborter.signal.addEventListener('abort', onShutdown);
    const timeoutMs = this.timeoutFor(job.type, config);
    const timeout = setTimeout(() => aborter.abort(new HeraldError('HERALD_ERR_UNAVAILABLE', `timed out after ${timeoutMs} ms`)), timeoutMs);
    // Renew at a third of the lease so two missed renewals still leave it valid.
    const heartbeat = setInterval(() => {
      this.store.renew(job.id, runId, config.jobLeaseMs).then(
        (held) => held || aborter.abort(new HeraldError('HERALD_ERR_UNAVAILABLE', 'lease lost to another worker')),
        () => undefined,
      );
    }, config.jobLeaseMs / 3);
    const log = async (level: LogLevel, message: string) => {
      await this.store.log(job.id, level, message);
    };
    try {
      if (job.attempts > job.maxAttempts) {
        throw new HeraldError('HERALD_ERR_INTERNAL', `gave up after ${job.maxAttempts} attempts: the worker running it stopped renewing its lease`);
      }
      if (!handler) throw new HeraldError('HERALD_ERR_BAD_REQUEST', `no handler for job type ${job.type}`);
      let committed = false;
      const jc: JobContext = {
        log,
        input: () => this.store.input(job.id),
        signal: aborter.signal,
        commit: async (effects) => {
          if (aborter.signal.aborted) throw aborter.signal.reason;
          const out = await withTransaction(this.ctx.pool, async (tx) => {
            const result = await effects(tx);
            if (aborter.signal.aborted) throw aborter.signal.reason;
            await this.store.complete(tx, job.id, runId, result);
            return result;
          });
          committed = true;
          return out;
        },
      };
      await Promise.race([
        handler.run(job, jc),
        new Promise<never>((_, reject) => aborter.signal.addEventListener('abort', () => reject(aborter.signal.reason), { once: true })),
      ]);
      if (!committed) await jc.commit(async () => null);
    } catch (err) {
      const e = coerceError(err);
      // Shutdown: leave the job running; its lease lapses and another worker retries it.
      if (e.code === 'HERALD_ERR_SHUTTING_DOWN') {
        await log('warn', `attempt ${job.attempts} interrupted by shutdown; another worker will retry it`).catch(() => undefined);
        return;
      }
      const retry = e.retryable && job.attempts < job.maxAttempts;
      // Job records are public: an unexpected exception's text stays in the server log.
      const message = err instanceof HeraldError ? e.message : 'internal error (details in the server log)';
      await log('error', retry ? `attempt ${job.attempts} failed: ${message}; retrying` : `failed: ${message}`).catch(() => undefined);
      if (e.code === 'HERALD_ERR_INTERNAL') logger.error({ err, job: job.id }, 'job failed');
      {
        const backoff = config.jobRetryBackoffMs * 2 ** (job.attempts - 1);
        await this.store
          .fail(job.id, runId, message, retry ? backoff : null)
          .catch((failErr: unknown) => logger.warn({ err: coerceError(failErr).message, job: job.id }, 'could not record job failure; its lease will lapse'));
      }
    } finally {
      clearTimeout(timeout);
      clearInterval(heartbeat);
      this.aborter.signal.removeEventListener('abort', onShutdown);
    }
  }
}
