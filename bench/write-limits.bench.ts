/**
 * What bounds the write path on this machine (issue 15): two experiments, run by name only
 * (`npm run bench write-limits`), not by `npm run bench`.
 *
 * 1. **Flushes that overlap.** Every event-bearing commit holds Herald's id lock across its
 *    WAL flush (sql/001_events.sql), so the group append has one flush in flight at a time and
 *    8 callers that each wait for their answer split into two halves: one in the flush, one
 *    gathering for the next. Would the 8-caller ratio double if flushes could overlap? This
 *    builds the design that would let them, in a schema of its own (`bench_lockfree`, not
 *    Herald's): ids from a sequence with no lock; each writer first takes a *shared*
 *    transaction-level advisory lock keyed by the sequence's last value (a floor below every id
 *    it will take), so no writer waits for another; no NOTIFY in the data commit (NOTIFY's own
 *    lock would serialize the commits again), and a doorbell rung after it with
 *    `synchronous_commit = off`; a reader that stops below the lowest floor still held
 *    (pg_locks), reading the sequence before the locks and the rows in a later statement. The
 *    same group commit as the Appender then runs 1, 2 or 4 flushes at once. A Listener-like
 *    reader follows it on every doorbell, and at the end every id must have been delivered
 *    once, in order.
 * 2. **Submissions alone.** The jobs target compares jobs/s with graphile-worker; both submit
 *    one notifying commit per job from 4 connections. Here the submissions run with no worker:
 *    `herald.submit_job`, JobStore.submit (concurrent submissions in one statement), and
 *    graphile-worker's `add_job`, against bare INSERT + NOTIFY.
 *
 * Each system runs BENCH_LIMITS_REPEATS rounds (default 3) of BENCH_LIMITS_MS windows (default
 * 2000 ms after a 300 ms warm-up), in an order that turns each round; a rate is the median of its
 * rounds. The CPU column is the whole machine's, all cores, over the window.
 */
import os from 'node:os';
import pg from 'pg';
import { makeWorkerUtils } from 'graphile-worker';
import { defaults, loadConfig } from '../src/config.ts';
import { createPool } from '../src/db/pool.ts';
import { GroupCommit } from '../src/group-commit.ts';
import { startHerald } from '../src/herald.ts';
import { createLogger } from '../src/logger.ts';
import { benchDatabase, inProcessAppender, PLAIN_APPEND_SQL, PLAIN_EVENTS_SETUP_SQL, percentile, printTable, type Row } from './support.ts';

const WINDOW_MS = Number(process.env.BENCH_LIMITS_MS ?? 2000);
const REPEATS = Number(process.env.BENCH_LIMITS_REPEATS ?? 3);
const WARMUP_MS = 300;
const CALLERS = 8;
const SUBMITTERS = 4;
/** The experiment's advisory-lock class, in the top 16 bits of a key whose low 48 hold the floor. */
const FLOOR_CLASS = 0x6866n;
const FLOOR_MASK = (1n << 48n) - 1n;

const LOCK_FREE_SQL = `
  drop schema if exists bench_lockfree cascade;
  create schema bench_lockfree;
  create sequence bench_lockfree.ids as bigint cache 1;
  create table bench_lockfree.events (like herald.events including all);
  -- A writer: its floor first (no id it takes can be below the sequence's value now), then ids.
  create function bench_lockfree.append(events jsonb) returns setof bigint language plpgsql as $$
  declare
    floor bigint;
  begin
    select last_value into floor from bench_lockfree.ids;
    perform pg_advisory_xact_lock_shared(${FLOOR_CLASS << 48n} | floor);
    return query insert into bench_lockfree.events (id, topic, type, data, at)
      select nextval('bench_lockfree.ids'), s.topic, s.type, s.data, clock_timestamp()
      from (select e->>'topic' as topic, e->>'type' as type, coalesce(e->'data', 'null'::jsonb) as data
            from jsonb_array_elements(events) with ordinality as t(e, ord) order by ord) s
      returning id;
  end $$;
  -- A reader: the sequence, then the floors held, then (a later statement, a later snapshot)
  -- the rows up to the lower of the two. One row with a null id when there is nothing to read.
  create function bench_lockfree.read(head bigint, lim int) returns table (id bigint, safe bigint) language plpgsql as $$
  declare
    seq_last bigint;
    low bigint;
    safe bigint;
  begin
    select last_value into seq_last from bench_lockfree.ids;
    select min(((l.classid::bigint << 32) | l.objid::bigint) & ${FLOOR_MASK}) into low
      from pg_locks l
      where l.locktype = 'advisory' and l.objsubid = 1 and (l.classid::bigint >> 16) = ${FLOOR_CLASS}
        and l.database = (select oid from pg_database where datname = current_database());
    safe := case when low is null then seq_last else least(seq_last, low - 1) end;
    return query select e.id, safe from bench_lockfree.events e where e.id > head and e.id <= safe order by e.id limit lim;
    if not found then
      return query select null::bigint, safe;
    end if;
  end $$;`;

