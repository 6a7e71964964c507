/**
 * EventLog: the only module that knows the SQL of the event tables. Append, read after a
 * position, the head, and retention.
 */
import type pg from 'pg';
import { HeraldError } from '../errors.ts';
import type { CatchUpReads, ReadOptions } from './catch-up-reads.ts';
import { Event, type EventRow } from './event.ts';
import { assertTopic, type TopicFilter } from './topic.ts';

/** What a producer hands to emit(). */
export interface NewEvent {
  topic: string;
  type: string;
  data?: unknown;
}

/** An event whose `data` is JSON text, exactly as a producer sent it (POST /v1/events). */
export interface NewEventJson {
  topic: string;
  type: string;
  dataJson: string;
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

/**
 * A pattern with at most this many distinct topics is "narrow", read as one index range per
 * topic; one with more is "broad" (see READ_FILTERED_SQL). Telling them apart costs at most
 * this many + 1 index probes per pattern, about 0.5 ms.
 */
export const PATTERN_TOPICS_MAX = 100;
/**
 * How far past `since` (in ids, so at most this many rows) broad patterns are looked for by
 * walking the primary key, about 3 ms. Patterns whose events are at least 1 in 10 of the log
 * (`job:*`, `package:*`) fill a page of 1,000 within it.
 */
export const PATTERN_WALK_IDS = 10_000;
/**
 * A read this close to the head (in ids) reads all its patterns by walking the ids up to
 * the head: at most this many rows, where telling one broad pattern from a narrow one takes
 * 101 probes, each about as costly as walking 15–20 rows. Near the head is the common read:
 * a long-poll, a reconnect, a consumer that fell a little behind.
 */
export const PATTERN_NEAR_IDS = 500;

// One statement, one snapshot: the rows, the head and the retention horizon agree, so a
// read racing the pruner reports cursor_expired instead of a silently shortened catch-up.
const READ_HEAD_SQL = `
  with m as (select epoch::text as epoch, pruned_through from herald.meta),
       h as (select coalesce(max(id), 0) as max_id from herald.events)`;

// `*`: the next ids in primary-key order, which is what it returns.
const READ_ALL_SQL = `${READ_HEAD_SQL}
  select m.epoch, m.pruned_through, greatest(h.max_id, m.pruned_through) as head, e.*
  from m cross join h
  left join lateral (
    select ${EVENT_COLUMNS}
    from herald.events
    where id > $1
    order by id
    limit $2
  ) e on true`;

// The distinct topics under pattern p (p.lo <= topic < p.hi), in order, one index probe
// each: a skip scan, which PostgreSQL 17 does not do by itself. Read lazily, so a `limit`
// on it stops the probing.
const PATTERN_TOPICS_SQL = `
  with recursive topics(topic) as (
    (select e.topic collate "C" from herald.events e
     where e.topic collate "C" >= p.lo and e.topic collate "C" < p.hi
     order by e.topic collate "C"
     limit 1)
    union all
    select (select e.topic collate "C" from herald.events e
            where e.topic collate "C" > t.topic and e.topic collate "C" < p.hi
            order by e.topic collate "C"
            limit 1)
    from topics t
    where t.topic is not null
  )
  select topic from topics where topic is not null`;

// Filtered reads (issue 12). The statement before this one walked the primary key from
// `since` to the head and tested every row (its `topic = any(…) or exists (… starts_with …)`
// kept the topic index out): 260–700 ms for a topic with no events on a 280,000-event log.
// Now every row comes from an index range, so a read costs what it returns plus a bounded
// amount per filter entry, whatever the log's length. On (topic collate "C", id) (sql/009):
// - Exact topic: one range `topic = t and id > since`, in id order, at most `limit` rows.
// - Narrow pattern: the same range for each topic under it, found by PATTERN_TOPICS_SQL.
//   Rejected: one range `lo <= topic < hi` for the whole pattern. The index yields it in
//   (topic, id) order, not id order, so finding the first `limit` ids means reading every
//   row the pattern has ever had, whatever `since` (for `package:*`, a third of the log).
// - Broad patterns (more than PATTERN_TOPICS_MAX topics, e.g. `job:*` over 100,000 jobs): a
//   probe per topic would cost far more than walking ids, so the next PATTERN_WALK_IDS ids
//   are walked first, once for all of them. Patterns that common fill the page there (this
//   is how the exporter follows `package:*`). Only when the walk finds fewer than `limit`
//   and stops short of the head are their topics read one range each, after it: broad but
//   rare patterns (`user:*` over 5,000 users, 0.5% of the log) cost a probe per topic, never
//   a walk of the log. One walk for all, not one per pattern: nine patterns `job:1*` …
//   `job:9*` are each rare in the window but together fill it.
// - Near the head (within PATTERN_NEAR_IDS ids) that walk reads every pattern and reaches
//   the head: cheaper than finding their shapes.
// In all: per exact topic, a probe; per pattern, up to PATTERN_TOPICS_MAX + 1 probes, then a
// probe per topic (narrow); the walk (broad, each row tested against each broad pattern)
// and, if it falls short, a probe per topic under them; plus the rows, at most `limit` per
// range (so many hot topics read up to entries × limit index entries). The ranges are
// disjoint (filterRanges), merged in id order, and only the page's rows are then read by
// primary key. Every comparison on topic says collate "C", the index's collation: without
// it PostgreSQL would not use the index.
const READ_FILTERED_SQL = `${READ_HEAD_SQL},
       near as (select (select max_id from h) - $1::bigint <= ${PATTERN_NEAR_IDS} as yes),
       -- Each pattern with its first topics: all of them if it is narrow.
       shapes as (
         select p.lo, p.hi, array(${PATTERN_TOPICS_SQL} limit ${PATTERN_TOPICS_MAX + 1}) as topics
         from unnest($4::text[], $5::text[]) as p(lo, hi)
         where not (select yes from near)
       ),
       walk_patterns as (
         select case when (select yes from near) then $4::text[]
                     else array(select lo from shapes where cardinality(topics) > ${PATTERN_TOPICS_MAX})
                end as los
       ),
       -- ^@ (starts_with) cannot use an index here, which keeps the walk on the primary key:
       -- the topic index would read all of the patterns' rows.
       walked as (
         select e.id from herald.events e
         where cardinality((select los from walk_patterns)) > 0
           and e.id > $1::bigint and e.id <= $1::bigint + ${PATTERN_WALK_IDS}
           and e.topic ^@ any((select los from walk_patterns)::text[])
         order by e.id
         limit $2::bigint
       ),
       -- The (topic, id) ranges to read, each from its own position.
       ranges as (
         select t.topic, $1::bigint as after
         from unnest($3::text[]) as t(topic)
         union all
         select t.topic, $1::bigint
         from shapes s cross join unnest(s.topics) as t(topic)
         where cardinality(s.topics) <= ${PATTERN_TOPICS_MAX}
         union all
         select t.topic, $1::bigint + ${PATTERN_WALK_IDS}
         from shapes p cross join lateral (${PATTERN_TOPICS_SQL}) t
         where cardinality(p.topics) > ${PATTERN_TOPICS_MAX}
           and $1::bigint + ${PATTERN_WALK_IDS} < (select max_id from h)
           and (select count(*) from walked) < $2::bigint
       ),
       hits as (
         select id from walked
         union all
         select r.id
         from ranges t
         cross join lateral (
           select e.id from herald.events e
           where e.topic collate "C" = t.topic and e.id > t.after
           order by e.id
           limit $2::bigint
         ) r
       )
  select m.epoch, m.pruned_through, greatest(h.max_id, m.pruned_through) as head, e.*
  from m cross join h
  left join lateral (
    select ${EVENT_COLUMNS}
    from herald.events
    where id = any(array(select id from hits order by id limit $2::bigint))
    order by id
  ) e on true`;

/**
 * A filter as disjoint index ranges: the exact topics no pattern matches, and each pattern
 * no shorter pattern covers as the range [lo, hi) of the C-collation topic index, where hi
 * is lo with its last byte raised by one. Topics and patterns are ASCII below 0x7f, so that
 * byte never overflows, and in byte order a topic starts with lo exactly when lo <= topic < hi.
 */
export function filterRanges(filter: TopicFilter): { exact: string[]; lo: string[]; hi: string[] } {
  const patterns = [...filter.prefixes].sort((a, b) => a.length - b.length);
  const lo: string[] = [];
  for (const p of patterns) if (!lo.some((q) => p.startsWith(q))) lo.push(p);
  const exact = [...filter.exact].filter((t) => !lo.some((q) => t.startsWith(q)));
  const hi = lo.map((p) => p.slice(0, -1) + String.fromCharCode(p.charCodeAt(p.length - 1) + 1));
  return { exact, lo, hi };
}

/** The statement read() runs, exported so a test can EXPLAIN exactly it. */
export function readQuery(after: number, filter: TopicFilter, limit: number): { text: string; values: unknown[] } {
  if (filter.all) return { text: READ_ALL_SQL, values: [after, limit] };
  const { exact, lo, hi } = filterRanges(filter);
  return { text: READ_FILTERED_SQL, values: [after, limit, exact, lo, hi] };
}

interface ReadRow extends Omit<EventRow, 'id'> {
  epoch: string;
  pruned_through: number;
  head: number;
  id: number | null;
}

export class EventLog {
  private readonly pool: pg.Pool;
  /** Where read() runs (its own pool, timeout and fair queue); without it, on `pool`. */
  readonly reads: CatchUpReads | undefined;

