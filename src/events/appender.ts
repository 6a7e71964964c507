/**
 * Appender: the group append (issue 15). Herald's own appends — `POST /v1/events` and
 * emit()/emitMany() from TypeScript — join one statement per flush, the way PostgreSQL groups
 * WAL flushes: while one flush is in flight the next batch gathers, and goes as soon as the
 * flush before it is done. Without it every append was its own commit: its own trip to the
 * database, its own turn at the id lock (held across the commit's WAL flush, see
 * sql/001_events.sql) and its own WAL flush, so 64 concurrent publishers queued on the lock
 * one commit at a time (660 events/s, p99 344 ms; BENCHMARKS.md, Group append).
 *
 * A flush is one `select herald.append($1::jsonb)`: one statement in autocommit, so it is
 * atomic — every event of the batch is appended, or none is. Its ids come back contiguous in
 * array order and are handed back per caller in the order the callers joined, so each
 * caller's events keep one contiguous block of ids in its own order, as before.
 *
 * What does not change:
 * - Commit order: ids are still assigned under the id lock, by herald.append.
 * - Acknowledged means durable: a caller is answered after the flush's commit returned.
 * - Exactly once: a failed flush is not retried (its commit may have happened with the reply
 *   lost, as for any single statement); every caller in it gets the error, retryable
 *   `unavailable` when the database went away, and retries itself if it wants to.
 * - One caller's bad event never fails another: events are checked when they are handed in,
 *   before they join a batch (EventLog.validate, and here what jsonb would refuse), and should
 *   PostgreSQL still refuse a batch's data, each caller of it is flushed alone once more, so
 *   only the one whose data is refused gets the error.
 *
 * Bounds: a batch takes callers while it stays within `maxBatchEvents` and `maxBatchBytes` (a
 * caller bigger than either goes alone: a caller's events are never split); callers waiting
 * for a flush are bounded by `maxQueueEvents` and `maxQueueBytes`, past which an append is
 * refused at once with `unavailable` and a Retry-After of 1 s rather than queued for longer
 * than a client should wait.
 */
import type pg from 'pg';
import { coerceError, HeraldError, isDataError } from '../errors.ts';
import { EventLog, type NewEvent, type NewEventJson } from './log.ts';

/** How an Appender batches; the settings of the same names in src/config.ts say why each default. */
export interface AppenderOptions {
  /** Where flushes run: connections of their own (`herald-append`), so no other work delays a flush. */
  readonly pool: pg.Pool;
  /** Most events one flush appends (a single caller with more goes alone). */
  readonly maxBatchEvents: number;
  /** Most bytes of event JSON one flush sends (a single caller with more goes alone). */
  readonly maxBatchBytes: number;
  /** Most events waiting for a flush; past it appends are refused with `unavailable`. */
  readonly maxQueueEvents: number;
  /** Most bytes of event JSON waiting for a flush; past it appends are refused with `unavailable`. */
  readonly maxQueueBytes: number;
  /**
   * Flushes in flight at once, each on its own connection. 1 is pure group commit, and keeps
   * call order: appends are committed in the order they were called, even unawaited ones.
   * With more, a later flush may take the id lock first, so only awaited appends are ordered.
   */
  readonly maxFlushes: number;
}

/**
 * Where an Appender is in its life: `open` takes appends; `draining` (from close()) refuses new
 * ones with `shutting_down` while the queued ones are flushed; `closed` once they all are.
 */
export type AppenderState = 'open' | 'draining' | 'closed';

/** One caller's append, waiting for its flush. */
interface Waiter {
  /** Its events as JSON objects joined by commas: its part of the flush's array. */
  readonly json: string;
  readonly events: number;
  readonly bytes: number;
  readonly resolve: (ids: number[]) => void;
  readonly reject: (err: HeraldError) => void;
}

/** What a refused queue tells the client: a flush drains it within milliseconds. */
const RETRY_AFTER_S = 1;

// What JSON.stringify writes and jsonb refuses: `\u0000`, and a lone surrogate (stringify
// escapes only unpaired ones; a pair is written as the character). A backslash before it
// that is itself escaped (an even run) makes it plain text, not an escape.
const JSONB_REFUSES = /(?<!\\)(?:\\\\)*\\u(?:0000|d[89a-f][0-9a-f]{2})/;

