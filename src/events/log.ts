/**
 * EventLog: the only module that knows the SQL of the event tables. Append, read after a
 * position, the head, and retention.
 */
import type pg from 'pg';
import { HeraldError } from '../errors.ts';
import { Event, type EventRow } from './event.ts';
import { assertTopic, type TopicFilter } from './topic.ts';

/** What a producer hands to emit(). */
export interface NewEvent {
  topic: string;
  type: string;
  data?: unknown;
}

/** Where the log stands: its epoch, the last committed id, and the oldest readable id. */
export interface LogHead {
  epoch: string;
  head: number;
  oldest: number;
}

export interface ReadResult extends LogHead {
  events: Event[];
  /** Highest id this read covers: the last returned id, or `head` when the page was not full. */
  covered: number;
}

export interface PruneOptions {
  maxAgeMs: number;
  maxEvents: number;
  batchSize: number;
}

const TYPE_MAX_BYTES = 128;

function assertType(type: unknown): string {
  if (typeof type !== 'string' || type.length === 0 || Buffer.byteLength(type) > TYPE_MAX_BYTES) {
    throw new HeraldError('HERALD_ERR_BAD_REQUEST', `type must be a non-empty string of at most ${TYPE_MAX_BYTES} bytes`);
  }
  return type;
}

const EVENT_COLUMNS = 'id, topic, type, data::text as data, at';

// One statement, one snapshot: the rows, the head and the retention horizon agree, so a
// read racing the pruner reports cursor_expired instead of a silently shortened catch-up.
const READ_SQL = (filtered: boolean) => `
  with m as (select epoch::text as epoch, pruned_through from herald.meta),
       h as (select coalesce(max(id), 0) as max_id from herald.events)
  select m.epoch, m.pruned_through, greatest(h.max_id, m.pruned_through) as head, e.*
  from m cross join h
  left join lateral (
    select ${EVENT_COLUMNS}
    from herald.events
    where id > $1
    ${filtered ? 'and (topic = any($3::text[]) or exists (select 1 from unnest($4::text[]) p where starts_with(topic, p)))' : ''}
    order by id
    limit $2
  ) e on true`;

interface ReadRow extends Omit<EventRow, 'id'> {
  epoch: string;
  pruned_through: number;
  head: number;
  id: number | null;
}

export class EventLog {
  private readonly pool: pg.Pool;

  constructor(pool: pg.Pool) {
    this.pool = pool;
  }

  /** Validates events before they reach SQL, so producers get bad_request, not a constraint error. */
  static validate(events: readonly NewEvent[]): NewEvent[] {
    return events.map((e, i) => ({
      topic: assertTopic(e?.topic, events.length > 1 ? `events[${i}].topic` : 'topic'),
      type: assertType(e?.type),
      data: e?.data === undefined ? null : e.data,
    }));
  }

  /** Appends in one transaction with one NOTIFY; returns the ids in order. */
  async emitMany(events: readonly NewEvent[], client: pg.Pool | pg.PoolClient = this.pool): Promise<number[]> {
    const valid = EventLog.validate(events);
    if (valid.length === 0) return [];
    const { rows } = await client.query<{ id: number }>('select herald.append($1::jsonb) as id', [JSON.stringify(valid)]);
    return rows.map((r) => r.id).sort((a, b) => a - b);
  }

  async emit(event: NewEvent, client?: pg.Pool | pg.PoolClient): Promise<number> {
    const [id] = await this.emitMany([event], client);
    return id!;
  }

  async readHead(): Promise<LogHead> {
    const { rows } = await this.pool.query<{ epoch: string; head: number; pruned_through: number }>(`
      select m.epoch::text as epoch, m.pruned_through,
             greatest(coalesce((select max(id) from herald.events), 0), m.pruned_through) as head
      from herald.meta m`);
    const r = rows[0]!;
    return { epoch: r.epoch, head: r.head, oldest: r.pruned_through + 1 };
  }

  /**
   * Events with id > `after` matching `filter`, in id order, at most `limit`.
   * Throws cursor_expired when retention has removed events after `after`.
   */
  async read(after: number, filter: TopicFilter, limit: number): Promise<ReadResult> {
    const params: unknown[] = [after, limit];
    if (!filter.all) params.push([...filter.exact], filter.prefixes);
    const { rows } = await this.pool.query<ReadRow>(READ_SQL(!filter.all), params);
    const first = rows[0]!;
    const head: LogHead = { epoch: first.epoch, head: first.head, oldest: first.pruned_through + 1 };
    if (after < first.pruned_through) {
      throw new HeraldError(
        'HERALD_ERR_POSITION_EXPIRED',
        `events after ${after} were removed by retention; the oldest readable id is ${head.oldest}: restart from since=${first.pruned_through} or since=now`,
        { oldest: head.oldest, head: head.head },
      );
    }
    const events = first.id === null ? [] : rows.map((r) => new Event(r as EventRow));
    const covered = events.length === limit ? events[events.length - 1]!.id : Math.max(head.head, after);
    return { ...head, events, covered };
  }

  /** Every event after `after`, unfiltered: the Listener's read. */
  async readAfter(after: number, limit: number): Promise<Event[]> {
    const { rows } = await this.pool.query<EventRow>(
      `select ${EVENT_COLUMNS} from herald.events where id > $1 order by id limit $2`,
      [after, limit],
    );
    return rows.map((r) => new Event(r));
  }

  /**
   * Deletes events past retention in batches of `batchSize`, each its own short transaction
   * (row locks on old rows only: appends never wait). Returns how many it removed.
   */
  async prune(opts: PruneOptions, now = new Date()): Promise<number> {
    if (opts.maxAgeMs === 0 && opts.maxEvents === 0) return 0;
    let removed = 0;
    for (;;) {
      const { rows } = await this.pool.query<{ n: number }>(
        `
        with head as (select coalesce(max(id), 0) as max_id from herald.events),
        -- Only the oldest batch is looked at (primary-key order), so a run with nothing
        -- to prune reads $4 rows, not the table. \`at\` is assigned under the id lock, so
        -- it rises with id and the expired rows are a prefix.
        doomed as (
          select o.id from (select id, at from herald.events order by id limit $4) o, head
          where ($2::bigint > 0 and o.at < $1::timestamptz)
             or ($3::bigint > 0 and o.id <= head.max_id - $3::bigint)
        ),
        gone as (
          delete from herald.events e using doomed where e.id = doomed.id returning e.id
        ),
        mark as (
          update herald.meta set pruned_through = greatest(pruned_through, (select max(id) from gone))
          where exists (select 1 from gone)
          returning 1
        )
        select count(*)::int as n from gone`,
        [new Date(now.getTime() - opts.maxAgeMs), opts.maxAgeMs, opts.maxEvents, opts.batchSize],
      );
      const n = rows[0]!.n;
      removed += n;
      if (n < opts.batchSize) return removed;
    }
  }
}