/** The machine's busy share of all its cores since the call, when the returned function is called. */
function cpuSample(): () => number {
  const read = () =>
    os.cpus().reduce((sum, { times: t }) => ({ idle: sum.idle + t.idle, total: sum.total + t.user + t.nice + t.sys + t.idle + t.irq }), { idle: 0, total: 0 });
  const from = read();
  return () => {
    const to = read();
    return 1 - (to.idle - from.idle) / Math.max(1, to.total - from.total);
  };
}

interface Window {
  perS: number;
  ms: number[];
  cpu: number;
}

/** Runs `step(caller)` in a loop per caller; counts what ends inside the measured window. */
async function drive(callers: number, step: (c: number) => Promise<unknown>): Promise<Window> {
  const start = performance.now() + WARMUP_MS;
  const end = start + WINDOW_MS;
  let busy = cpuSample();
  const warm = setTimeout(() => {
    busy = cpuSample();
  }, WARMUP_MS);
  let n = 0;
  const ms: number[] = [];
  await Promise.all(
    Array.from({ length: callers }, async (_, c) => {
      while (performance.now() < end) {
        const t0 = performance.now();
        await step(c);
        const t1 = performance.now();
        if (t0 >= start && t1 <= end) {
          n++;
          ms.push(t1 - t0);
        }
      }
    }),
  );
  clearTimeout(warm);
  return { perS: n / (WINDOW_MS / 1000), ms, cpu: busy() };
}

