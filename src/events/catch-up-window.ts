/**
 * CatchUpWindow: the Hub's memory of the batches it fanned out last, so that a catch-up from a
 * recent position (thousands of clients reconnecting after a network blip or a rolling
 * restart) is answered without a query. It holds every event with `floor < id <= head`, as
 * the Hub's own fanned-out arrays (shared with the live subscribers, never copied), within a
 * byte budget: past it the oldest batches go and `floor` moves up. The Subscription decides
 * between this window and the table (docs/spec/subscription.md, S7).
 *
 * It answers only where the table would give the same answer:
 * - not before `floor`: the window holds ids above the Listener's start head only, and
 *   nothing it has let go;
 * - not past `head`: a position beyond it may still be valid in the database (committed, not
 *   yet read by the Listener), so the table decides;
 * - not below the retention horizon (`pruned_through`) that the latest head read reported:
 *   every Subscription opens with one (head-reads.ts) and reports it here;
 * - not for an event that retention may remove while a reader is on its way through the
 *   window: events go at half the retention age and half the retention count of this process
 *   (every process runs its own pruner, with a clock or head ahead of ours by less than
 *   that), so a reader that retention overtakes moves on to the table and gets
 *   cursor_expired there, as it would have from the table all along;
 * - never again once a head read reports another epoch than the first (the database was
 *   replaced under this process).
 */
import { batchBytes, type Event } from './event.ts';
import type { LogHead } from './log.ts';
import type { TopicFilter } from './topic.ts';

/**
 * What one held event costs beyond its serialized bytes: the Event object, its topic and
 * type strings, its JSON text and timestamp. Measured on Node 20 at about 1 KiB for events
 * of 150–300 serialized bytes (a window of such events took 5–6× its serialized size), so
 * the budget is charged with it and `HERALD_CATCHUP_WINDOW_BYTES` bounds the real memory.
 */
export const EVENT_OVERHEAD_BYTES = 1024;

/** The window's charge for a batch: serialized bytes plus the per-event overhead. */
const charge = (batch: readonly Event[]) => batchBytes(batch) + batch.length * EVENT_OVERHEAD_BYTES;

/** The window's byte budget and the log's retention, which a read from memory must honour too. */
export interface CatchUpWindowOptions {
  /** Byte budget: the events' serialized bytes plus EVENT_OVERHEAD_BYTES each (0: the window is off). */
  maxBytes: number;
  /** The log's retention (HERALD_RETENTION_MAX_AGE_MS; 0: none). */
  retentionMaxAgeMs: number;
  /** The log's retention (HERALD_RETENTION_MAX_EVENTS; 0: none). */
  retentionMaxEvents: number;
  /** Injectable clock for tests, epoch milliseconds. */
  now?: () => number;
}

/** A read from memory, shaped like a table read: the events, and the highest id covered. */
export interface WindowRead {
  events: readonly Event[];
  /** The last returned id when `limit` was reached, else the head. */
  covered: number;
}

const NOTHING: readonly Event[] = Object.freeze([]);

/** The most recent fanned-out batches, kept within a byte budget, answering catch-up reads without a query. */
export class CatchUpWindow {
  private readonly opts: CatchUpWindowOptions;
  /** Every event with floor < id <= head is in `batches`. */
  private _floor = 0;
  private _head = 0;
  /** Published batches in id order; those before `first` are gone (compacted now and then). */
  private batches: (readonly Event[])[] = [];
  private first = 0;
  private _bytes = 0;
  /** The database's epoch, once a query has reported it. */
  private _epoch: string | null = null;
  /** A query reported another epoch than the first: the window never answers again. */
  private foreign = false;
  /**
   * Set by the first reset() (the Listener's start). Before it the head is not the log's,
   * and the Listener will move it without fanning out what lies in between.
   */
  private started = false;
  /** Highest `pruned_through` a query has reported. */
  private prunedThrough = 0;
  /**
   * The last read and its answer, until the window changes: clients that reconnect together
   * ask the same question, and the same array for all of them means their frames and SSE
   * text are built once (perBatch), not once per client.
   */
  private last: { after: number; limit: number; filter: string; answer: WindowRead } | null = null;

  constructor(opts: CatchUpWindowOptions) {
    this.opts = opts;
  }

  /** The position the window starts after: it can answer any `since` from here to the head. */
  get floor(): number {
    return this._floor;
  }

  /** The highest id held (the Hub's head). */
  get head(): number {
    return this._head;
  }

  /** Bytes charged for what is held (serialized bytes plus EVENT_OVERHEAD_BYTES per event). */
  get bytes(): number {
    return this._bytes;
  }

  /** Batches held. */
  get size(): number {
    return this.batches.length - this.first;
  }

  /** The database's epoch as last reported by a query (null before the first). */
  get epoch(): string | null {
    return this._epoch;
  }

  /** Starts over, empty, at `head` (the Listener's start): nothing at or below it is held. */
  reset(head: number): void {
    this.started = true;
    this.last = null;
    this.batches = [];
    this.first = 0;
    this._bytes = 0;
    this._floor = this._head = head;
  }

  /** Hub callback: a batch was fanned out (ids strictly increasing, all above the head). */
  append(batch: readonly Event[]): void {
    this.last = null;
    this._head = batch[batch.length - 1]!.id;
    if (this.opts.maxBytes === 0 || this.foreign) {
      this._floor = this._head;
      return;
    }
    this.batches.push(batch);
    this._bytes += charge(batch);
    while (this._bytes > this.opts.maxBytes) this.dropOldest();
  }