  constructor(pool: pg.Pool, reads?: CatchUpReads) {
    this.pool = pool;
    this.reads = reads;
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

  /**
   * emitMany for events whose `data` is already JSON text, handed to PostgreSQL as it is so
   * jsonb reads the numbers itself and keeps every digit. The text must be one JSON value
   * jsonb accepts: POST /v1/events checks it with scanJson (src/gateway/json-input.ts).
   */
  async emitManyJson(events: readonly NewEventJson[], client: pg.Pool | pg.PoolClient = this.pool): Promise<number[]> {
    const valid = EventLog.validate(events.map(({ topic, type }) => ({ topic, type })));
    if (valid.length === 0) return [];
    const text = `[${valid.map((e, i) => `{"topic":${JSON.stringify(e.topic)},"type":${JSON.stringify(e.type)},"data":${events[i]!.dataJson}}`).join(',')}]`;
    const { rows } = await client.query<{ id: number }>('select herald.append($1::jsonb) as id', [text]);
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
   * Throws cursor_expired when retention has removed events after `after`. A client's read
   * (on CatchUpReads) is cancelled when `opts.signal` aborts.
   */
  async read(after: number, filter: TopicFilter, limit: number, opts: ReadOptions = {}): Promise<ReadResult> {
    const query = readQuery(after, filter, limit);
    const { rows } = this.reads ? await this.reads.run((c) => c.query<ReadRow>(query), opts) : await this.pool.query<ReadRow>(query);
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
    const { rows } = await this.pool.query<EventRow>(`select ${EVENT_COLUMNS} from herald.events where id > $1 order by id limit $2`, [after, limit]);
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