/** Runs every system REPEATS rounds, turning the order each round; rows of medians, with ratios to `base`. */
async function rounds(systems: [string, (c: number) => Promise<unknown>][], callers: number, base: string): Promise<Row[]> {
  const windows = new Map<string, Window[]>(systems.map(([name]) => [name, []]));
  for (let r = 0; r < REPEATS; r++) {
    for (const [name, step] of r % 2 === 0 ? systems : [...systems].reverse()) windows.get(name)!.push(await drive(callers, step));
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const baseRate = median(windows.get(base)!.map((w) => w.perS));
  return systems.map(([name]) => {
    const ws = windows.get(name)!;
    const ms = ws.flatMap((w) => w.ms).sort((a, b) => a - b);
    const rate = median(ws.map((w) => w.perS));
    return {
      system: name,
      'per s (median)': Math.round(rate),
      'each round': ws.map((w) => Math.round(w.perS)).join(' '),
      'p50 ms': percentile(ms, 50),
      'p99 ms': percentile(ms, 99),
      [`CPU, ${os.cpus().length} cores`]: `${Math.round(median(ws.map((w) => w.cpu)) * 100)}%`,
      [`÷ ${base}`]: rate / baseRate,
    };
  });
}

/** The lock-free log's reader: on every doorbell, reads id > head up to the safe head, checking order. */
async function lockFreeReader(url: string) {
  const listen = new pg.Client({ connectionString: url });
  const read = new pg.Client({ connectionString: url });
  const ring = new pg.Client({ connectionString: url });
  await Promise.all([listen.connect(), read.connect(), ring.connect()]);
  await ring.query('set synchronous_commit = off');
  let head = 0;
  let delivered = 0;
  let disorder = 0;
  let reading: Promise<void> | null = null;
  let readAgain = false;
  const readAll = async () => {
    do {
      readAgain = false;
      for (;;) {
        const { rows } = await read.query<{ id: string | null; safe: string }>({
          name: 'lockfree-read',
          text: 'select id, safe from bench_lockfree.read($1, 1000)',
          values: [head],
        });
        let got = 0;
        for (const r of rows) {
          if (r.id === null) continue;
          const id = Number(r.id);
          if (id <= head) disorder++;
          head = id;
          delivered++;
          got++;
        }
        if (got < 1000) break;
      }
    } while (readAgain);
    reading = null;
  };
  const doorbell = () => {
    if (reading) readAgain = true;
    else reading = readAll();
  };
  listen.on('notification', doorbell);
  await listen.query('listen bench_lockfree');
  // One ring in flight; what commits meanwhile shares the next.
  let ringing: Promise<void> | null = null;
  let ringAgain = false;
  const ringAll = async () => {
    do {
      ringAgain = false;
      await ring.query({ name: 'lockfree-ring', text: "select pg_notify('bench_lockfree', '')" });
    } while (ringAgain);
    ringing = null;
  };
  return {
    ring: () => {
      if (ringing) ringAgain = true;
      else ringing = ringAll();
    },
    /** Reads to the end, then what was delivered against the table. */
    async check(pool: pg.Pool): Promise<{ delivered: number; stored: number; inOrder: boolean }> {
      while (reading || ringing) await (reading ?? ringing);
      await readAll();
      const { rows } = await pool.query<{ n: number; max: string | null }>('select count(*)::int as n, max(id) as max from bench_lockfree.events');
      return { delivered, stored: rows[0]!.n, inOrder: disorder === 0 && delivered === rows[0]!.n && head === Number(rows[0]!.max ?? 0) };
    },
    async close() {
      await Promise.all([listen.end(), read.end(), ring.end()]);
    },
  };
}

export async function run(): Promise<Row[]> {
  const db = await benchDatabase();
  const log = createLogger('silent');
  const pool = createPool(db.url, CALLERS + 2, log);
  const closers: (() => Promise<unknown>)[] = [];
  try {
    await pool.query(PLAIN_EVENTS_SETUP_SQL);
    await pool.query(LOCK_FREE_SQL);

    // 1. Flushes that overlap.
    const reader = await lockFreeReader(db.url);
    closers.push(() => reader.close());
    const inProcess = inProcessAppender(db.url);
    closers.push(() => inProcess.close());
    const { appender } = inProcess;
    const lockFree = (flushes: number) => {
      const flushPool = createPool(db.url, flushes, log);
      closers.push(() => flushPool.end());
      return new GroupCommit<string, number>({
        maxItems: defaults.appendBatchMaxEvents,
        maxFlushes: flushes,
        write: async (items) => {
          const { rows } = await flushPool.query<{ id: string }>({
            name: 'lockfree-append',
            text: 'select bench_lockfree.append($1::jsonb) as id',
            values: [`[${items.join(',')}]`],
          });
          reader.ring();
          return rows.map((r) => Number(r.id)).sort((a, b) => a - b);
        },
      });
    };
    let seq = 0;
    const event = (c: number) => `{"topic":"limits:${c}","type":"t","data":{"i":${seq++}}}`;
    const overlap: [string, (c: number) => Promise<unknown>][] = [
      ['INSERT + NOTIFY, a connection each', (c) => pool.query(PLAIN_APPEND_SQL, [`plain:${c}`, `{"i":${seq++}}`])],
      ["Herald's group append (id lock across the flush)", (c) => appender.emit({ topic: `limits:${c}`, type: 't', data: { i: seq++ } })],
      ...[1, 2, 4].map((k): [string, (c: number) => Promise<unknown>] => {
        const commits = lockFree(k);
        return [`no id lock, ${k} flush${k > 1 ? 'es' : ''} in flight`, (c) => commits.push(event(c))];
      }),
    ];
    const overlapRows = await rounds(overlap, CALLERS, 'INSERT + NOTIFY, a connection each');
    const check = await reader.check(pool);
    printTable(`Flushes that overlap: ${CALLERS} callers in this process, each waiting for its answer; ${REPEATS} rounds of ${WINDOW_MS} ms`, overlapRows);
    console.log(
      `\nlock-free reader: ${check.delivered} of ${check.stored} events delivered, ${check.inOrder ? 'each once, in id order' : 'NOT each once in order'}`,
    );

    // 2. Submissions alone.
    const utils = await makeWorkerUtils({ connectionString: db.url });
    closers.push(async () => utils.release());
    await utils.migrate();
    const h = await startHerald(
      loadConfig({ port: 0, host: '127.0.0.1', databaseUrl: db.url, logLevel: 'warn', workers: 0, retentionMaxAgeMs: 0, exporter: false }, {}),
      { skipMigrations: true, logger: createLogger('warn') },
    );
    closers.push(() => h.close());
    const submitPool = createPool(db.url, SUBMITTERS, log);
    closers.push(() => submitPool.end());
    const payload = () => JSON.stringify({ i: seq++ });
    const submissions: [string, (c: number) => Promise<unknown>][] = [
      ['INSERT + NOTIFY, a connection each', (c) => submitPool.query(PLAIN_APPEND_SQL, [`plain:${c}`, payload()])],
      ['herald.submit_job (SQL)', () => submitPool.query('select herald.submit_job($1, $2::jsonb)', ['limits', payload()])],
      ['JobStore.submit (as the API)', () => h.jobs.submit({ type: 'limits', payload: { i: seq++ }, maxAttempts: 3 })],
      ['graphile-worker 0.17 add_job', () => submitPool.query('select graphile_worker.add_job($1, $2::json)', ['limits', payload()])],
    ];
    const submitRows = await rounds(submissions, SUBMITTERS, 'INSERT + NOTIFY, a connection each');
    printTable(`Submissions alone: ${SUBMITTERS} submitters, no worker running; ${REPEATS} rounds of ${WINDOW_MS} ms`, submitRows);
    console.log('');
    for (const r of [...overlapRows, ...submitRows].slice(1)) {
      if (r.system === submitRows[0]!.system) continue;
      console.log(`ratio: ${r.system} ÷ INSERT+NOTIFY = ${(r['÷ INSERT + NOTIFY, a connection each'] as number).toFixed(2)}x (no target)`);
    }
    return [...overlapRows, ...submitRows];
  } finally {
    for (const close of closers.reverse()) await close();
    await pool.end();
    await db.stop();
  }
}
