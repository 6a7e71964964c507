/**
 * How EventLog.read() reaches its rows (issue 12): every filter shape reads index ranges, and
 * a read's cost does not grow with the log. The plans are EXPLAINed from the very statement
 * read() runs (readQuery), on tables large enough and analyzed, so the planner's choice is
 * the one production gets.
 */
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPool } from '../../src/db/pool.ts';
import {
  EventLog,
  filterRanges,
  PATTERN_NEAR_IDS,
  PATTERN_PROBES_MAX,
  PATTERN_TOPICS_MAX,
  PATTERN_WALK_IDS,
  PATTERN_WALK_TESTS_MAX,
  RANGE_ROWS_MAX,
  readQuery,
} from '../../src/events/log.ts';
import { isValidTopic, TopicFilter } from '../../src/events/topic.ts';
import { createLogger } from '../../src/logger.ts';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';

let db: TestDatabase;
let pool: pg.Pool;
let log: EventLog;

beforeAll(async () => {
  db = await createTestDatabase();
  pool = createPool(db.url, 4, createLogger('silent'));
  log = new EventLog(pool);
});
afterAll(async () => {
  await pool.end();
  await db.drop();
});

/**
 * Events `from`..`to` straight into the table (no trigger: only the shape matters). 1 in 250
 * is on one of 200 `sparse:N` topics, the rest on 999 `t:N` topics.
 */
async function load(from: number, to: number): Promise<void> {
  const c = await pool.connect();
  try {
    // The test server commits asynchronously; VACUUM cannot mark a page all-visible until
    // the commits on it are flushed, and without the visibility map the planner prices
    // index-only scans as heap reads. Production commits synchronously.
    await c.query('set synchronous_commit = on');
    await c.query(
      `insert into herald.events (id, topic, type, data, at)
       select g, case when g % 250 = 7 then 'sparse:' || (g / 250) % 200 else 't:' || (g % 999) end,
              'x', '{}'::jsonb, now()
       from generate_series($1::bigint, $2::bigint) g`,
      [from, to],
    );
    await c.query('vacuum analyze herald.events');
  } finally {
    c.release();
  }
}

interface PlanNode {
  'Node Type': string;
  'Relation Name'?: string;
  'Index Name'?: string;
  'Index Cond'?: string;
  Filter?: string;
  'Actual Loops'?: number;
  'Shared Hit Blocks'?: number;
  'Shared Read Blocks'?: number;
  Plans?: PlanNode[];
}

function flatten(node: PlanNode): PlanNode[] {
  return [node, ...(node.Plans ?? []).flatMap(flatten)];
}

async function explain(options: string, since: number, entries: string[], limit = 100, on = pool): Promise<PlanNode> {
  const q = readQuery(since, TopicFilter.parse(entries), limit);
  const { rows } = await on.query({ text: `explain (${options}, format json) ${q.text}`, values: q.values });
  return (rows[0]['QUERY PLAN'] as { Plan: PlanNode }[])[0]!.Plan;
}

/** Every node that reads herald.events, as `<node type> <index>: <index cond>`. */
async function eventScans(since: number, entries: string[], executedOnly = false): Promise<string[]> {
  const plan = await explain(executedOnly ? 'analyze, costs off, timing off' : 'costs off', since, entries);
  return flatten(plan)
    .filter((n) => n['Relation Name'] === 'events' && (!executedOnly || (n['Actual Loops'] ?? 0) > 0))
    .map((n) => `${n['Node Type']} ${n['Index Name'] ?? ''}: ${n['Index Cond'] ?? ''}${n.Filter ? ` filter ${n.Filter}` : ''}`);
}

async function buffers(since: number, entries: string[]): Promise<number> {
  const plan = await explain('analyze, buffers, costs off, timing off', since, entries);
  return (plan['Shared Hit Blocks'] ?? 0) + (plan['Shared Read Blocks'] ?? 0);
}

