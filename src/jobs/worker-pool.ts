/**
 * WorkerPool: runs jobs in this process. It wakes on `jobs` events read through a
 * Subscription (the same path as every client), not a polling loop; a timer covers only
 * what no event announces (a retry coming due, a lapsed lease). Each running job holds a
 * lease it renews; its effects commit in one transaction with its success, so a job that
 * fails or times out leaves the store as it was.
 *
 * Writes go in batches (docs/jobs.md "Batches"): one claim takes as many jobs as there are
 * free slots plus `prefetch` more, and the log lines and outcomes (a success without effects,
 * a failure) of all runs gather while the previous write is in flight and commit together
 * (GroupCommit). A claimed job that finds no free slot waits in this process for one, its
 * lease renewed, and starts the moment a handler returns, without waiting for the next claim;
 * the claim for the slot it took overlaps its run. A run's log lines are written before its
 * outcome, so a job's events stay in order.
 */
import { randomBytes } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import type pg from 'pg';
import { backoffMs } from '../backoff.ts';
import type { Config } from '../config.ts';
import { withTransaction } from '../db/pool.ts';
import { coerceError, HeraldError } from '../errors.ts';
import type { Since, Subscription } from '../events/subscription.ts';
import { TopicFilter } from '../events/topic.ts';
import type { Logger } from '../logger.ts';
import { GroupCommit } from '../group-commit.ts';
import { type ClaimedJob, type CycleResult, type JobJson, type JobStore, type LogLevel, leaseLost, type NewLogLine, type Outcome } from './store.ts';

/** The settings a WorkerPool reads (the whole Config satisfies it). */
export type WorkerPoolSettings = Pick<
  Config,
  'workers' | 'jobLeaseMs' | 'jobPollMs' | 'jobTimeoutMs' | 'jobTimeoutsMs' | 'jobRetryBackoffMs' | 'shutdownGraceMs' | 'jobBatchMax' | 'jobPrefetch'
>;

/** What a WorkerPool uses, and nothing more. */
export interface WorkerPoolDeps {
  readonly store: JobStore;
  /** The pool a job's effects commit through, in one transaction with its success. */
  readonly pool: pg.Pool;
  readonly logger: Logger;
  /** Opens the `jobs` wake-up stream, counted under `transport` in the subscriber gauge. */
  subscribe(transport: string, opts: { filter: TopicFilter; since: Since }): Promise<Subscription>;
  readonly settings: WorkerPoolSettings;
}

/** A log line a handler hands to commit(): a NewLogLine of its own job. */
export type JobLine = Readonly<Omit<NewLogLine, 'jobId'>>;

/** What a handler gets besides its job. */
export interface JobContext {
  /** Appends a log line (visible live on `job:<id>` once the promise resolves). */
  log(level: LogLevel, message: string): Promise<void>;
  /** The uploaded input (publish archive), if any. */
  input(): Promise<Buffer | null>;
  /**
   * Applies the effects and marks the job succeeded, in one transaction of its own. A handler
   * with no effects returns without calling it: its success is then written in a batch.
   * `lines` are written in that transaction, after the effects and before the success (so
   * after every line log() wrote before), as part of the effects: they appear with the
   * success, or, if it rolls back, not at all. A line that only announces the commit
   * (`retracting …`) so costs no commit of its own.
   */
  commit<T>(effects: (tx: pg.PoolClient) => Promise<T>, opts?: { readonly lines?: readonly JobLine[] }): Promise<T>;
  /** Aborted on timeout or shutdown. */
  signal: AbortSignal;
}

/** Runs one job type; registered with the pool by type name. */
export interface JobHandler {
  run(job: ClaimedJob, jc: JobContext): Promise<void>;
}

/** idle → running (start) → stopping (stop: no more claims) → stopped (runs ended). */
export type WorkerPoolState = 'idle' | 'running' | 'stopping' | 'stopped';

const WORKER_POOL_MOVES: Readonly<Record<WorkerPoolState, readonly WorkerPoolState[]>> = {
  idle: ['running'],
  running: ['stopping'],
  stopping: ['stopped'],
  stopped: [],
};

/** The transport name the pool's wake-up stream is counted under (`herald_subscribers`). */
const TRANSPORT = 'worker';

