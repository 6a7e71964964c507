/**
 * The pruner: deletes events past retention (max age and/or max count) in the background.
 *
 * Batched deletes rather than partitions: ids only grow and the oldest rows sit at the
 * start of the primary key, so each batch is an index range delete on pages no appender
 * touches (appends never wait), with no partition maintenance to run or get wrong. The cost
 * is vacuum work proportional to what is deleted; at the volumes one gateway serves,
 * autovacuum keeps up. Partitioning by id range is the step up if a deployment ever needs
 * to drop hundreds of millions of rows a day.
 */
import type { Logger } from '../logger.ts';
import type { EventLog, PruneOptions } from './log.ts';

/** Retention limits (from PruneOptions), how often to prune, and where to report. */
export interface PrunerOptions extends PruneOptions {
  /** Time between pruning passes, in ms. */
  intervalMs: number;
  log: EventLog;
  logger: Logger;
  /** Called with the number removed after each pass that removed some (metrics). */
  onPruned?: (n: number) => void;
  /** Injectable clock for tests. */
  now?: () => Date;
}

/** Runs EventLog.prune() on a timer, one pass at a time. */
export class Pruner {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<number> | null = null;
  private readonly opts: PrunerOptions;

  constructor(opts: PrunerOptions) {
    this.opts = opts;
  }

  /** Starts the timer, unless retention is off (no age and no count limit); idempotent. */
  start(): void {
    if (this.timer || (this.opts.maxAgeMs === 0 && this.opts.maxEvents === 0)) return;
    this.timer = setInterval(() => void this.runOnce(), this.opts.intervalMs);
  }

  /** One pruning pass (no overlap with a running one); returns how many events it removed. */
  runOnce(): Promise<number> {
    this.running ??= this.opts.log
      .prune(this.opts, this.opts.now?.() ?? new Date())
      .then((n) => {
        if (n > 0) {
          this.opts.logger.info({ removed: n }, 'pruned events past retention');
          this.opts.onPruned?.(n);
        }
        return n;
      })
      .catch((err: Error) => {
        this.opts.logger.warn({ err: err.message }, 'pruning failed; retrying on the next interval');
        return 0;
      })
      .finally(() => {
        this.running = null;
      });
    return this.running;
  }

  /** Stops the timer and waits for a pass in progress. */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.running;
  }
}
