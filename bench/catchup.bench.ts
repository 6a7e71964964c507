/**
 * Filtered catch-up (issue 12): server time of EventLog.read() on a log of EVENTS events,
 * beside the statement it replaced (kept below as the baseline), same database, same run.
 * Each read is timed twice: PostgreSQL's own planning + execution time (EXPLAIN ANALYZE,
 * TIMING OFF), and the wall time around the query in this process, which is what a Herald
 * server waits. The new read must return exactly the old one's events up to its `covered`
 * (all of them unless its work budget stopped it short), or the run fails.
 */
import type pg from 'pg';
import { createPool } from '../src/db/pool.ts';
import { Event, type EventRow } from '../src/events/event.ts';
import { readQuery } from '../src/events/log.ts';
import { TopicFilter } from '../src/events/topic.ts';
import { createLogger } from '../src/logger.ts';
import { benchDatabase, percentile, printTable, type Row } from './support.ts';

const EVENTS = Number(process.env.BENCH_CATCHUP_EVENTS ?? 1_000_000);
const RUNS = Number(process.env.BENCH_CATCHUP_RUNS ?? 9);
/** pollMaxLimit: the largest page a client can ask for. */
const LIMIT = 1000;

// The read before issue 12, verbatim: one walk of the primary key from `since`, testing
// every row against the filter.
const OLD_READ_SQL = (filtered: boolean) => `
  with m as (select epoch::text as epoch, pruned_through from herald.meta),
       h as (select coalesce(max(id), 0) as max_id from herald.events)
  select m.epoch, m.pruned_through, greatest(h.max_id, m.pruned_through) as head, e.*
  from m cross join h
  left join lateral (
    select id, topic, type, data::text as data, at
    from herald.events
    where id > $1
    ${filtered ? 'and (topic = any($3::text[]) or exists (select 1 from unnest($4::text[]) p where starts_with(topic, p)))' : ''}
    order by id
    limit $2
  ) e on true`;

function oldQuery(after: number, filter: TopicFilter, limit: number): { text: string; values: unknown[] } {
  if (filter.all) return { text: OLD_READ_SQL(false), values: [after, limit] };
  return { text: OLD_READ_SQL(true), values: [after, limit, [...filter.exact], filter.prefixes] };
}

// A log shaped like Herald's own: jobs with a few events each, close together; packages
// hit at random; a few hot topics; a namespace of many rarely-written topics; and one
// topic with exactly 100 events spread over the whole log. Inserted in one statement,
// straight into the table (the ids the commit trigger would assign are just g).
const LOAD_SQL = `
  insert into herald.events (id, topic, type, data, at)
  select g,
    case
      when g % 10000 = 5000 then 'deploy:web'
      when g % 200 = 3 then 'user:' || (hashint4(g::integer) & 1048575) % 5000
      when g % 10 < 5 then 'job:' || g / 10
      when g % 10 < 8 then 'package:pkg-' || (hashint4(g::integer) & 1048575) % 20000
      else (array['metrics:cpu', 'metrics:mem', 'feed:all', 'audit:log'])[1 + (g / 10) % 4]
    end,
    'status',
    jsonb_build_object('n', g, 'state', 'done', 'ok', true),
    now() - (($1::bigint - g) * interval '10 ms')
  from generate_series(1, $1::bigint) g`;

interface Case {
  name: string;
  entries: string[];
  since: (head: number) => number;
  /** The target for the new read's server time, if it sets one. */
  targetMs?: number;
}

// 100 package families (`package:pkg-1234*`: pkg-1234 and pkg-12340…12349), 11 topics each.
const FAMILIES = Array.from({ length: 100 }, (_, i) => `package:pkg-${1000 + i * 9}*`);

const JOB_DIGITS = Array.from({ length: 9 }, (_, i) => `job:${i + 1}*`);

const CASES: Case[] = [
  { name: '`nope:x`, no events, since 0', entries: ['nope:x'], since: () => 0, targetMs: 10 },
  { name: '`deploy:web`, 100 events, since 0', entries: ['deploy:web'], since: () => 0, targetMs: 10 },
  { name: '100 patterns of 11 topics, since 0', entries: FAMILIES, since: () => 0, targetMs: 50 },
  { name: '`nope:*`, no topics, since 0', entries: ['nope:*'], since: () => 0 },
  { name: '`metrics:cpu`, hot (5% of events), since 0', entries: ['metrics:cpu'], since: () => 0 },
  { name: '`package:*`, 20,000 topics (30%), since 0', entries: ['package:*'], since: () => 0 },
  { name: '`job:1*` … `job:9*`, 100,000 topics (50%), since 0', entries: JOB_DIGITS, since: () => 0 },
  { name: '`user:*`, 5,000 topics (0.5%), since 0', entries: ['user:*'], since: () => 0 },
  { name: '`package:*`, since head − 100', entries: ['package:*'], since: (h) => h - 100 },
  { name: '100 patterns of 11 topics, since head − 100', entries: FAMILIES, since: (h) => h - 100 },
  { name: '100 patterns of 11 topics, since head − 5,000', entries: FAMILIES, since: (h) => h - 5000 },
  { name: '`*`, since 0 (unchanged)', entries: ['*'], since: () => 0 },
];