// The scans a read may use, by what they are for.
const HEAD = /^Index Only Scan events_pkey: $/; // max(id), read backward
const FETCH = /^Index Scan events_pkey: \(id = p\.id\)$/; // the page's columns, one lookup per row
const TOPIC_RANGE = /^Index (Only )?Scan events_topic_c_id_idx: \(\(topic = \S+\) AND \(id > /;
const SKIP_SCAN = /^Index Only Scan events_topic_c_id_idx: \(\(topic >=? \S+\) AND \(topic < \S+\)\)$/; // finding a pattern's topics
const WALK = /^Index Scan events_pkey: \(\(id > .*\) AND \(id <= .*\)\) filter \(topic \^@ ANY/;
const ALL_WALK = /^Index Scan events_pkey: \(id > /;

/** Skip-scan probes the read makes: each finds the next topic under a pattern, or that there is none. */
async function probes(since: number, entries: string[], limit = 100, on = pool): Promise<number> {
  const plan = await explain('analyze, costs off, timing off', since, entries, limit, on);
  return flatten(plan)
    .filter((n) => SKIP_SCAN.test(`${n['Node Type']} ${n['Index Name'] ?? ''}: ${n['Index Cond'] ?? ''}`))
    .reduce((sum, n) => sum + (n['Actual Loops'] ?? 0), 0);
}

function kinds(scans: string[]): string[] {
  const named: [string, RegExp][] = [
    ['head', HEAD],
    ['fetch', FETCH],
    ['topic range', TOPIC_RANGE],
    ['skip scan', SKIP_SCAN],
    ['walk', WALK],
    ['all walk', ALL_WALK],
  ];
  return [...new Set(scans.map((s) => named.find(([, re]) => re.test(s))?.[0] ?? `unexpected: ${s}`))].sort();
}

describe('filterRanges', () => {
  it('drops entries another entry covers, so every row is found by one range only', () => {
    expect(filterRanges(TopicFilter.parse(['job:1', 'job:*', 'job:1*', 'package:x', 'pack*', 'a:b', 'a:b:*']))).toEqual({
      exact: ['a:b'],
      lo: ['job:', 'pack', 'a:b:'],
      hi: ['job;', 'pacl', 'a:b;'],
    });
  });

  it('herald.valid_topic admits only [a-z0-9._-] and `:`, all below 0x7f: raising a last byte never overflows', async () => {
    const { rows } = await pool.query(
      `select string_agg(chr(b), '' order by b) as bytes from generate_series(1, 1023) b where herald.valid_topic('x' || chr(b) || 'x')`,
    );
    expect(rows[0].bytes).toBe('-.0123456789:_abcdefghijklmnopqrstuvwxyz');
  });

  it('a topic matches pattern p* exactly when lo <= topic < hi in the index order, whatever byte p ends in', async () => {
    // Every topic of up to four bytes over the bytes that matter (the lowest and highest of
    // each class, and each punctuation mark), and every pattern that is a prefix of one.
    const bytes = [...'az09._-:'];
    let topics = ['x'];
    for (let i = 0; i < 3; i++) topics = topics.concat(topics.flatMap((t) => bytes.map((c) => t + c)));
    topics = [...new Set(topics)].filter((t) => isValidTopic(t));
    const patterns = [...new Set(topics.flatMap((t) => [t, `${t}:`]))].filter((p) => /^[a-z0-9._-]+(:[a-z0-9._-]+)*:?$/.test(p));
    const ranges = patterns.map((p) => filterRanges(TopicFilter.parse([`${p}*`])));
    const { rows } = await pool.query(
      `select count(*) filter (where starts_with(t.topic, r.lo)
                                 <> (t.topic collate "C" >= r.lo and t.topic collate "C" < r.hi))::int as wrong,
              count(*)::int as pairs
       from unnest($1::text[]) t(topic) cross join unnest($2::text[], $3::text[]) r(lo, hi)
       where herald.valid_topic(t.topic)`,
      [topics, ranges.map((r) => r.lo[0]), ranges.map((r) => r.hi[0])],
    );
    expect(topics.length).toBeGreaterThan(200);
    expect(rows[0]).toEqual({ wrong: 0, pairs: topics.length * patterns.length });
  });
});

describe('at 10,000 and then 100,000 events: a read for nothing costs the same', () => {
  const NOTHING: [string, string[]][] = [
    ['an exact topic with no events', ['nope:x']],
    ['a pattern with no topics', ['nope:*']],
    ['exact topics and a narrow pattern, none with events', ['nope:x', 'nope:y', 'none:*']],
  ];
  const at10k = new Map<string, number>();

  it('at 10,000 events: a handful of buffers', async () => {
    await load(1, 10_000);
    for (const [name, entries] of NOTHING) {
      const n = await buffers(0, entries);
      at10k.set(name, n);
      expect(n, name).toBeLessThanOrEqual(20);
    }
  });

  it('at 100,000 events: at most a btree level more per range', async () => {
    await load(10_001, 100_000);
    for (const [name, entries] of NOTHING) {
      const n = await buffers(0, entries);
      expect(n, name).toBeLessThanOrEqual(at10k.get(name)! + entries.length + 2);
    }
  });
});

describe('plans, at 100,000 events over 1,199 topics, analyzed', () => {
  // Runs after the block above has loaded 100,000 events (vitest runs a file's tests in order).
  it('the table is the size these plans assume', async () => {
    const { rows } = await pool.query(`select count(*)::int as n, count(distinct topic)::int as topics from herald.events`);
    expect(rows[0]).toEqual({ n: 100_000, topics: 1_199 });
    expect(100_000).toBeGreaterThan(PATTERN_WALK_IDS * 5);
  });

  const SHAPES: [string, string[]][] = [
    ['exact topics', ['t:1', 't:2', 'nope:x']],
    ['a narrow pattern', ['t:12*']],
    ['a broad pattern', ['t:*']],
    ['a broad, sparse pattern', ['sparse:*']],
    ['mixed', ['t:5', 't:12*', 'sparse:*', 'nope:x']],
  ];

  it.for(SHAPES)('%s: the statement reads herald.events only through the intended index ranges, never a sequential scan', async ([, entries]) => {
    const plan = await explain('costs off', 0, entries);
    expect(flatten(plan).filter((n) => n['Relation Name'] === 'events' && /Seq Scan|Bitmap/.test(n['Node Type']))).toEqual([]);
    // Filtered reads share one statement: exact topics by topic range, patterns by a skip
    // scan, then topic ranges or (broad) a bounded walk of the primary key.
    expect(kinds(await eventScans(0, entries))).toEqual(['fetch', 'head', 'skip scan', 'topic range', 'walk']);
  });

  it('`*`: walks the primary key from since, as before', async () => {
    const plan = await explain('costs off', 0, ['*']);
    expect(flatten(plan).filter((n) => n['Relation Name'] === 'events' && /Seq Scan|Bitmap/.test(n['Node Type']))).toEqual([]);
    expect(kinds(await eventScans(0, ['*']))).toEqual(['all walk', 'head']);
  });

  const EXECUTED: [string, string[], number, string[]][] = [
    ['exact topics: one topic range each', ['t:1', 't:2', 'nope:x'], 0, ['fetch', 'head', 'topic range']],
    ['a narrow pattern: its topics by skip scan, then a range each; no walk', ['t:12*'], 0, ['fetch', 'head', 'skip scan', 'topic range']],
    // Nothing found, nothing fetched.
    ['a pattern with no topics: one probe', ['nope:*'], 0, ['head', 'skip scan']],
    [`a broad pattern that fills the page within ${PATTERN_WALK_IDS} ids: the walk alone`, ['t:*'], 0, ['fetch', 'head', 'skip scan', 'walk']],
    ['a broad pattern too sparse for the walk: the walk, then a range per topic', ['sparse:*'], 0, ['fetch', 'head', 'skip scan', 'topic range', 'walk']],
    [`a pattern within ${PATTERN_NEAR_IDS} ids of the head: the walk alone`, ['t:12*'], 100_000 - PATTERN_NEAR_IDS, ['fetch', 'head', 'walk']],
    ['a narrow and a broad pattern near the head: one walk for both', ['t:12*', 'sparse:*'], 100_000 - PATTERN_NEAR_IDS / 2, ['fetch', 'head', 'walk']],
    [
      'the same one id farther from the head: each pattern by its shape',
      ['t:12*', 'sparse:*'],
      100_000 - PATTERN_NEAR_IDS - 1,
      ['fetch', 'head', 'skip scan', 'topic range', 'walk'],
    ],
  ];

  it.for(EXECUTED)('executed, %s', async ([, entries, since, expected]) => {
    expect(kinds(await eventScans(since, entries, true))).toEqual(expected);
  });

  it(`a broad pattern (more than ${PATTERN_TOPICS_MAX} topics) costs at most ${PATTERN_TOPICS_MAX + 1} probes to tell, not one per topic`, async () => {
    expect(await probes(0, ['t:*'])).toBe(PATTERN_TOPICS_MAX + 1);
  });

  it('reads agree with a full scan of the table for every shape, across page boundaries', async () => {
    for (const [, entries] of [...SHAPES, ['*', ['*']] as [string, string[]]]) {
      const filter = TopicFilter.parse(entries);
      for (const [since, limit] of [
        [0, 100],
        [0, 1000],
        [PATTERN_WALK_IDS - 3, 7],
        [54_321, 500],
        [99_990, 100],
        [99_400, 1000],
        [99_700, 1000],
      ] as const) {
        const got = await log.read(since, filter, limit);
        const { rows } = await pool.query<{ id: number; topic: string }>('select id, topic from herald.events where id > $1 order by id', [since]);
        const want = rows.filter((r) => filter.matches(r.topic)).slice(0, limit);
        expect(
          got.events.map((e) => e.id),
          `${entries} since ${since} limit ${limit}`,
        ).toEqual(want.map((r) => r.id));
        expect(got.covered).toBe(want.length === limit ? want.at(-1)!.id : 100_000);
      }
    }
  });
});

describe('the work budget: filters too costly to read at once are read in several bounded reads', () => {
  // A log of its own, 100,000 events: 40 broad rare patterns `w00:*` … `w39:*` (125 topics
  // each, one event per topic, 1 in 20 of the log together), `u:*` (3,000 topics, 1 in 20),
  // `n:*` (50 topics of 100 events, narrow), and 50 hot `bulk:N` topics (1,700 events each).
  const EVENTS = 100_000;
  let budgetDb: TestDatabase;
  let budgetPool: pg.Pool;
  let budgetLog: EventLog;
  let all: { id: number; topic: string }[];

  beforeAll(async () => {
    budgetDb = await createTestDatabase();
    budgetPool = createPool(budgetDb.url, 2, createLogger('silent'));
    budgetLog = new EventLog(budgetPool);
    const c = await budgetPool.connect();
    try {
      await c.query('set synchronous_commit = on');
      await c.query(
        `insert into herald.events (id, topic, type, data, at)
         select g, case g % 20
                     when 1 then 'w' || lpad(((g / 20) % 40)::text, 2, '0') || ':t' || (g / 800) % 150
                     when 3 then 'u:' || (g / 20) % 3000
                     when 5 then 'n:' || (g / 20) % 50
                     else 'bulk:' || g % 50 end,
                'x', '{}'::jsonb, now()
         from generate_series(1, $1::bigint) g`,
        [EVENTS],
      );
      await c.query('vacuum analyze herald.events');
    } finally {
      c.release();
    }
    const { rows } = await budgetPool.query<{ id: number; topic: string }>('select id, topic from herald.events order by id');
    all = rows;
  });
  afterAll(async () => {
    await budgetPool?.end();
    await budgetDb?.drop();
  });

  const W = Array.from({ length: 40 }, (_, i) => `w${String(i).padStart(2, '0')}:*`);
  const EXACT = ['bulk:0', ...Array.from({ length: 99 }, (_, i) => `w${String(i % 40).padStart(2, '0')}:t${i}`)];
  // [name, entries, whether pages of 1,000 stop short of both a full page and the head]
  const SHAPES: [string, string[], boolean][] = [
    ['40 broad rare patterns: too many to tell apart', W, true],
    ['one broad rare pattern of 3,000 topics: too many to find', ['u:*'], true],
    ['a hot exact topic among 100: more rows than the ranges may read', EXACT, true],
    // Hot topics fill every page before the budget shows.
    ['all of them, with a narrow pattern and a hot one', [...W.slice(0, 30), 'u:*', 'n:*', 'bulk:1*', ...EXACT.slice(0, 20)], false],
  ];

  it('the log is the size and shape these reads assume', async () => {
    const topics = (prefix: string) => new Set(all.filter((r) => r.topic.startsWith(prefix)).map((r) => r.topic)).size;
    expect(all).toHaveLength(EVENTS);
    expect([topics('w00:'), topics('u:'), topics('n:'), topics('bulk:')]).toEqual([125, 3000, 50, 50]);
    expect(40 * (PATTERN_TOPICS_MAX + 1)).toBeGreaterThan(PATTERN_PROBES_MAX);
    expect(3000).toBeGreaterThan(PATTERN_PROBES_MAX);
  });

  it(`telling 40 broad patterns apart stops at exactly ${PATTERN_PROBES_MAX} probes; the walk then covers ${PATTERN_WALK_TESTS_MAX} / 40 ids`, async () => {
    expect(await probes(0, W, 1000, budgetPool)).toBe(PATTERN_PROBES_MAX);
    const page = await budgetLog.read(0, TopicFilter.parse(W), 1000);
    const walked = Math.min(PATTERN_WALK_IDS, Math.floor(PATTERN_WALK_TESTS_MAX / 40));
    expect(walked).toBe(2500);
    expect(page.covered).toBe(walked);
    expect(page.head).toBe(EVENTS);
    expect(page.events.map((e) => e.id)).toEqual(all.filter((r) => r.id <= walked && /^w\d\d:/.test(r.topic)).map((r) => r.id));
  });

  it(`finding the rest of a 3,000-topic pattern stops at exactly ${PATTERN_PROBES_MAX} probes in all; the read covers its walk of ${PATTERN_WALK_IDS} ids`, async () => {
    expect(await probes(0, ['u:*'], 1000, budgetPool)).toBe(PATTERN_PROBES_MAX);
    const page = await budgetLog.read(0, TopicFilter.parse(['u:*']), 1000);
    expect(page.covered).toBe(PATTERN_WALK_IDS);
    expect(page.events.map((e) => e.id)).toEqual(all.filter((r) => r.id <= PATTERN_WALK_IDS && r.topic.startsWith('u:')).map((r) => r.id));
  });

  it(`the ranges share ${RANGE_ROWS_MAX} rows: a hot topic among 100 ranges is read ${RANGE_ROWS_MAX / 100} rows at a time, and the read covers up to its last`, async () => {
    const page = await budgetLog.read(0, TopicFilter.parse(EXACT), 1000);
    const hot = all.filter((r) => r.topic === 'bulk:0');
    const edge = hot[RANGE_ROWS_MAX / 100 - 1]!.id;
    expect(page.covered).toBe(edge);
    const filter = TopicFilter.parse(EXACT);
    const want = all.filter((r) => r.id <= edge && filter.matches(r.topic));
    expect(want.length).toBeLessThan(1000);
    expect(page.events.map((e) => e.id)).toEqual(want.map((r) => r.id));
  });

  it.for(SHAPES)(
    '%s: successive reads from 0 return every matching event exactly once, in order, each read exactly the matches up to its covered',
    async ([, entries, stopsShort]) => {
      const filter = TopicFilter.parse(entries);
      const matching = all.filter((r) => filter.matches(r.topic)).map((r) => r.id);
      for (const limit of [1000, 100]) {
        const got: number[] = [];
        let after = 0;
        let reads = 0;
        let short = 0;
        while (after < EVENTS) {
          const page = await budgetLog.read(after, filter, limit);
          reads++;
          const ids = page.events.map((e) => e.id);
          // Honest: exactly the matches in (after, covered], and covered moves on.
          expect(page.covered, `read ${reads} after ${after}`).toBeGreaterThan(after);
          expect(ids).toEqual(matching.filter((id) => id > after && id <= page.covered));
          if (ids.length === limit) expect(page.covered).toBe(ids.at(-1));
          else if (page.covered < page.head) short++;
          got.push(...ids);
          after = page.covered;
        }
        expect(got).toEqual(matching);
        // The budget stopped some reads short of both a full page and the head (with pages
        // of 100, and hot topics, the page fills first).
        if (stopsShort && limit === 1000) expect(short).toBeGreaterThan(0);
      }
    },
  );
});
