/**
 * Subscription: one consumer's filter plus position, yielding catch-up (from the Hub's
 * catch-up window when it holds the position, else from the table) and then live events
 * from the Hub as one stream: no gap, no duplicate, in id order, with a bounded buffer.
 * Every transport and internal consumer reads the log through this class. The state
 * machine and its invariants (S1–S7) are in docs/spec/subscription.md.
 */
import { HeraldError } from '../errors.ts';
import { batchBytes, type Event } from './event.ts';
import { readSharedHead } from './head-reads.ts';
import type { Hub, HubMember } from './hub.ts';
import type { EventLog, ReadResult } from './log.ts';
import type { TopicFilter } from './topic.ts';

/** replaying (reading the log up to the head) → live (fed by the Hub) → closed; docs/spec/subscription.md. */
export type SubscriptionState = 'replaying' | 'live' | 'closed';

/** Where a stream starts: after an id, or at the current head. */
export type Since = number | 'now';

/** The per-subscriber bounds, from config. */
export interface SubscriptionLimits {
  /** Most events one table read returns (HERALD_REPLAY_PAGE_SIZE). */
  replayPageSize: number;
  /** Live buffer bound in serialized bytes; past it the subscriber falls back to table reads. */
  maxClientQueueBytes: number;
  /** Live buffer bound in events; past it, the same fallback. */
  maxClientQueueEvents: number;
}

/** Optional callbacks a transport gives to hear about a subscription's life. */
export interface SubscriptionHooks {
  /** The buffer overflowed and the subscriber went back to table reads. */
  onFallback?(): void;
  /** Every transition, after it happened. */
  onStateChange?(from: SubscriptionState, to: SubscriptionState): void;
  /**
   * Push consumers: called synchronously inside the Hub's fan-out after each delivery to
   * this subscriber (events buffered, or the buffer dropped). A consumer that writes as
   * events arrive calls takeReady() here, in the same tick, instead of a promise per batch.
   */
  onReady?(): void;
}

/** What Subscription.open() is asked for: a filter, a starting position, and checks. */
export interface OpenOptions {
  filter: TopicFilter;
  since: Since;
  /** The epoch the client believes it is reading; checked against this database. */
  epoch?: string | undefined;
  /** Whose table reads these are (the client's address): reads are shared fairly between keys. */
  readKey?: string | undefined;
  hooks?: SubscriptionHooks;
}

/** How much next() returns and when it stops waiting. */
export interface NextOptions {
  /** Most events to return (default: everything available, up to a replay page). */
  limit?: number;
  /**
   * Ends the wait for live events: next() then returns what it has (possibly nothing). Reads
   * are not skipped, so an already-aborted signal means "whatever is available now".
   */
  signal?: AbortSignal;
}

/** The narrow dependencies of a Subscription: the log for reads, the Hub for live events, the bounds. */
export interface SubscriptionDeps {
  log: EventLog;
  hub: Hub;
  limits: SubscriptionLimits;
}

const NOTHING: readonly Event[] = Object.freeze([]);

/** One client's filter and position: replays from the log, then follows the Hub, never skipping or repeating an event. */
export class Subscription implements HubMember {
  readonly filter: TopicFilter;
  /** The position the stream started after. */
  readonly since: number;
  /** The epoch of the database it reads (what a client keeps beside its position). */
  readonly epoch: string;
  private _state: SubscriptionState = 'replaying';
  /** Every matching event with id <= cursor has been handed to the consumer (S5). */
  private cursor: number;
  /**
   * The live buffer, as the Hub's own arrays (shared with other subscribers, never
   * modified): buffering a batch costs one reference, not a copy per subscriber. `skip`
   * events of the first chunk are already handed over or dropped.
   */
  private chunks: (readonly Event[])[] = [];
  private skip = 0;
  /** Events in the buffer (after `skip`). */
  private buffered = 0;
  private bufferBytes = 0;
  /** Bumped whenever the buffer is dropped; a read that spans a bump cannot go live (S2). */
  private generation = 0;
  private wake: (() => void) | null = null;
  /** Aborted by close(): cancels a table read in flight (its client left or re-subscribed). */
  private readonly reading = new AbortController();
  private readonly readKey: string | undefined;
  private readonly deps: SubscriptionDeps;
  private readonly hooks: SubscriptionHooks;