interface Timing {
  serverMs: number[];
  planningMs: number[];
  wallMs: number[];
  /** The events' bodies, from the warm-up run. */
  bodies: string[];
  ids: number[];
  /** The read's `covered` (the statement before this change had none: the head or the last id). */
  covered: number | undefined;
}

async function time(pool: pg.Pool, q: { text: string; values: unknown[] }): Promise<Timing> {
  const t: Timing = { serverMs: [], planningMs: [], wallMs: [], bodies: [], ids: [], covered: undefined };
  for (let i = 0; i <= RUNS; i++) {
    const { rows } = await pool.query({ text: `explain (analyze, timing off, summary on, format json) ${q.text}`, values: q.values });
    const plan = (rows[0]['QUERY PLAN'] as { 'Planning Time': number; 'Execution Time': number }[])[0]!;
    const t0 = performance.now();
    const result = await pool.query<EventRow & { id: number | null; covered?: number }>(q);
    const events = result.rows[0]?.id === null ? [] : result.rows.map((r) => new Event(r as EventRow));
    const wall = performance.now() - t0;
    // The first run warms the caches and is not counted.
    if (i === 0) {
      t.bodies = events.map((e) => e.body);
      t.ids = events.map((e) => e.id);
      t.covered = result.rows[0]?.covered;
      continue;
    }
    t.serverMs.push(plan['Planning Time'] + plan['Execution Time']);
    t.planningMs.push(plan['Planning Time']);
    t.wallMs.push(wall);
  }
  t.serverMs.sort((a, b) => a - b);
  t.planningMs.sort((a, b) => a - b);
  t.wallMs.sort((a, b) => a - b);
  return t;
}

export async function run(): Promise<Row[]> {
  const db = await benchDatabase();
  const pool = createPool(db.url, 2, createLogger('silent'));
  try {
    const t0 = performance.now();
    await pool.query(LOAD_SQL, [EVENTS]);
    await pool.query(`select setval('herald.event_id_seq', $1)`, [EVENTS]);
    await pool.query('vacuum analyze herald.events');
    console.log(
      `loaded ${EVENTS} events in ${((performance.now() - t0) / 1000).toFixed(1)} s; ${RUNS} timed runs per read (after one warm-up), limit ${LIMIT}`,
    );
    const server: Row[] = [];
    const wall: Row[] = [];
    for (const c of CASES) {
      const filter = TopicFilter.parse(c.entries);
      const since = c.since(EVENTS);
      const before = await time(pool, oldQuery(since, filter, LIMIT));
      const after = await time(pool, readQuery(since, filter, LIMIT));
      // A read its budget stopped short returns what it found up to `covered`: exactly the
      // old read's events up to there.
      const covered = after.covered ?? Number.POSITIVE_INFINITY;
      const want = before.bodies.filter((_, i) => before.ids[i]! <= covered);
      if (JSON.stringify(want) !== JSON.stringify(after.bodies)) throw new Error(`${c.name}: the new read returned different events from the old one`);
      const p50 = (t: number[]) => percentile(t, 50);
      const max = (t: number[]) => t[t.length - 1]!;
      const target = c.targetMs === undefined ? '' : `≤ ${c.targetMs} ms: ${max(after.serverMs) <= c.targetMs ? 'met' : 'MISSED'}`;
      server.push({
        read: c.name,
        events: after.ids.length,
        // How far the new read got: a full page, the head, or where its budget stopped it.
        covered: after.ids.length === LIMIT ? 'full page' : after.covered === EVENTS ? 'head' : String(after.covered),
        'old p50 ms': p50(before.serverMs),
        'old max ms': max(before.serverMs),
        'new p50 ms': p50(after.serverMs),
        'new max ms': max(after.serverMs),
        'old/new p50': p50(before.serverMs) / p50(after.serverMs),
        'new planning p50 ms': p50(after.planningMs),
        target,
      });
      wall.push({
        read: c.name,
        'old p50 ms': p50(before.wallMs),
        'old max ms': max(before.wallMs),
        'new p50 ms': p50(after.wallMs),
        'new max ms': max(after.wallMs),
        'old/new p50': p50(before.wallMs) / p50(after.wallMs),
      });
    }
    printTable(`Catch-up reads on ${EVENTS} events, PostgreSQL server time (planning + execution, EXPLAIN ANALYZE with TIMING OFF), ${RUNS} runs`, server);
    printTable('The same reads, wall time around the query in the reading process (rows parsed into Events)', wall);
    return server;
  } finally {
    await pool.end();
    await db.stop();
  }
}