  /** What a query said about the log: its epoch and retention horizon. */
  observe(head: LogHead): void {
    if (this._epoch !== null && head.epoch !== this._epoch) {
      this.foreign = true;
      this.reset(this._head);
    }
    this._epoch ??= head.epoch;
    this.prunedThrough = Math.max(this.prunedThrough, head.oldest - 1);
  }

  /**
   * Events with id > `after` matching `filter`, in id order, at most `limit`, or null when the
   * window does not hold everything after `after` (then the table must be read). The work is
   * bounded by the window: a binary search for `after`, then the batches after it.
   */
  read(after: number, filter: TopicFilter, limit: number): WindowRead | null {
    if (!this.answers()) return null;
    this.trim();
    if (after < this._floor || after > this._head) return null;
    if (after === this._head) return { events: NOTHING, covered: after };
    const key = filterKey(filter);
    const last = this.last;
    if (last && last.after === after && last.limit === limit && last.filter === key) return last.answer;
    const answer = this.collect(after, filter, limit);
    this.last = { after, limit, filter: key, answer };
    return answer;
  }

  /** read() without the memo. */
  private collect(after: number, filter: TopicFilter, limit: number): WindowRead {
    const start = this.batchAfter(after);
    const out: Event[] = [];
    // Set while `out` is exactly one whole fanned-out batch.
    let only: readonly Event[] | null = null;
    for (let b = start; b < this.batches.length; b++) {
      const batch = this.batches[b]!;
      const from = b === start ? indexAfter(batch, after) : 0;
      const before = out.length;
      for (let i = from; i < batch.length; i++) {
        const e = batch[i]!;
        if (!filter.matches(e.topic)) continue;
        out.push(e);
        if (out.length === limit) return { events: out, covered: e.id };
      }
      if (out.length > before) only = before === 0 && from === 0 && out.length === batch.length ? batch : null;
    }
    // One whole fanned-out batch: hand over the Hub's array itself, so its WebSocket frames
    // and SSE text are built once for every reader (perBatch), not once per reader.
    return { events: only ?? out, covered: this._head };
  }

  private answers(): boolean {
    return this.opts.maxBytes > 0 && this.started && this._epoch !== null && !this.foreign;
  }

  /**
   * Lets go of what retention may remove. `at` rises with id (it is assigned under the id
   * lock), so such events are a prefix of the window.
   */
  private trim(): void {
    const { retentionMaxAgeMs, retentionMaxEvents } = this.opts;
    // Half the retention: a pruner on another process, whose clock runs ahead of ours or whose
    // view of the head is ahead of our Listener's by less than that, removes nothing we hold.
    const youngestGone = retentionMaxAgeMs > 0 ? (this.opts.now?.() ?? Date.now()) - retentionMaxAgeMs / 2 : Number.NEGATIVE_INFINITY;
    const highestGone = Math.max(this.prunedThrough, retentionMaxEvents > 0 ? this._head - Math.ceil(retentionMaxEvents / 2) : 0);
    const gone = (e: Event) => e.id <= highestGone || e.atMs < youngestGone;
    while (this.first < this.batches.length) {
      const batch = this.batches[this.first]!;
      if (!gone(batch[0]!)) break;
      const keep = firstIndex(batch, (e) => !gone(e));
      if (keep === batch.length) {
        this.dropOldest();
        continue;
      }
      // Part of a batch: keep its tail (a copy, so the Hub's array is never modified).
      this.last = null;
      const tail = batch.slice(keep);
      this._bytes += charge(tail) - charge(batch);
      this.batches[this.first] = tail;
      this._floor = Math.max(this._floor, batch[keep - 1]!.id);
      break;
    }
    // Nothing between the floor and the first held id exists, but a position there below the
    // reported horizon is one the table refuses (cursor_expired): so must the window.
    // (Above the head, it answers nothing until the Listener is past it.)
    if (this._floor < this.prunedThrough) this._floor = this.prunedThrough;
  }

  private dropOldest(): void {
    this.last = null;
    const batch = this.batches[this.first]!;
    this.batches[this.first++] = NOTHING;
    this._bytes -= charge(batch);
    this._floor = Math.max(this._floor, batch[batch.length - 1]!.id);
    // Compact now and then rather than shift() per batch (a shift moves every slot).
    if (this.first === this.batches.length) {
      this.batches = [];
      this.first = 0;
    } else if (this.first >= 1024 && this.first * 2 >= this.batches.length) {
      this.batches = this.batches.slice(this.first);
      this.first = 0;
    }
  }

  /** Index of the first held batch whose last id is above `after` (one exists: after < head). */
  private batchAfter(after: number): number {
    let lo = this.first;
    let hi = this.batches.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const batch = this.batches[mid]!;
      if (batch[batch.length - 1]!.id > after) hi = mid;
      else lo = mid + 1;
    }
    return lo;
  }
}

const filterKeys = new WeakMap<TopicFilter, string>();

/** A filter's entries as one string, computed once per filter: equal for equal filters. */
function filterKey(filter: TopicFilter): string {
  let key = filterKeys.get(filter);
  if (key === undefined) filterKeys.set(filter, (key = filter.entries().join(' ')));
  return key;
}

/** Index of the first event of `batch` with id above `after`. */
function indexAfter(batch: readonly Event[], after: number): number {
  return firstIndex(batch, (e) => e.id > after);
}

/** Index of the first event for which `holds` is true (false then true along the batch). */
function firstIndex(batch: readonly Event[], holds: (e: Event) => boolean): number {
  let lo = 0;
  let hi = batch.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (holds(batch[mid]!)) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}