// Named, so each connection parses and plans it once.
const APPEND_STATEMENT = 'herald-group-append';
const APPEND_SQL = 'select herald.append($1::jsonb) as id';

/** Appends from many concurrent callers, one statement per flush; see the file comment. */
export class Appender {
  private readonly opts: AppenderOptions;
  private readonly queue: Waiter[] = [];
  private queuedEvents = 0;
  private queuedBytes = 0;
  private flushing = 0;
  private _state: AppenderState = 'open';
  private drained: (() => void) | undefined;
  private closing: Promise<void> | undefined;
  /** Flushes run so far (a single caller's retry after a data error counts as one). */
  flushes = 0;
  /** Events appended so far. */
  appended = 0;

  constructor(opts: AppenderOptions) {
    this.opts = opts;
  }

  /** See AppenderState. */
  get state(): AppenderState {
    return this._state;
  }

  /** Events waiting for a flush (not those in flight). */
  get waitingEvents(): number {
    return this.queuedEvents;
  }

  /** Appends one event; resolves with its id once committed. */
  async emit(event: NewEvent): Promise<number> {
    const [id] = await this.emitMany([event]);
    return id!;
  }

  /**
   * Appends `events` in one block of ids, in order, atomically; resolves with the ids once
   * committed. A bad event (topic, type, or `data` that is not JSON PostgreSQL accepts) is a
   * `bad_request` for this call only.
   */
  async emitMany(events: readonly NewEvent[]): Promise<number[]> {
    const valid = EventLog.validate(events);
    return this.enqueue(valid.map((e, i) => ({ topic: e.topic, type: e.type, dataJson: dataJson(e.data, events.length > 1 ? `events[${i}].data` : 'data') })));
  }

  /**
   * emitMany for events whose `data` is JSON text, stored as it is so jsonb keeps every digit
   * (EventLog.emitManyJson). The text must be one JSON value jsonb accepts: POST /v1/events
   * checks it with scanJson (src/http/json-input.ts) before it gets here.
   */
  async emitManyJson(events: readonly NewEventJson[]): Promise<number[]> {
    const valid = EventLog.validate(events.map(({ topic, type }) => ({ topic, type })));
    return this.enqueue(valid.map((e, i) => ({ topic: e.topic, type: e.type, dataJson: events[i]!.dataJson })));
  }

  /** Stops taking appends (`shutting_down`) and resolves once every queued one is flushed. */
  close(): Promise<void> {
    this.closing ??= new Promise((resolve) => {
      this.drained = resolve;
      this._state = 'draining';
      this.settle();
    });
    return this.closing;
  }

  private enqueue(events: readonly NewEventJson[]): Promise<number[]> {
    if (events.length === 0) return Promise.resolve([]);
    if (this._state !== 'open') {
      return Promise.reject(new HeraldError('HERALD_ERR_SHUTTING_DOWN', 'server is shutting down: publish to another instance or retry shortly'));
    }
    const json = events.map((e) => `{"topic":${JSON.stringify(e.topic)},"type":${JSON.stringify(e.type)},"data":${e.dataJson}}`).join(',');
    const bytes = Buffer.byteLength(json);
    // An append bigger than the whole queue is taken when the queue is empty: refusing it
    // would refuse it forever.
    const tooMany = this.queuedEvents + events.length > this.opts.maxQueueEvents;
    if (this.queue.length > 0 && (tooMany || this.queuedBytes + bytes > this.opts.maxQueueBytes)) {
      const waiting = tooMany ? `${this.queuedEvents} events are` : `${this.queuedBytes} bytes of events are`;
      return Promise.reject(
        new HeraldError('HERALD_ERR_UNAVAILABLE', `${waiting} waiting to be appended, the most this server queues: retry after ${RETRY_AFTER_S} s`, {
          retryAfterS: RETRY_AFTER_S,
        }),
      );
    }
    return new Promise<number[]>((resolve, reject) => {
      this.queue.push({ json, events: events.length, bytes, resolve, reject });
      this.queuedEvents += events.length;
      this.queuedBytes += bytes;
      this.pump();
    });
  }

  /** Starts flushes while a slot is free and callers wait. */
  private pump(): void {
    while (this.flushing < this.opts.maxFlushes && this.queue.length > 0) {
      const batch = this.takeBatch();
      this.flushing++;
      void this.flush(batch);
    }
  }

