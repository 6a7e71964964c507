/**
 * GroupCommit: joins concurrent writes into one statement per flush, the way PostgreSQL groups
 * WAL flushes (issue 15). While a flush is in flight the next writes gather, and they go as
 * one batch as soon as it ends: a write waits at most for the flush in flight and then its
 * own, and nothing waits on a timer. The one mechanism behind the group append
 * (events/appender.ts) and the job engine's batched writes (jobs/worker-pool.ts).
 *
 * Each caller gets its own answer or its own error:
 * - The write is handed the batch's items and returns one answer per item, in order.
 * - A batch the database refuses for what an item holds, or rolls back as a deadlock with
 *   another writer (isRolledBack: nothing was written), is written again item by item, in
 *   order, so one bad item never fails another.
 * - Any other error (the connection lost, the server going away) may have come after the
 *   commit, so nothing is written again: every caller of that flush gets the error, as the
 *   caller of a single statement would, and retries itself if it wants to.
 *
 * Bounds: a batch takes items while it stays within `maxItems` and `maxBytes` (an item
 * bigger than either goes alone: an item is never split); items waiting for a flush are
 * bounded by `maxQueueItems` and `maxQueueBytes`, past which push() refuses at once with
 * `unavailable` and a Retry-After rather than queue for longer than a client should wait.
 *
 * Lifecycle: `open` takes writes; close() moves to `draining`, which refuses new ones with
 * `shutting_down` while the queued ones are flushed; `closed` once they all are.
 */
import { HeraldError, isRolledBack } from './errors.ts';

/** See the file comment. */
export type GroupCommitState = 'open' | 'draining' | 'closed';

const MOVES: Readonly<Record<GroupCommitState, readonly GroupCommitState[]>> = {
  open: ['draining'],
  draining: ['closed'],
  closed: [],
};

/** How a GroupCommit writes and batches. Only `write` and `maxItems` are required. */
export interface GroupCommitOptions<I, O> {
  /** Writes `items` in one statement and returns one answer per item, in order. */
  readonly write: (items: readonly I[]) => Promise<O[]>;
  /** Most items one flush takes, counted by `count` (a single item with more goes alone). */
  readonly maxItems: number;
  /** What an item counts toward `maxItems` and `maxQueueItems`: the Appender's caller counts its events. Default 1. */
  readonly count?: (item: I) => number;
  /** An item's size in bytes, toward `maxBytes` and `maxQueueBytes`. Default 0. */
  readonly bytes?: (item: I) => number;
  /** Most bytes one flush takes (a single item with more goes alone). Default unbounded. */
  readonly maxBytes?: number;
  /** Most items (by `count`) waiting for a flush; past it push() refuses with `unavailable`. Default unbounded. */
  readonly maxQueueItems?: number;
  /** Most bytes waiting for a flush; past it push() refuses with `unavailable`. Default unbounded. */
  readonly maxQueueBytes?: number;
  /**
   * Flushes in flight at once. 1 (the default) is pure group commit, and keeps push order:
   * items are committed in the order they were pushed, even by callers that do not await.
   * With more, a later flush may commit first, so only awaited writes are ordered.
   */
  readonly maxFlushes?: number;
  /**
   * When idle, wait for the current turn of the event loop to end before flushing, so that
   * writes made together go together (the worker pool's log line, outcome and wake-up of one
   * run). Default false: the first write goes at once. The Appender keeps that (a lone publish
   * waits for nothing, docs/operations.md); in process, true measured no slower for a lone
   * caller and filled flushes better with 8–64 callers, but it is untried over HTTP.
   */
  readonly gatherTurn?: boolean;
  /** Words of the refusals, which reach clients: what the items are and what a flush does. */
  readonly wording?: GroupCommitWording;
}

/** The words push()'s refusals are made of (default: `items`, `written`, `retry shortly`). */
export interface GroupCommitWording {
  /** The items, plural: `5 events are waiting to be appended`. */
  readonly items: string;
  /** What a flush does to them: `appended`. */
  readonly written: string;
  /** What a caller refused by close() should do instead: `server is shutting down: retry shortly`. */
  readonly whenClosed: string;
}

