/**
 * A chatty job (issue 15): one job writes LINES log lines as fast as it can — its handler
 * keeps WINDOW `log()` calls in flight, as a build job streaming its output would — while
 * another producer appends single events on a connection of its own, paced (one every
 * PACE_MS). Before, every log line was its own commit and its own turn at the event log's id
 * lock, so a chatty job slowed every other producer; now the engine's lines go in one
 * statement per flush (up to HERALD_JOB_BATCH_MAX).
 *
 * Targets: ≥ 30,000 lines/s, and the other producer's append p99 ≤ 25 ms, against the same
 * producer with the chatty job off, measured first in the same run. Afterwards the job's lines
 * are checked: LINES of them, in order, each with its `log` event on `job:<id>`, once.
 *
 * BENCH_CHATTY_LINES sets the line count (default 100,000); BENCH_CHATTY_BATCH_MAX the engine's
 * HERALD_JOB_BATCH_MAX (default: Herald's).
 */
import type pg from 'pg';
import { loadConfig } from '../src/config.ts';
import { createPool } from '../src/db/pool.ts';
import { startHerald } from '../src/herald.ts';
import type { JobContext } from '../src/jobs/worker-pool.ts';
import { createLogger } from '../src/logger.ts';
import { benchDatabase, percentile, printTable, type Row } from './support.ts';

const LINES = Number(process.env.BENCH_CHATTY_LINES ?? 100_000);
/** HERALD_JOB_BATCH_MAX for the run (default: Herald's default). */
const BATCH_MAX = process.env.BENCH_CHATTY_BATCH_MAX ? Number(process.env.BENCH_CHATTY_BATCH_MAX) : undefined;
/** Log lines the handler keeps in flight (awaiting the oldest beyond it): memory stays bounded. */
const WINDOW = 2_000;
const PACE_MS = 5;
const QUIET_MS = 3_000;
const TARGET_LINES_PER_S = 30_000;
const TARGET_P99_MS = 25;

/** The other producer: one single-event herald.append every PACE_MS until `stop()`; each append's round trip. */
function producer(pool: pg.Pool): { stop: () => Promise<number[]> } {
  const ms: number[] = [];
  let running = true;
  const done = (async () => {
    const c = await pool.connect();
    try {
      for (let i = 0; running; i++) {
        const t0 = performance.now();
        await c.query({ name: 'bench-other', text: 'select herald.append($1::jsonb)', values: [`[{"topic":"bench:other","type":"t","data":{"i":${i}}}]`] });
        const t1 = performance.now();
        ms.push(t1 - t0);
        const wait = PACE_MS - (t1 - t0);
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      }
    } finally {
      c.release();
    }
  })();
  return {
    stop: async () => {
      running = false;
      await done;
      return ms;
    },
  };
}

/** Writes LINES lines with up to WINDOW in flight; resolves when the last is written. */
async function chatter(jc: JobContext): Promise<void> {
  const inFlight: Promise<void>[] = [];
  for (let i = 0; i < LINES; i++) {
    if (inFlight.length >= WINDOW) await inFlight.shift();
    inFlight.push(jc.log('info', `line ${i}: compiling module ${i % 977} of the chatty job`));
  }
  await Promise.all(inFlight);
}

export async function run(): Promise<Row[]> {
  const db = await benchDatabase();
  const pool = createPool(db.url, 4, createLogger('silent'));
  let started = 0;
  let wrote = 0;
  let resolveDone: () => void = () => undefined;
  const done = new Promise<void>((r) => (resolveDone = r));
  const h = await startHerald(
    loadConfig(
      { port: 0, host: '127.0.0.1', databaseUrl: db.url, logLevel: 'warn', workers: 1, retentionMaxAgeMs: 0, ...(BATCH_MAX ? { jobBatchMax: BATCH_MAX } : {}) },
      {},
    ),
    {
      skipMigrations: true,
      logger: createLogger('warn'),
      handlers: {
        chatty: {
          async run(_job, jc) {
            started = performance.now();
            await chatter(jc);
            wrote = performance.now();
            resolveDone();
          },
        },
      },
    },
  );
  try {
    // The other producer alone.
    const quiet = producer(pool);
    await new Promise((r) => setTimeout(r, QUIET_MS));
    const off = (await quiet.stop()).sort((a, b) => a - b);

    // The same producer while the chatty job runs.
    const busy = producer(pool);
    const { job } = await h.jobs.submit({ type: 'chatty', payload: {}, maxAttempts: 1 });
    await done;
    const on = (await busy.stop()).sort((a, b) => a - b);
    const linesPerS = LINES / ((wrote - started) / 1000);

    // Every line once, in order, each with its event, in the same order.
    const { rows } = await pool.query<{ lines: number; ordered: boolean; events: number; same: boolean }>(
      `with l as (select id, message, row_number() over (order by id) - 1 as n from herald.job_logs where job_id = $1),
            e as (select (data->>'id')::bigint as line_id, row_number() over (order by id) - 1 as n from herald.events where topic = 'job:' || $1 and type = 'log')
       select (select count(*) from l)::int as lines,
              (select bool_and(message like 'line ' || n || ':%') from l) as ordered,
              (select count(*) from e)::int as events,
              (select bool_and(e.line_id = l.id) from e join l using (n)) as same`,
      [job.id],
    );
    const check = rows[0]!;
    const intact = check.lines === LINES && check.ordered && check.events === LINES && check.same;

    const row = (name: string, ms: number[], extra: Partial<Row> = {}): Row => ({
      'other producer': name,
      appends: ms.length,
      'p50 ms': Number(percentile(ms, 50).toFixed(2)),
      'p99 ms': Number(percentile(ms, 99).toFixed(2)),
      'max ms': Number(ms.at(-1)!.toFixed(2)),
      'chatty lines/s': '',
      ...extra,
    });
    const result = [
      row('alone (chatty job off)', off),
      row(`with the chatty job (${LINES} lines, ${WINDOW} in flight)`, on, { 'chatty lines/s': Math.round(linesPerS) }),
    ];
    printTable(`Chatty job: ${LINES} log lines from one job; another producer appends one event every ${PACE_MS} ms`, result);
    console.log(
      `\nlines: ${intact ? `${LINES} written once each, in order, each with its log event in the same order` : `NOT INTACT: ${JSON.stringify(check)}`}`,
    );
    console.log(`chatty job: lines/s = ${Math.round(linesPerS)} (target ≥ ${TARGET_LINES_PER_S})`);
    console.log(
      `chatty job: other producer append p99 = ${percentile(on, 99).toFixed(1)} ms with it, ${percentile(off, 99).toFixed(1)} ms without (target ≤ ${TARGET_P99_MS} ms)`,
    );
    return result;
  } finally {
    await h.close();
    await pool.end();
    await db.stop();
  }
}