  private constructor(deps: SubscriptionDeps, filter: TopicFilter, since: number, epoch: string, hooks: SubscriptionHooks, readKey?: string) {
    this.deps = deps;
    this.readKey = readKey;
    this.filter = filter;
    this.since = since;
    this.cursor = since;
    this.epoch = epoch;
    this.hooks = hooks;
    // S1: attach before the first read (table or window).
    deps.hub.add(this);
  }

  /**
   * Checks the epoch and the starting position against the database (S6), then opens a
   * Subscription starting after `since` (`now` is the database's head).
   */
  static async open(deps: SubscriptionDeps, opts: OpenOptions): Promise<Subscription> {
    // S6 against a head read that began after this call (so a prune or a commit that finished
    // before it is seen), shared with the opens arriving at the same time: a reconnect storm
    // costs a few queries, and a catch-up the window holds costs no other (S7).
    const head = await readSharedHead(deps.log);
    deps.hub.window.observe(head);
    if (opts.epoch !== undefined && opts.epoch !== head.epoch) {
      throw new HeraldError(
        'HERALD_ERR_EPOCH_MISMATCH',
        `cursor is from epoch ${opts.epoch} but this log is epoch ${head.epoch} (the database was restored or re-created): start again from since=0 or since=now`,
        { epoch: head.epoch, head: head.head, oldest: head.oldest },
      );
    }
    let since: number;
    // `now` is the database's head, not the Listener's: a client that has just committed
    // an event and then subscribes at `now` must not get that event back.
    if (opts.since === 'now') since = head.head;
    else {
      since = opts.since;
      if (since > head.head) {
        throw new HeraldError(
          'HERALD_ERR_POSITION_AHEAD',
          `since=${since} is beyond the head of this log (${head.head}); the cursor belongs to another database: start again from since=0 or since=now`,
          { epoch: head.epoch, head: head.head },
        );
      }
      if (since < head.oldest - 1) {
        throw new HeraldError(
          'HERALD_ERR_POSITION_EXPIRED',
          `events after ${since} were removed by retention; the oldest readable id is ${head.oldest}: restart from since=${head.oldest - 1} or since=now`,
          { oldest: head.oldest, head: head.head },
        );
      }
    }
    return new Subscription(deps, opts.filter, since, head.epoch, opts.hooks ?? {}, opts.readKey);
  }

  /** Where the lifecycle is now. */
  get state(): SubscriptionState {
    return this._state;
  }

  // A method, not an inline comparison: TypeScript would keep the narrowed state across awaits.
  private isClosed(): boolean {
    return this._state === 'closed';
  }

  /**
   * The position a consumer may resume from: every matching event at or below it has been
   * handed over. Live subscribers with nothing pending are at the Hub's head (S5).
   */
  get position(): number {
    if (this._state === 'live' && this.pendingCount() === 0) return Math.max(this.cursor, this.deps.hub.head);
    return this.cursor;
  }

  /** Bytes buffered and not yet handed over. */
  get queuedBytes(): number {
    return this.bufferBytes;
  }

  /** Hub callback: buffer matching live events, dropping the buffer past its bounds (S4). */
  deliver(events: readonly Event[]): void {
    if (this._state === 'closed' || events.length === 0) return;
    this.chunks.push(events);
    this.buffered += events.length;
    this.bufferBytes += batchBytes(events);
    const { maxClientQueueBytes, maxClientQueueEvents } = this.deps.limits;
    if (this.bufferBytes > maxClientQueueBytes || this.buffered > maxClientQueueEvents) {
      this.clearBuffer();
      this.generation++;
      if (this._state === 'live') this.transition('replaying');
      this.hooks.onFallback?.();
    }
    this.hooks.onReady?.();
    this.notify();
  }