const DEFAULT_WORDING: GroupCommitWording = { items: 'items', written: 'written', whenClosed: 'retry shortly' };

/** What a refused queue tells the client: a flush drains it within milliseconds. */
const RETRY_AFTER_S = 1;

/** One pushed item, waiting for its flush. */
interface Waiter<I, O> {
  readonly item: I;
  readonly count: number;
  readonly bytes: number;
  readonly resolve: (out: O) => void;
  readonly reject: (err: unknown) => void;
}

/** One item's answer from its flush. */
type Answer<O> = { readonly ok: true; readonly out: O } | { readonly ok: false; readonly err: unknown };

/** One statement per flush for the items pushed meanwhile; see the file comment. */
export class GroupCommit<I, O> {
  private readonly write: (items: readonly I[]) => Promise<O[]>;
  private readonly count: (item: I) => number;
  private readonly bytes: (item: I) => number;
  private readonly maxItems: number;
  private readonly maxBytes: number;
  private readonly maxQueueItems: number;
  private readonly maxQueueBytes: number;
  private readonly maxFlushes: number;
  private readonly gatherTurn: boolean;
  private readonly wording: GroupCommitWording;
  private readonly queue: Waiter<I, O>[] = [];
  private queuedItems = 0;
  private queuedBytes = 0;
  private flushing = 0;
  /** A flush is wanted even if nothing is waiting (poke()). */
  private poked = false;
  /** A flush waits for the end of this turn of the event loop (gatherTurn). */
  private gathering = false;
  private _state: GroupCommitState = 'open';
  /** Who waits for nothing to be queued or in flight: idle() and close(). */
  private idleWaiters: (() => void)[] = [];

  constructor(opts: GroupCommitOptions<I, O>) {
    this.write = opts.write;
    this.count = opts.count ?? (() => 1);
    this.bytes = opts.bytes ?? (() => 0);
    this.maxItems = opts.maxItems;
    this.maxBytes = opts.maxBytes ?? Number.POSITIVE_INFINITY;
    this.maxQueueItems = opts.maxQueueItems ?? Number.POSITIVE_INFINITY;
    this.maxQueueBytes = opts.maxQueueBytes ?? Number.POSITIVE_INFINITY;
    this.maxFlushes = opts.maxFlushes ?? 1;
    this.gatherTurn = opts.gatherTurn ?? false;
    this.wording = opts.wording ?? DEFAULT_WORDING;
  }

  /** See GroupCommitState. */
  get state(): GroupCommitState {
    return this._state;
  }

  /** Items (by `count`) waiting for a flush, not those in flight. */
  get waitingItems(): number {
    return this.queuedItems;
  }

  /**
   * Writes `item` with whatever else is waiting; resolves with its answer once its flush has
   * committed. Refused at once with `shutting_down` after close(), and with `unavailable`
   * (Retry-After 1 s) when the queue is full.
   */
  push(item: I): Promise<O> {
    if (this._state !== 'open') {
      return Promise.reject(new HeraldError('HERALD_ERR_SHUTTING_DOWN', `server is shutting down: ${this.wording.whenClosed}`));
    }
    const count = this.count(item);
    const bytes = this.bytes(item);
    // An item bigger than the whole queue is taken when the queue is empty: refusing it would
    // refuse it forever.
    const tooMany = this.queuedItems + count > this.maxQueueItems;
    if (this.queue.length > 0 && (tooMany || this.queuedBytes + bytes > this.maxQueueBytes)) {
      const { items, written } = this.wording;
      const waiting = tooMany ? `${this.queuedItems} ${items} are` : `${this.queuedBytes} bytes of ${items} are`;
      return Promise.reject(
        new HeraldError('HERALD_ERR_UNAVAILABLE', `${waiting} waiting to be ${written}, the most this server queues: retry after ${RETRY_AFTER_S} s`, {
          retryAfterS: RETRY_AFTER_S,
        }),
      );
    }
    return new Promise<O>((resolve, reject) => {
      this.queue.push({ item, count, bytes, resolve, reject });
      this.queuedItems += count;
      this.queuedBytes += bytes;
      this.schedule();
    });
  }

