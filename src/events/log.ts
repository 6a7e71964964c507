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

/** One page of a catch-up read: the events, how far the read got, and the log's head. */
export interface ReadResult extends LogHead {
  events: Event[];
  /**
   * Highest id this read has examined: every matching event up to it is in `events`, so the
   * next read starts after it. The last returned id when the page is full; otherwise the
   * head, or less when the read's work budget stopped it short (then the page may be short,
   * even empty, and more is left to read: see READ_FILTERED_SQL).
   */
  covered: number;
}

/** Retention bounds (0: no bound) and how many events one delete removes. */
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
 * walking the primary key, about 3 ms (less far for more than 10 patterns: see
 * PATTERN_WALK_TESTS_MAX). Patterns whose events are at least 1 in 10 of the log (`job:*`,
 * `package:*`) fill a page of 1,000 within it.
 */
export const PATTERN_WALK_IDS = 10_000;
/**
 * A read this close to the head (in ids) reads all its patterns by walking the ids up to
 * the head: at most this many rows, where telling one broad pattern from a narrow one takes
 * 101 probes, each about as costly as walking 15–20 rows. Near the head is the common read:
 * a long-poll, a reconnect, a consumer that fell a little behind.
 */
export const PATTERN_NEAR_IDS = 500;
/**
 * The most skip-scan probes one read makes (each finds the next topic under a pattern, or
 * that there is none), across all its patterns: 5–6 µs each, so 10–13 ms, plus one range
 * read per topic found. Enough for every legitimate filter measured (100 patterns of
 * 11 topics: 1,200), a tenth of the worst the filter-entry cap allows (100 broad patterns:
 * 10,100 to tell them apart, then one per topic). A read that runs out stops probing and
 * answers from its walk of the ids instead, with `covered` where the walk ended.
 */
export const PATTERN_PROBES_MAX = 2000;
/**
 * The most (row, pattern) pairs one walk of the ids tests, about 0.1 µs each: the walk is
 * PATTERN_WALK_IDS long for up to 10 patterns and shorter for more (1,000 ids for 100), so
 * 100 broad patterns cost about 10 ms to walk, not 100.
 */
export const PATTERN_WALK_TESTS_MAX = 100_000;
/**
 * The most index entries one read takes from its topic ranges, shared evenly between them
 * (each still reads at most `limit`): 100 hot exact topics read 200 rows each, not 1,000.
 * A range that fills its share has been examined only up to its last id, and so has the read.
 */
export const RANGE_ROWS_MAX = 20_000;

// One statement, one snapshot: the rows, the head and the retention horizon agree, so a
// read racing the pruner reports cursor_expired instead of a silently shortened catch-up.
const READ_HEAD_SQL = `
  with m as (select epoch::text as epoch, pruned_through from herald.meta),
       h as (select coalesce(max(id), 0) as max_id from herald.events)`;

// `*`: the next ids in primary-key order, which is what it returns. It has examined up to
// its last row when the page is full, else up to the head.
const READ_ALL_SQL = `${READ_HEAD_SQL}
  select m.epoch, m.pruned_through, greatest(h.max_id, m.pruned_through) as head,
         case when count(e.id) over () = $2::bigint then max(e.id) over ()
              else greatest(h.max_id, m.pruned_through, $1::bigint) end as covered,
         e.*
  from m cross join h
  left join lateral (
    select ${EVENT_COLUMNS}
    from herald.events
    where id > $1
    order by id
    limit $2
  ) e on true`;

/**
 * The distinct topics in [`from`, `hi`) (or (`from`, `hi`) when `cmp` is `>`), in order, one
 * index probe each: a skip scan, which PostgreSQL 17 does not do by itself. One row per
 * probe: each topic found, then a null for the probe that found none, so a `limit` on it
 * caps the probes exactly. Read lazily, so that limit stops the probing.
 */
const patternTopicsSql = (from: string, cmp: '>=' | '>', hi: string) => `
  with recursive topics(topic) as (
    select (select e.topic collate "C" from herald.events e
            where e.topic collate "C" ${cmp} ${from} and e.topic collate "C" < ${hi}
            order by e.topic collate "C"
            limit 1)
    union all
    select (select e.topic collate "C" from herald.events e
            where e.topic collate "C" > t.topic and e.topic collate "C" < ${hi}
            order by e.topic collate "C"
            limit 1)
    from topics t
    where t.topic is not null
  )
  select topic from topics`;