  /**
   * The next events, in id order, each exactly once. Waits until at least one is available
   * (or the signal aborts, or the subscription closes: then it returns []). Throws
   * cursor_expired if retention overtakes a replaying subscriber.
   */
  async next(opts: NextOptions = {}): Promise<readonly Event[]> {
    const limit = opts.limit ?? Number.POSITIVE_INFINITY;
    for (;;) {
      if (this._state === 'closed') return [];
      if (this._state === 'replaying') {
        // A poll's `limit` (already capped by pollMaxLimit) sizes its one read; streams read
        // replayPageSize rows at a time.
        const pageSize = Number.isFinite(limit) ? limit : this.deps.limits.replayPageSize;
        // S7: from memory while the window holds everything after the cursor. Checked before
        // every page, so a read that starts in the table moves to memory once it reaches the
        // window, and one the window has let go of (evicted) moves back to the table.
        const held = this.deps.hub.window.read(this.cursor, this.filter, pageSize);
        if (held) {
          this.cursor = Math.max(this.cursor, held.covered);
          // S2: read in one synchronous step up to the Hub's head, so no batch was published
          // between the read and the switch: the buffer has everything after it.
          if (held.covered >= this.deps.hub.head) this.transition('live');
          if (held.events.length > 0) return held.events;
          continue;
        }
        const generation = this.generation;
        let page: ReadResult;
        try {
          page = await this.deps.log.read(this.cursor, this.filter, pageSize, { key: this.readKey, signal: this.reading.signal });
        } catch (err) {
          // Closed mid-read: the read was cancelled, and nobody is waiting for it.
          if (this.isClosed()) return [];
          throw err;
        }
        this.deps.hub.window.observe(page);
        if (this.isClosed()) return [];
        // Table reads advance the cursor past non-matching rows too (S5).
        this.cursor = Math.max(this.cursor, page.covered);
        const full = page.events.length === pageSize;
        // S2: a short page that reached the read's head (a read its work budget stopped
        // short covers less: read on from there), read entirely after the last buffer reset,
        // closes the gap.
        if (!full && page.covered >= page.head && generation === this.generation) this.transition('live');
        if (page.events.length > 0) return page.events;
        continue;
      }
      // live
      this.dropDelivered();
      if (this.buffered > 0) return this.take(limit);
      if (opts.signal?.aborted) return [];
      await this.waitForDelivery(opts.signal);
    }
  }

  /**
   * What next() would hand over now, without waiting and without a table read: the live
   * buffer (possibly empty), or null while replaying (then await next()). [] once closed.
   * The returned array may be shared with other subscribers: read it, never modify it.
   */
  takeReady(limit = Number.POSITIVE_INFINITY): readonly Event[] | null {
    if (this._state === 'replaying') return null;
    if (this._state === 'closed') return NOTHING;
    this.dropDelivered();
    return this.buffered > 0 ? this.take(limit) : NOTHING;
  }

  /** Stops reading and leaves the Hub; idempotent. A pending next() returns what it has. */
  close(): void {
    if (this._state === 'closed') return;
    this.transition('closed');
    this.reading.abort();
    this.deps.hub.remove(this);
    this.clearBuffer();
    this.notify();
  }

  private clearBuffer(): void {
    // Emptied in place: a live subscriber empties it once per batch.
    this.chunks.length = 0;
    this.skip = 0;
    this.buffered = 0;
    this.bufferBytes = 0;
  }

  /** S3: events already covered by a table read are not handed over again. */
  private dropDelivered(): void {
    while (this.buffered > 0 && this.chunks[0]![this.skip]!.id <= this.cursor) this.shift();
  }

  /** Removes the first buffered event and returns it. */
  private shift(): Event {
    const chunk = this.chunks[0]!;
    const e = chunk[this.skip]!;
    this.bufferBytes -= e.bytes;
    this.buffered--;
    if (++this.skip === chunk.length) {
      this.chunks.shift();
      this.skip = 0;
    }
    return e;
  }

  private pendingCount(): number {
    this.dropDelivered();
    return this.buffered;
  }

  /** Hands over up to `limit` buffered events (at least one is buffered). */
  private take(limit: number): readonly Event[] {
    if (this.buffered <= limit) {
      // The common case, one whole batch: the Hub's array itself, shared, no copy.
      const out = this.chunks.length === 1 && this.skip === 0 ? this.chunks[0]! : this.chunks.flat().slice(this.skip);
      this.clearBuffer();
      // Everything the Hub has published up to its head has been handed over (S5).
      this.cursor = Math.max(out[out.length - 1]!.id, this.deps.hub.head);
      return out;
    }
    const out: Event[] = [];
    while (out.length < limit) out.push(this.shift());
    this.cursor = out[out.length - 1]!.id;
    return out;
  }

  private waitForDelivery(signal: AbortSignal | undefined): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = () => {
        signal?.removeEventListener('abort', done);
        if (this.wake === done) this.wake = null;
        resolve();
      };
      this.wake = done;
      signal?.addEventListener('abort', done, { once: true });
    });
  }

  private notify(): void {
    const wake = this.wake;
    this.wake = null;
    wake?.();
  }

  private transition(to: SubscriptionState): void {
    const from = this._state;
    if (from === to || from === 'closed') return;
    this._state = to;
    this.hooks.onStateChange?.(from, to);
  }
}