  /**
   * Runs a flush even if nothing is waiting (after the ones in flight): for a writer that
   * adds work of its own to each flush, as the worker pool claims jobs in its outcomes'
   * statement. Pokes while a flush is in flight fold into one. Ignored once closing.
   */
  poke(): void {
    if (this._state !== 'open') return;
    this.poked = true;
    this.schedule();
  }

  /** Resolves once nothing is queued or in flight: everything pushed so far is answered. */
  idle(): Promise<void> {
    if (!this.busy()) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Stops taking writes (`shutting_down`) and resolves once every queued one is answered. */
  async close(): Promise<void> {
    if (this.transition('draining')) this.settle();
    await this.idle();
  }

  /** The one place the state changes: refuses moves MOVES does not list. */
  private transition(to: GroupCommitState): boolean {
    if (!MOVES[this._state].includes(to)) return false;
    this._state = to;
    return true;
  }

  private busy(): boolean {
    return this.flushing > 0 || this.queue.length > 0 || this.poked || this.gathering;
  }

  /** A write came: flush now, or at the end of this turn (gatherTurn), if a slot is free. */
  private schedule(): void {
    // A full house: the flush that ends first takes what waits.
    if (this.flushing >= this.maxFlushes) return;
    if (!this.gatherTurn) return this.pump();
    if (this.gathering) return;
    this.gathering = true;
    setImmediate(() => {
      this.gathering = false;
      this.pump();
      // Flushes started and ended during the turn may have left nothing to do.
      this.settle();
    });
  }

  /** Starts flushes while a slot is free and a flush is wanted. */
  private pump(): void {
    while (this.flushing < this.maxFlushes && (this.queue.length > 0 || this.poked)) {
      this.poked = false;
      const batch = this.takeBatch();
      this.flushing++;
      void this.flush(batch);
    }
  }

  /** The longest prefix of the queue within the batch bounds; at least one item if any wait. */
  private takeBatch(): Waiter<I, O>[] {
    let n = 0;
    let items = 0;
    let bytes = 0;
    for (const w of this.queue) {
      if (n > 0 && (items + w.count > this.maxItems || bytes + w.bytes > this.maxBytes)) break;
      n++;
      items += w.count;
      bytes += w.bytes;
    }
    this.queuedItems -= items;
    this.queuedBytes -= bytes;
    return this.queue.splice(0, n);
  }

  /** Runs one flush in its slot, then answers its callers. */
  private async flush(batch: readonly Waiter<I, O>[]): Promise<void> {
    const answers = await this.run(batch);
    this.flushing--;
    // The next batch's statement leaves before this batch's callers are answered: answering
    // them (an HTTP response each) would otherwise delay it. With gatherTurn it leaves at the
    // end of this turn instead, so that what these answers set off (the worker pool: claimed
    // jobs run, and their outcomes come) joins it.
    this.schedule();
    for (const [i, answer] of answers.entries()) {
      if (answer.ok) batch[i]!.resolve(answer.out);
      else batch[i]!.reject(answer.err);
    }
    this.settle();
  }

  /** Writes `batch` in one statement: each item's answer or error; a data error splits it. */
  private async run(batch: readonly Waiter<I, O>[]): Promise<Answer<O>[]> {
    try {
      const out = await this.write(batch.map((w) => w.item));
      return batch.map((_, i) => ({ ok: true, out: out[i]! }));
    } catch (err) {
      if (batch.length > 1 && isRolledBack(err)) {
        // Nothing of the batch was written (one statement). Alone, in the same order, each
        // item gets its own answer or its own error.
        const answers: Answer<O>[] = [];
        for (const w of batch) answers.push(...(await this.run([w])));
        return answers;
      }
      return batch.map(() => ({ ok: false, err }));
    }
  }

  /** Wakes idle() and ends a drain once nothing is queued or in flight. */
  private settle(): void {
    if (this.busy()) return;
    if (this._state === 'draining') this.transition('closed');
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }
}