  /** The longest prefix of the queue within the batch bounds; at least one caller. */
  private takeBatch(): Waiter[] {
    let n = 0;
    let events = 0;
    let bytes = 0;
    for (const w of this.queue) {
      if (n > 0 && (events + w.events > this.opts.maxBatchEvents || bytes + w.bytes > this.opts.maxBatchBytes)) break;
      n++;
      events += w.events;
      bytes += w.bytes;
    }
    this.queuedEvents -= events;
    this.queuedBytes -= bytes;
    return this.queue.splice(0, n);
  }

  /** Runs one flush in its slot, then answers its callers. */
  private async flush(batch: readonly Waiter[]): Promise<void> {
    const answers = await this.run(batch);
    this.flushing--;
    // The next batch's statement leaves before this batch's callers are answered: answering
    // them (an HTTP response each) would otherwise delay it.
    this.pump();
    for (const [i, answer] of answers.entries()) {
      if (answer instanceof HeraldError) batch[i]!.reject(answer);
      else batch[i]!.resolve(answer);
    }
    this.settle();
  }

  /** Appends `batch` in one statement: each caller's ids or its error; a content error splits it. */
  private async run(batch: readonly Waiter[]): Promise<(number[] | HeraldError)[]> {
    try {
      const ids = await this.append(batch);
      let at = 0;
      return batch.map((w) => ids.slice(at, (at += w.events)));
    } catch (err) {
      // A data error (isDataError) is about one event's content, not the batch's: each caller
      // is flushed alone again. Anything else (the connection, the server) fails the batch.
      const refused = isDataError(err);
      if (refused && batch.length > 1) {
        // Nothing of the batch was written (one statement). Alone, in the same order, each
        // caller gets its own ids or its own error.
        const answers: (number[] | HeraldError)[] = [];
        for (const w of batch) answers.push(...(await this.run([w])));
        return answers;
      }
      const e = refused
        ? new HeraldError(
            'HERALD_ERR_BAD_REQUEST',
            `PostgreSQL refused the events: ${err instanceof Error ? err.message : String(err)}: fix their data`,
            {},
            { cause: err },
          )
        : coerceError(err);
      return batch.map(() => e);
    }
  }

  /** One `herald.append` of the batch's events; their ids in array order. */
  private async append(batch: readonly Waiter[]): Promise<number[]> {
    const total = batch.reduce((n, w) => n + w.events, 0);
    const text = `[${batch.map((w) => w.json).join(',')}]`;
    this.flushes++;
    const { rows } = await this.opts.pool.query<{ id: number }>({ name: APPEND_STATEMENT, text: APPEND_SQL, values: [text] });
    if (rows.length !== total) throw new HeraldError('HERALD_ERR_INTERNAL', `herald.append returned ${rows.length} ids for ${total} events`);
    this.appended += total;
    // The ids are one contiguous block in array order; RETURNING promises no order.
    return rows.map((r) => r.id).sort((a, b) => a - b);
  }

  /** Ends a drain once nothing is queued or in flight. */
  private settle(): void {
    if (this._state === 'open' || this.flushing > 0 || this.queue.length > 0) return;
    this._state = 'closed';
    this.drained?.();
  }
}

/**
 * `data` as the JSON text stored for it: `null` when absent (or not representable, as
 * JSON.stringify drops functions), and a `bad_request` naming `field` for what JSON.stringify
 * or jsonb cannot take (a BigInt, a cycle, nesting deeper than the stack, `\u0000`, an
 * unpaired surrogate).
 */
function dataJson(data: unknown, field: string): string {
  let text: string | undefined;
  try {
    text = JSON.stringify(data);
  } catch (err) {
    throw new HeraldError(
      'HERALD_ERR_BAD_REQUEST',
      `${field} cannot be written as JSON: ${err instanceof Error ? err.message : String(err)}`,
      {},
      { cause: err },
    );
  }
  if (text === undefined) return 'null';
  if (JSONB_REFUSES.test(text)) {
    throw new HeraldError('HERALD_ERR_BAD_REQUEST', `${field} holds a NUL (\\u0000) or an unpaired surrogate, which PostgreSQL cannot store: remove it`);
  }
  return text;
}