/** Runs up to `size` jobs at a time in this process (see the file header). */
export class WorkerPool {
  /** This pool's id; each run's lease holder is `<id>/<random>`. */
  readonly id = `w-${randomBytes(4).toString('hex')}`;
  private _state: WorkerPoolState = 'idle';
  /** Every run by run id, until its outcome is written. */
  private readonly active = new Map<string, Promise<void>>();
  /** Runs whose handler has not returned yet, started or waiting for a slot: what a claim subtracts. */
  private held = 0;
  /** Handlers running: the slots in use, at most `size`. */
  private executing = 0;
  /** Claimed runs waiting for a slot, first claimed first: start() hands one the slot, cancel() refuses it. */
  private readonly waiting: { start: () => void; cancel: (err: unknown) => void }[] = [];
  /** Jobs claimed beyond the free slots (HERALD_JOB_PREFETCH, default the pool's size). */
  private readonly prefetch: number;
  private sub: Subscription | null = null;
  private timer: NodeJS.Timeout | null = null;
  private readonly aborter = new AbortController();
  /** Log lines of every run, a statement per flush. */
  private readonly logs: GroupCommit<NewLogLine, number>;
  /** Outcomes of every run, each flush also claiming jobs for the free slots (cycle()). */
  private readonly writes: GroupCommit<Outcome, JobJson | null>;

  constructor(
    private readonly deps: WorkerPoolDeps,
    private readonly handlers: Record<string, JobHandler>,
    private readonly size: number = deps.settings.workers,
  ) {
    const { store, settings } = deps;
    this.prefetch = settings.jobPrefetch ?? size;
    // Every held run listens for shutdown: as many as slots and prefetched jobs, past Node's
    // default warning at 10.
    setMaxListeners(size + this.prefetch + 1, this.aborter.signal);
    this.logs = new GroupCommit({ write: (lines) => store.writeLogs(lines), maxItems: settings.jobBatchMax, gatherTurn: true });
    this.writes = new GroupCommit({ write: (outcomes) => this.cycle(outcomes), maxItems: settings.jobBatchMax, gatherTurn: true });
  }

  /** Where the pool is in its lifecycle (reported by GET /api/v1/status). */
  get state(): WorkerPoolState {
    return this._state;
  }

  /** Jobs running now (their handler has not returned). */
  get running(): number {
    return this.executing;
  }

  /** Starts following `jobs` and claims what is runnable; a pool of size 0 stays idle. */
  async start(): Promise<void> {
    if (this.size === 0 || !this.transition('running')) return;
    this.sub = await this.openWakeStream();
    void this.follow(this.sub);
    this.wake();
  }

  /**
   * Stops claiming, gives back the jobs claimed ahead that have not started (queued again,
   * their attempt given back, for any worker), and waits for running jobs (their leases let
   * others retry any that hang).
   */
  async stop(graceMs = this.deps.settings.shutdownGraceMs): Promise<void> {
    if (!this.transition('stopping')) return;
    this.sub?.close();
    if (this.timer) clearTimeout(this.timer);
    for (const w of this.waiting.splice(0)) w.cancel(notStarted());
    const late = setTimeout(() => this.aborter.abort(), graceMs);
    // A claim in flight may still add a run: wait for it before collecting the runs, whose
    // promises end once their outcomes are written.
    await this.writes.idle();
    await Promise.allSettled([...this.active.values()]);
    clearTimeout(late);
    this.transition('stopped');
  }

  /** The one place the state changes: refuses moves WORKER_POOL_MOVES does not list. */
  private transition(to: WorkerPoolState): boolean {
    if (!WORKER_POOL_MOVES[this._state].includes(to)) return false;
    this._state = to;
    return true;
  }

