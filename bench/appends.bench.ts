/**
 * Append throughput: Herald's commit-ordered append against plain INSERT + NOTIFY (the
 * baseline, same database, same run). 8 concurrent producers, single events and batches.
 *
 * Each Herald variant is paired with the baseline of the same shape, measured right before it;
 * the pairs are repeated (BENCH_APPEND_REPEATS) and the table shows medians, the ratio being
 * the median of the per-repetition ratios, so a machine that slows down for a while moves
 * both sides of a pair. Ends with one line per ratio (`ratio: <what> = <x>x`).
 */
import type pg from 'pg';
import { createPool } from '../src/db/pool.ts';
import { createLogger } from '../src/logger.ts';
import { benchDatabase, PLAIN_APPEND_SQL, PLAIN_EVENTS_SETUP_SQL, percentile, printTable, type Row } from './support.ts';

/**
 * Gives the baseline table herald.events' CHECK constraints as herald.events spells them.
 * PostgreSQL prepares a table's checks again at every statement that inserts into it, and what
 * that costs depends on how a check is written (sql/013_emit_checks_once.sql: a check calling
 * the SQL function herald.valid_topic() costs twice what the same rule written out does), so a
 * baseline checked another way would measure the spelling, not the append path.
 */
const MIRROR_EVENT_CHECKS_SQL = `
  do $$
  declare
    r record;
  begin
    for r in select conname from pg_constraint where conrelid = 'public.plain_events'::regclass and contype = 'c' loop
      execute format('alter table public.plain_events drop constraint %I', r.conname);
    end loop;
    for r in select conname, pg_get_constraintdef(oid) as def from pg_constraint where conrelid = 'herald.events'::regclass and contype = 'c' loop
      execute format('alter table public.plain_events add constraint %I %s', 'plain_' || r.conname, r.def);
    end loop;
  end $$`;

const PRODUCERS = 8;
const DURATION_MS = Number(process.env.BENCH_APPEND_MS ?? 2000);
const REPEATS = Number(process.env.BENCH_APPEND_REPEATS ?? 3);
const BATCH = 100;

type Step = (c: pg.PoolClient, i: number) => Promise<unknown>;

interface Variant {
  name: string;
  events: number;
  step: Step;
}

const one = (i: number) => JSON.stringify([{ topic: `bench:${i % 16}`, type: 't', data: { i } }]);
const many = (i: number) => JSON.stringify(Array.from({ length: BATCH }, (_, j) => ({ topic: `bench:${j % 16}`, type: 't', data: { i, j } })));

/** Each Herald variant with the baseline it is measured against. */
const pairs: { baseline: Variant; herald: Variant }[] = [
  {
    baseline: {
      name: 'baseline: INSERT + NOTIFY (1 statement)',
      events: 1,
      step: (c, i) => c.query(PLAIN_APPEND_SQL, [`bench:${i % 16}`, `{"i":${i}}`]),
    },
    herald: { name: 'herald.append (TS emit)', events: 1, step: (c, i) => c.query('select herald.append($1::jsonb)', [one(i)]) },
  },
  {
    baseline: {
      name: 'baseline: BEGIN; INSERT; NOTIFY; COMMIT',
      events: 1,
      step: async (c, i) => {
        await c.query('begin');
        await c.query(`insert into public.plain_events (topic, type, data) values ($1, 't', $2)`, [`bench:${i % 16}`, `{"i":${i}}`]);
        await c.query(`notify plain`);
        await c.query('commit');
      },
    },
    herald: {
      name: 'herald.emit in a transaction (SQL producers)',
      events: 1,
      step: async (c, i) => {
        await c.query('begin');
        await c.query(`select herald.emit($1, 't', $2)`, [`bench:${i % 16}`, `{"i":${i}}`]);
        await c.query('commit');
      },
    },
  },
  {
    baseline: {
      name: `baseline: INSERT ${BATCH} rows + NOTIFY`,
      events: BATCH,
      step: (c, i) =>
        c.query(
          `with ins as (insert into public.plain_events (topic, type, data)
             select e->>'topic', e->>'type', e->'data' from jsonb_array_elements($1::jsonb) e returning id)
           select pg_notify('plain', '') from (select 1 from ins limit 1) x`,
          [many(i)],
        ),
    },
    herald: { name: `herald.append ${BATCH} events`, events: BATCH, step: (c, i) => c.query('select herald.append($1::jsonb)', [many(i)]) },
  },
];

/** Events per second of `v` from PRODUCERS connections for DURATION_MS. */
async function measure(pool: pg.Pool, v: Variant): Promise<number> {
  let ops = 0;
  const deadline = Date.now() + DURATION_MS;
  await Promise.all(
    Array.from({ length: PRODUCERS }, async (_, p) => {
      const c = await pool.connect();
      try {
        for (let i = p; Date.now() < deadline; i += PRODUCERS) {
          await v.step(c, i);
          ops++;
        }
      } finally {
        c.release();
      }
    }),
  );
  return (ops * v.events) / (DURATION_MS / 1000);
}

const median = (xs: number[]) =>
  percentile(
    [...xs].sort((a, b) => a - b),
    50,
  );

export async function run(): Promise<Row[]> {
  const db = await benchDatabase();
  const pool = createPool(db.url, PRODUCERS, createLogger('silent'));
  try {
    await pool.query(PLAIN_EVENTS_SETUP_SQL);
    await pool.query(MIRROR_EVENT_CHECKS_SQL);
    const samples = pairs.map(() => ({ baseline: [] as number[], herald: [] as number[], ratio: [] as number[] }));
    for (let r = 0; r < REPEATS; r++) {
      for (const [k, pair] of pairs.entries()) {
        const baseline = await measure(pool, pair.baseline);
        const herald = await measure(pool, pair.herald);
        samples[k]!.baseline.push(baseline);
        samples[k]!.herald.push(herald);
        samples[k]!.ratio.push(herald / baseline);
      }
    }
    const rows: Row[] = [];
    for (const [k, pair] of pairs.entries()) {
      const s = samples[k]!;
      rows.push({ variant: pair.baseline.name, 'events/s': Math.round(median(s.baseline)), 'vs baseline': 1 });
      rows.push({ variant: pair.herald.name, 'events/s': Math.round(median(s.herald)), 'vs baseline': median(s.ratio) });
    }
    printTable(
      `Appends: ${PRODUCERS} concurrent producers, ${DURATION_MS} ms per variant, ${REPEATS} repetitions (medians; ratio against the baseline row above it, paired per repetition)`,
      rows,
    );
    console.log();
    const what = (k: number) => `${pairs[k]!.herald.name} ÷ ${pairs[k]!.baseline.name.replace(/^baseline: /, '')}`;
    for (const k of pairs.keys()) console.log(`each repetition: ${what(k)}: ${samples[k]!.ratio.map((x) => x.toFixed(2)).join(', ')}`);
    for (const k of pairs.keys()) console.log(`ratio: ${what(k)} = ${median(samples[k]!.ratio).toFixed(2)}x`);
    return rows;
  } finally {
    await pool.end();
    await db.stop();
  }
}