// Filtered reads (issue 12). The statement before this one walked the primary key from
// `since` to the head and tested every row (its `topic = any(…) or exists (… starts_with …)`
// kept the topic index out): 260–700 ms for a topic with no events on a 280,000-event log.
// Now every row comes from an index range, so a read costs what it returns plus a bounded
// amount per filter entry, whatever the log's length. On (topic collate "C", id) (sql/009):
// - Exact topic: one range `topic = t and id > since`, in id order.
// - Narrow pattern: the same range for each topic under it, found by patternTopicsSql.
//   Rejected: one range `lo <= topic < hi` for the whole pattern. The index yields it in
//   (topic, id) order, not id order, so finding the first `limit` ids means reading every
//   row the pattern has ever had, whatever `since` (for `package:*`, a third of the log).
// - Broad patterns (more than PATTERN_TOPICS_MAX topics, e.g. `job:*` over 100,000 jobs): a
//   probe per topic would cost far more than walking ids, so the next PATTERN_WALK_IDS ids
//   are walked first, once for all of them. Patterns that common fill the page there (this
//   is how the exporter follows `package:*`). Only when the walk finds fewer than `limit`
//   and stops short of the head are their other topics found and read one range each, after
//   it: broad but rare patterns (`user:*` over 5,000 users, 0.5% of the log) cost a probe
//   per topic, never a walk of the log. One walk for all, not one per pattern: nine patterns
//   `job:1*` … `job:9*` are each rare in the window but together fill it.
// - Near the head (within PATTERN_NEAR_IDS ids) that walk reads every pattern and reaches
//   the head: cheaper than finding their shapes.
//
// The work budget. Left alone, the probes grow with the filter: 100 broad rare patterns of
// 150 topics each took 25,000 probes, 0.2–0.3 s of PostgreSQL CPU (1.5–3.6 s on a table not
// yet analyzed, where the fetch below, then `id = any(array)`, became a parallel scan of the
// table), a read any anonymous client could send over and over. So one read makes at most PATTERN_PROBES_MAX
// skip-scan probes in all: patterns are told apart in order until it runs out (the rest
// are "unknown"), and the other topics of broad patterns are looked for only with what is
// left. A read that runs out does not guess: its unknown and broad patterns are found by
// the walk alone, and it has examined the ids only up to where the walk ended. The walk
// tests at most PATTERN_WALK_TESTS_MAX (row, pattern) pairs, and the ranges read at most
// RANGE_ROWS_MAX index entries, shared evenly; a range that fills its share has been
// examined up to its last id. The page is the first `limit` matches up to the lowest of
// those bounds (and the head), and `covered` says how far that is: the caller's next read
// starts there. So a read is honest (never skips an event), every read makes progress, and
// a client catches up in several bounded reads instead of one unbounded one.
//
// In all: per exact topic, a range; the probes (at most PATTERN_PROBES_MAX), then a range
// per topic found; the walk; the ranges' rows (at most RANGE_ROWS_MAX); then only the page's
// rows are read, one primary-key lookup each. The ranges are disjoint (filterRanges) and
// disjoint from the walk. Every comparison on topic says collate "C", the index's collation:
// without it PostgreSQL would not use the index.
const READ_FILTERED_SQL = `${READ_HEAD_SQL},
       near as (
         select (select max_id from h) - $1::bigint
                  <= least(${PATTERN_NEAR_IDS}, ${PATTERN_WALK_TESTS_MAX} / greatest(1, cardinality($4::text[]))) as yes
       ),
       pats as (select p.i, p.lo, p.hi from unnest($4::text[], $5::text[]) with ordinality as p(lo, hi, i)),
       -- Pass 1: each pattern's first topics, pattern after pattern, at most
       -- PATTERN_TOPICS_MAX + 1 probes each and PATTERN_PROBES_MAX in all (a row per probe).
       probed as (
         select p.i, t.topic
         from pats p
         cross join lateral (${patternTopicsSql('p.lo', '>=', 'p.hi')} limit ${PATTERN_TOPICS_MAX + 1}) t
         where not (select yes from near)
         limit ${PATTERN_PROBES_MAX}
       ),
       -- Ended: narrow, all its topics found. Not ended after PATTERN_TOPICS_MAX + 1 probes:
       -- broad. Not ended with fewer: unknown, the budget ran out (or near: not probed).
       shapes as (
         select p.i, p.lo, p.hi, count(b.i) as probes,
                coalesce(bool_or(b.i is not null and b.topic is null), false) as ended,
                max(b.topic) as last_topic
         from pats p left join probed b on b.i = p.i
         group by p.i, p.lo, p.hi
       ),
       walk as (
         select w.los, $1::bigint + least(${PATTERN_WALK_IDS}, ${PATTERN_WALK_TESTS_MAX} / greatest(1, cardinality(w.los))) as last_id
         from (select array(select s.lo from shapes s where not s.ended) as los) w
       ),
       -- ^@ (starts_with) cannot use an index here, which keeps the walk on the primary key:
       -- the topic index would read all of the patterns' rows.
       walked as (
         select e.id from herald.events e
         where cardinality((select los from walk)) > 0
           and e.id > $1::bigint and e.id <= (select last_id from walk)
           and e.topic ^@ any((select los from walk)::text[])
         order by e.id
         limit $2::bigint
       ),
       flags as (
         select (select count(*) from probed) as probes,
                exists (select from shapes where not ended and probes <= ${PATTERN_TOPICS_MAX}) and not (select yes from near) as out_of_probes,
                (select count(*) from walked) = $2::bigint as walk_full,
                (select count(*) from shapes where not ended and probes > ${PATTERN_TOPICS_MAX}) as broad
       ),
       -- Pass 2, only when the broad patterns are rare (the walk fell short of a page and of
       -- the head): their other topics, after the ones pass 1 found, with the probes left.
       more as (
         select s.i, t.topic
         from shapes s
         cross join lateral (${patternTopicsSql('s.last_topic', '>', 's.hi')}) t
         where not s.ended and s.probes > ${PATTERN_TOPICS_MAX}
           and not (select out_of_probes from flags) and not (select walk_full from flags)
           and (select last_id from walk) < (select max_id from h)
         limit greatest(0, ${PATTERN_PROBES_MAX} - (select probes from flags))
       ),
       -- Every broad pattern's topics found (each ended within the budget) or none needed.
       found as (
         select not f.out_of_probes
                and (f.walk_full or (select last_id from walk) >= (select max_id from h)
                     or (select count(*) from more where topic is null) = f.broad) as all_topics
         from flags f
       ),
       -- The (topic, id) ranges to read, each from its own position.
       ranges as (
         select t.topic collate "C" as topic, $1::bigint as after
         from unnest($3::text[]) as t(topic)
         union all
         select b.topic, $1::bigint
         from probed b join shapes s on s.i = b.i
         where s.ended and b.topic is not null
         union all
         select b.topic, (select last_id from walk)
         from probed b join shapes s on s.i = b.i
         where not s.ended and b.topic is not null and (select all_topics from found)
           and not (select walk_full from flags) and (select last_id from walk) < (select max_id from h)
         union all
         select x.topic, (select last_id from walk)
         from more x
         where x.topic is not null and (select all_topics from found)
       ),
       per_range as (
         select greatest(1, least($2::bigint, ${RANGE_ROWS_MAX} / greatest(1, (select count(*) from ranges)))) as n
       ),
       reads as (
         select array(select e.id from herald.events e
                      where e.topic collate "C" = r.topic and e.id > r.after
                      order by e.id
                      limit (select n from per_range)) as ids
         from ranges r
       ),
       -- How far every source has been examined: the head, or less where one stopped short.
       examined as (
         select least(
                  (select greatest(h.max_id, m.pruned_through) from h cross join m),
                  case when (select walk_full from flags) then (select max(id) from walked)
                       when not (select all_topics from found) then (select last_id from walk) end,
                  (select min(ids[cardinality(ids)]) from reads where cardinality(ids) = (select n from per_range))
                ) as id
       ),
       page as (
         select x.id
         from (select id from walked union all select unnest(ids) from reads) x
         where x.id <= (select id from examined)
         order by x.id
         limit $2::bigint
       )
  select m.epoch, m.pruned_through, greatest(h.max_id, m.pruned_through) as head,
         case when (select count(*) from page) = $2::bigint then (select max(id) from page)
              else greatest((select id from examined), $1::bigint) end as covered,
         e.*
  from m cross join h
  left join lateral (
    -- One primary-key lookup per row of the page; offset 0 keeps it a nested loop whatever
    -- the statistics say (id = any(array) was planned as a parallel scan of the whole table
    -- on a freshly loaded one).
    select r.*
    from page p
    cross join lateral (select ${EVENT_COLUMNS} from herald.events where id = p.id offset 0) r
    order by r.id
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
  covered: number;
  id: number | null;
}

/** The event tables: appends, catch-up reads, the head and retention. */
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
   * jsonb accepts: POST /v1/events checks it with scanJson (src/http/json-input.ts).
   */
  async emitManyJson(events: readonly NewEventJson[], client: pg.Pool | pg.PoolClient = this.pool): Promise<number[]> {
    const valid = EventLog.validate(events.map(({ topic, type }) => ({ topic, type })));
    if (valid.length === 0) return [];
    const text = `[${valid.map((e, i) => `{"topic":${JSON.stringify(e.topic)},"type":${JSON.stringify(e.type)},"data":${events[i]!.dataJson}}`).join(',')}]`;
    const { rows } = await client.query<{ id: number }>('select herald.append($1::jsonb) as id', [text]);
    return rows.map((r) => r.id).sort((a, b) => a - b);
  }

  /** emitMany for one event; returns its id. */
  async emit(event: NewEvent, client?: pg.Pool | pg.PoolClient): Promise<number> {
    const [id] = await this.emitMany([event], client);
    return id!;
  }

  /** The log's epoch, head and oldest readable id, on the main pool. */
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
    return { ...head, events, covered: first.covered };
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