  private openWakeStream(): Promise<Subscription> {
    return this.deps.subscribe(TRANSPORT, { filter: TopicFilter.parse(['jobs']), since: 'now' });
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
        this.deps.logger.warn({ err: coerceError(err).message }, 'worker wake-up stream failed; reopening');
        current.close();
        await new Promise((r) => setTimeout(r, this.deps.settings.jobPollMs));
        if (this._state !== 'running') return;
        try {
          current = this.sub = await this.openWakeStream();
          this.wake();
        } catch {
          // Still away: try again on the next round.
        }
      }
    }
  }

  /**
   * Claims jobs for the free slots, in the next write (with whatever outcomes are waiting);
   * wake-ups that come while a write is in flight fold into one.
   */
  wake(): void {
    if (this._state === 'running') this.writes.poke();
  }

  /** One statement: `outcomes`, and claims for the free slots (JobStore.cycle). */
  private async cycle(outcomes: readonly Outcome[]): Promise<(JobJson | null)[]> {
    const { store, settings, logger } = this.deps;
    const free = this._state === 'running' ? Math.max(0, Math.min(this.size + this.prefetch - this.held, settings.jobBatchMax)) : 0;
    if (outcomes.length === 0 && free === 0) return [];
    // The lease holder is the run, not just this process: if a lease lapses and this same
    // process reclaims the job, the first run's renew/complete must fail.
    const runIds = Array.from({ length: free }, () => `${this.id}/${randomBytes(3).toString('hex')}`);
    let result: CycleResult;
    try {
      result = await store.cycle(outcomes, runIds, settings.jobLeaseMs);
    } catch (err) {
      if (free > 0) {
        logger.warn({ err: coerceError(err).message }, 'claiming jobs failed; retrying on the timer');
        this.schedule(null);
      }
      throw err;
    }
    for (const { job, runId } of result.claimed) this.launch(job, runId);
    // More may be runnable: claim again. Otherwise (or with every slot busy and no timer
    // yet) set the timer for what no event will announce.
    if (result.full) this.wake();
    else if (free > 0 || !this.timer) this.schedule(result.nextDue);
    return result.finished;
  }

  /**
   * Runs a claimed job once a slot is free; its hold (and its slot) ends when the handler
   * returns, its entry when the outcome is written.
   */
  private launch(job: ClaimedJob, runId: string): void {
    this.held++;
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      this.held--;
      this.wake();
    };
    const run = this.execute(job, runId, release).finally(() => {
      release();
      this.active.delete(runId);
    });
    this.active.set(runId, run);
  }

  /** Sets the timer for the next thing no event will announce, due at `due` (at most HERALD_JOB_POLL_MS away). */
  private schedule(due: Date | null): void {
    if (this._state !== 'running') return;
    if (this.timer) clearTimeout(this.timer);
    let delay = this.deps.settings.jobPollMs;
    if (due) delay = Math.min(delay, Math.max(10, due.getTime() - Date.now() + 5));
    this.timer = setTimeout(() => this.wake(), delay);
  }

  /**
   * Resolves once this run has one of the `size` slots (at once if one is free, else when a
   * handler returns, first claimed first). Rejects with the abort's reason if `signal` aborts
   * first, and with notStarted() once the pool is stopping and no slot is free. The caller
   * frees the slot with freeSlot().
   */
  private takeSlot(signal: AbortSignal): Promise<void> {
    if (this.executing < this.size) {
      this.executing++;
      return Promise.resolve();
    }
    if (signal.aborted) return Promise.reject(signal.reason);
    if (this._state !== 'running') return Promise.reject(notStarted());
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        const k = this.waiting.indexOf(waiter);
        if (k >= 0) this.waiting.splice(k, 1);
        reject(signal.reason);
      };
      const waiter = {
        // Handed over by freeSlot(): the slot passes from one run to the next without freeing.
        start: () => {
          signal.removeEventListener('abort', onAbort);
          resolve();
        },
        // stop(): already taken off the list.
        cancel: (err: unknown) => {
          signal.removeEventListener('abort', onAbort);
          reject(err);
        },
      };
      this.waiting.push(waiter);
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** Gives a slot to the first waiting run, or frees it. */
  private freeSlot(): void {
    const next = this.waiting.shift();
    if (next) next.start();
    else this.executing--;
  }

  private async execute(job: ClaimedJob, runId: string, release: () => void): Promise<void> {
    const { settings, logger, store } = this.deps;
    const handler = this.handlers[job.type];
    const aborter = new AbortController();
    const onShutdown = () => aborter.abort(new HeraldError('HERALD_ERR_SHUTTING_DOWN', 'worker shutting down'));
    this.aborter.signal.addEventListener('abort', onShutdown);
    // Claimed after the grace period ended (a claim in flight): that abort has come already.
    if (this.aborter.signal.aborted) onShutdown();
    let slot = false;
    let started = false;
    // The handler is done: its slot frees, and shutdown no longer concerns it (only held runs
    // listen, so the listeners stay as few as the slots and the prefetched jobs).
    const handlerDone = () => {
      this.aborter.signal.removeEventListener('abort', onShutdown);
      if (slot) {
        slot = false;
        this.freeSlot();
      }
      release();
    };
    let timeout: NodeJS.Timeout | undefined;
    // From the claim, a prefetched job's wait for a slot included. Renew at a third of the
    // lease so two missed renewals still leave it valid.
    const heartbeat = setInterval(() => {
      store.renew(job.id, runId, settings.jobLeaseMs).then(
        (held) => held || aborter.abort(new HeraldError('HERALD_ERR_UNAVAILABLE', 'lease lost to another worker')),
        () => undefined,
      );
    }, settings.jobLeaseMs / 3);
    // Lines are written in the order they were given (one GroupCommit, first in first out),
    // so once the last one is written every earlier one is: the outcome waits for it.
    let lastLine: Promise<unknown> = Promise.resolve();
    const log = async (level: LogLevel, message: string) => {
      const line = this.logs.push({ jobId: job.id, level, message });
      lastLine = line.catch(() => undefined);
      await line;
    };
    try {
      // Jobs that cannot run fail at once, without waiting for a slot.
      if (job.attempts > job.maxAttempts) {
        throw new HeraldError('HERALD_ERR_INTERNAL', `gave up after ${job.maxAttempts} attempts: the worker running it stopped renewing its lease`);
      }
      if (!handler) throw new HeraldError('HERALD_ERR_BAD_REQUEST', `no handler for job type ${job.type}`);
      await this.takeSlot(aborter.signal);
      slot = started = true;
      const timeoutMs = settings.jobTimeoutsMs[job.type] ?? settings.jobTimeoutMs;
      timeout = setTimeout(() => aborter.abort(new HeraldError('HERALD_ERR_UNAVAILABLE', `timed out after ${timeoutMs} ms`)), timeoutMs);
      let committed = false;
      const jc: JobContext = {
        log,
        input: () => store.input(job.id),
        signal: aborter.signal,
        commit: async (effects, opts) => {
          if (aborter.signal.aborted) throw aborter.signal.reason;
          await lastLine;
          const out = await withTransaction(this.deps.pool, async (tx) => {
            const result = await effects(tx);
            if (aborter.signal.aborted) throw aborter.signal.reason;
            // Last but the success, so that the lines (their ids, and the lock sql/017 takes on
            // the job's row) are taken only as the transaction ends, after the effects' waits.
            await store.writeLogs(
              (opts?.lines ?? []).map((l) => ({ ...l, jobId: job.id })),
              tx,
            );
            await store.complete(tx, job.id, runId, result);
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
      handlerDone();
      if (!committed) {
        if (aborter.signal.aborted) throw aborter.signal.reason;
        await lastLine;
        // No effects: the success joins whatever other outcomes are being written.
        const done = await this.writes.push({ jobId: job.id, runId, ok: true, result: null });
        if (!done) throw leaseLost(job.id);
      }
    } catch (err) {
      handlerDone();
      const e = coerceError(err);
      // Shutdown before it started (claimed ahead): give it back, queued at once with its
      // attempt returned, rather than leave it to its lease.
      if (e.code === 'HERALD_ERR_SHUTTING_DOWN' && !started) {
        await this.writes
          .push({ jobId: job.id, runId, ok: false, error: '', retryInMs: null, unstarted: true })
          .catch((err: unknown) => logger.warn({ err: coerceError(err).message, job: job.id }, 'could not give back an unstarted job; its lease will lapse'));
        return;
      }
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
      // The one backoff curve (src/backoff.ts) from HERALD_JOB_RETRY_BACKOFF_MS, uncapped:
      // attempts are few (HERALD_JOB_MAX_ATTEMPTS). The jitter spreads out the retries of
      // jobs that failed together (a database restart fails every running job at once).
      const retryInMs = retry ? backoffMs(job.attempts - 1, Number.POSITIVE_INFINITY, settings.jobRetryBackoffMs) : null;
      await this.writes
        .push({ jobId: job.id, runId, ok: false, error: message, retryInMs })
        .catch((failErr: unknown) => logger.warn({ err: coerceError(failErr).message, job: job.id }, 'could not record job failure; its lease will lapse'));
      // A retry announces itself on `job:<id>` only, not on `jobs`: look for it here (due at
      // once with HERALD_JOB_RETRY_BACKOFF_MS=0; the timer covers a later one).
      this.wake();
    } finally {
      clearTimeout(timeout);
      clearInterval(heartbeat);
      handlerDone();
    }
  }
}

/** What a claimed job that never got a slot is refused with when the pool stops. */
function notStarted(): HeraldError {
  return new HeraldError('HERALD_ERR_SHUTTING_DOWN', 'not started: this worker is shutting down');
}
