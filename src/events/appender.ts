/**
 * Appender: the group append (issue 15). Herald's own appends — `POST /v1/events` and
 * emit()/emitMany() from TypeScript — join one statement per flush through the one group
 * commit (src/group-commit.ts): while one flush is in flight the next batch gathers, and goes
 * as soon as the flush before it is done. Without it every append was its own commit: its own
 * trip to the database, its own turn at the id lock (held across the commit's WAL flush, see
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
 *   PostgreSQL still refuse a batch's data, the group commit writes each caller alone once
 *   more, so only the one whose data is refused gets the error.
 *
 * This file holds what is the group append's own: the checks, each caller's JSON, the
 * statement, and its errors. Batching, bounds, order and shutdown are the group commit's: a
 * caller counts its events toward `maxBatchEvents`/`maxQueueEvents` and its JSON's bytes
 * toward `maxBatchBytes`/`maxQueueBytes` (a caller bigger than a batch goes alone: its events
 * are never split), and a full queue refuses at once with `unavailable` and a Retry-After of
 * 1 s rather than queue for longer than a client should wait.
 */
import type pg from 'pg';
import { GroupCommit, type GroupCommitState } from '../group-commit.ts';
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
export type AppenderState = GroupCommitState;

/** One caller's append, as it joins a flush. */
interface Append {
  /** Its events as JSON objects joined by commas: its part of the flush's array. */
  readonly json: string;
  readonly events: number;
  readonly bytes: number;
}

// What JSON.stringify writes and jsonb refuses: `\u0000`, and a lone surrogate (stringify
// escapes only unpaired ones; a pair is written as the character). A backslash before it
// that is itself escaped (an even run) makes it plain text, not an escape.
const JSONB_REFUSES = /(?<!\\)(?:\\\\)*\\u(?:0000|d[89a-f][0-9a-f]{2})/;

// Named, so each connection parses and plans it once.
const APPEND_STATEMENT = 'herald-group-append';
const APPEND_SQL = 'select herald.append($1::jsonb) as id';

/** Appends from many concurrent callers, one statement per flush; see the file comment. */
export class Appender {
  private readonly pool: pg.Pool;
  private readonly commits: GroupCommit<Append, number[]>;
  /** Flushes run so far (a single caller's retry after a data error counts as one). */
  flushes = 0;
  /** Events appended so far. */
  appended = 0;

  constructor(opts: AppenderOptions) {
    this.pool = opts.pool;
    this.commits = new GroupCommit({
      write: (batch) => this.append(batch),
      count: (a) => a.events,
      bytes: (a) => a.bytes,
      maxItems: opts.maxBatchEvents,
      maxBytes: opts.maxBatchBytes,
      maxQueueItems: opts.maxQueueEvents,
      maxQueueBytes: opts.maxQueueBytes,
      maxFlushes: opts.maxFlushes,
      wording: { items: 'events', written: 'appended', whenClosed: 'publish to another instance or retry shortly' },
    });
  }

  /** See AppenderState. */
  get state(): AppenderState {
    return this.commits.state;
  }

  /** Events waiting for a flush (not those in flight). */
  get waitingEvents(): number {
    return this.commits.waitingItems;
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
    return this.commits.close();
  }

  private async enqueue(events: readonly NewEventJson[]): Promise<number[]> {
    if (events.length === 0) return [];
    const json = events.map((e) => `{"topic":${JSON.stringify(e.topic)},"type":${JSON.stringify(e.type)},"data":${e.dataJson}}`).join(',');
    try {
      return await this.commits.push({ json, events: events.length, bytes: Buffer.byteLength(json) });
    } catch (err) {
      // Written alone and still refused for its data (isDataError): this caller's bad_request.
      // Anything else (the connection, the server) is every caller's of that flush.
      if (!isDataError(err)) throw coerceError(err);
      throw new HeraldError(
        'HERALD_ERR_BAD_REQUEST',
        `PostgreSQL refused the events: ${err instanceof Error ? err.message : String(err)}: fix their data`,
        {},
        { cause: err },
      );
    }
  }

  /** One `herald.append` of the batch's events; each caller's ids, in order. */
  private async append(batch: readonly Append[]): Promise<number[][]> {
    const total = batch.reduce((n, a) => n + a.events, 0);
    const text = `[${batch.map((a) => a.json).join(',')}]`;
    this.flushes++;
    const { rows } = await this.pool.query<{ id: number }>({ name: APPEND_STATEMENT, text: APPEND_SQL, values: [text] });
    if (rows.length !== total) throw new HeraldError('HERALD_ERR_INTERNAL', `herald.append returned ${rows.length} ids for ${total} events`);
    this.appended += total;
    // The ids are one contiguous block in array order; RETURNING promises no order.
    const ids = rows.map((r) => r.id).sort((a, b) => a - b);
    let at = 0;
    return batch.map((a) => ids.slice(at, (at += a.events)));
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
