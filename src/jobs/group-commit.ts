/**
 * GroupCommit: joins concurrent writes into one statement, the way PostgreSQL groups WAL
 * flushes. The first write starts a flush at once (after the current turn of the event loop,
 * so writes made together go together); while that flush is in flight the next writes
 * gather, and they go in the next flush when it ends. One flush at a time: a write waits at
 * most for the flush in flight and then its own, and nothing waits on a timer.
 *
 * Each caller gets its own answer or its own error. When the database rejects a flush for
 * what one item holds (a data or constraint error: the statement rolled back, nothing was
 * written), the items are written again one at a time, in order, so one bad item never fails
 * another. Any other error (the connection lost, the server going away) may have come after
 * the commit, so no item is written again: every caller of that flush gets the error, as a
 * caller of a single statement would.
 */

import { isDataError } from '../errors.ts';

interface Waiter<I, O> {
  item: I;
  resolve(out: O): void;
  reject(err: unknown): void;
}

/** One statement per flush for the items written meanwhile (see the file comment). */
export class GroupCommit<I, O> {
  private queue: Waiter<I, O>[] = [];
  private flushing: Promise<void> | null = null;
  /** A flush is wanted even if nothing is waiting (poke). */
  private poked = false;

  /**
   * @param write Writes `items` in one statement and returns one answer per item, in order.
   * @param maxItems Most items one flush takes; the rest wait for the next.
   */
  constructor(
    private readonly write: (items: readonly I[]) => Promise<O[]>,
    private readonly maxItems: number,
  ) {}

  /** Writes `item` with whatever else is waiting; resolves once its flush has committed. */
  push(item: I): Promise<O> {
    return new Promise<O>((resolve, reject) => {
      this.queue.push({ item, resolve, reject });
      this.flushing ??= this.drain();
    });
  }

  /**
   * Runs a flush even if nothing is waiting, after the one in flight: for a writer that has
   * work of its own to add to each flush (the worker pool's claims).
   */
  poke(): void {
    this.poked = true;
    this.flushing ??= this.drain();
  }

  /** Resolves when everything pushed so far has been written (or refused). */
  async idle(): Promise<void> {
    while (this.flushing) await this.flushing;
  }

  private async drain(): Promise<void> {
    // Writes made in this turn of the event loop join the first flush.
    await new Promise<void>((r) => setImmediate(r));
    while (this.queue.length > 0 || this.poked) {
      this.poked = false;
      const batch = this.queue.splice(0, this.maxItems);
      await this.flush(batch);
    }
    this.flushing = null;
  }

  private async flush(batch: Waiter<I, O>[]): Promise<void> {
    try {
      const out = await this.write(batch.map((w) => w.item));
      for (const [i, w] of batch.entries()) w.resolve(out[i]!);
    } catch (err) {
      if (batch.length > 1 && isDataError(err)) {
        // Written again alone, in order: only the item at fault is refused.
        for (const w of batch) await this.flush([w]);
        return;
      }
      for (const w of batch) w.reject(err);
    }
  }
}
