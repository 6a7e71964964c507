/**
 * Append throughput: Herald's commit-ordered append against plain INSERT + NOTIFY (the
 * baseline, same database, same run). 8 concurrent producers, single events and batches.
 */
import type pg from 'pg';
import { createPool } from '../src/db/pool.ts';
import { createLogger } from '../src/logger.ts';
import { benchDatabase, printTable, type Row } from './support.ts';

const PRODUCERS = 8;
const DURATION_MS = Number(process.env.BENCH_APPEND_MS ?? 4000);
const BATCH = 100;

// The same shape as herald.events (topic check, (topic, id) index), so the ratio measures
// the commit-ordering mechanism, not the schema.
const SETUP = `
  create table if not exists public.plain_events (
    id bigserial primary key,
    topic text not null check (herald.valid_topic(topic)),
    type text not null check (octet_length(type) between 1 and 128),
    data jsonb not null,
    at timestamptz not null default now()
  );
  create index if not exists plain_events_topic_id_idx on public.plain_events (topic, id)`;

type Step = (c: pg.PoolClient, i: number) => Promise<unknown>;

const one = (i: number) => JSON.stringify([{ topic: `bench:${i % 16}`, type: 't', data: { i } }]);
const many = (i: number) => JSON.stringify(Array.from({ length: BATCH }, (_, j) => ({ topic: `bench:${j % 16}`, type: 't', data: { i, j } })));

const variants: { name: string; events: number; step: Step }[] = [
  {
    name: 'baseline: INSERT + NOTIFY (1 statement)',
    events: 1,
    step: (c, i) =>
      c.query(`with ins as (insert into public.plain_events (topic, type, data) values ($1, 't', $2) returning id) select pg_notify('plain', '') from ins`, [
        `bench:${i % 16}`,
        `{"i":${i}}`,
      ]),
  },
  { name: 'herald.append (TS emit)', events: 1, step: (c, i) => c.query('select herald.append($1::jsonb)', [one(i)]) },
  {
    name: 'baseline: BEGIN; INSERT; NOTIFY; COMMIT',
    events: 1,
    step: async (c, i) => {
      await c.query('begin');
      await c.query(`insert into public.plain_events (topic, type, data) values ($1, 't', $2)`, [`bench:${i % 16}`, `{"i":${i}}`]);
      await c.query(`notify plain`);
      await c.query('commit');
    },
  },
  {
    name: 'herald.emit in a transaction (SQL producers)',
    events: 1,
    step: async (c, i) => {
      await c.query('begin');
      await c.query(`select herald.emit($1, 't', $2)`, [`bench:${i % 16}`, `{"i":${i}}`]);
      await c.query('commit');
    },
  },
  {
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
  { name: `herald.append ${BATCH} events`, events: BATCH, step: (c, i) => c.query('select herald.append($1::jsonb)', [many(i)]) },
];

async function measure(pool: pg.Pool, step: Step): Promise<number> {
  let ops = 0;
  const deadline = Date.now() + DURATION_MS;
  await Promise.all(
    Array.from({ length: PRODUCERS }, async (_, p) => {
      const c = await pool.connect();
      try {
        for (let i = p; Date.now() < deadline; i += PRODUCERS) {
          await step(c, i);
          ops++;
        }
      } finally {
        c.release();
      }
    }),
  );
  return ops / (DURATION_MS / 1000);
}

export async function run(): Promise<Row[]> {
  const db = await benchDatabase();
  const pool = createPool(db.url, PRODUCERS, createLogger('silent'));
  try {
    await pool.query(SETUP);
    const rows: Row[] = [];
    let baseline = 0;
    for (const v of variants) {
      const opsPerS = await measure(pool, v.step);
      const eventsPerS = opsPerS * v.events;
      if (v.name.startsWith('baseline')) baseline = eventsPerS;
      rows.push({ variant: v.name, 'events/s': Math.round(eventsPerS), 'vs baseline': v.name.startsWith('baseline') ? 1 : eventsPerS / baseline });
    }
    printTable(`Appends: ${PRODUCERS} concurrent producers, ${DURATION_MS} ms each (ratio against the baseline row above it)`, rows);
    return rows;
  } finally {
    await pool.end();
    await db.stop();
  }
}
