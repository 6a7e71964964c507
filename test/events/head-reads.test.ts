/** Shared head reads: one read for the opens that arrive together, never one that began before the call. */
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPool } from '../../src/db/pool.ts';
import { readSharedHead } from '../../src/events/head-reads.ts';
import { EventLog, type LogHead } from '../../src/events/log.ts';
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

/** The log with its head reads counted; each answer is held until `release()`, after the query ran. */
function heldLog() {
  let release!: () => void;
  let gate = new Promise<void>((r) => (release = r));
  const state = { reads: 0 };
  const held = Object.create(log) as EventLog;
  held.readHead = async () => {
    state.reads++;
    const head = await log.readHead();
    await gate;
    return head;
  };
  return {
    held,
    state,
    release: () => {
      release();
      gate = new Promise<void>((r) => (release = r));
    },
  };
}

describe('readSharedHead', () => {
  it('opens of the same moment share one read; one that comes while it runs gets the next, which sees what was committed before it', async () => {
    const { held, state, release } = heldLog();
    const a = readSharedHead(held);
    const b = readSharedHead(held);
    expect(b).toBe(a);
    // Let the first read run its query (its answer is held back).
    await new Promise((r) => setTimeout(r, 50));
    expect(state.reads).toBe(1);
    const committed = await log.emit({ topic: 'h:x', type: 't' });
    const c = readSharedHead(held);
    expect(c).not.toBe(a);
    release();
    const first: LogHead = await a;
    expect(first.head).toBeLessThan(committed);
    await new Promise((r) => setTimeout(r, 50));
    release();
    expect((await c).head).toBeGreaterThanOrEqual(committed);
    expect(state.reads).toBe(2);
  });

  it('reads one after another: at most 10 at once, then at most 50 a second', async () => {
    const starts: number[] = [];
    const timed = Object.create(log) as EventLog;
    timed.readHead = () => {
      starts.push(performance.now());
      return log.readHead();
    };
    for (let i = 0; i < 20; i++) await readSharedHead(timed);
    expect(starts).toHaveLength(20);
    // Token bucket: any run of reads from i to j fits in the burst plus what the time earned
    // (plus one, for timers that fire up to a millisecond before the time they were set for).
    for (let i = 0; i < starts.length; i++) {
      for (let j = i; j < starts.length; j++) expect(j - i + 1).toBeLessThanOrEqual(10 + ((starts[j]! - starts[i]!) / 1000) * 50 + 1);
    }
    // So the 20 took at least the 10 tokens' worth of time: 200 ms.
    expect(starts[19]! - starts[0]!).toBeGreaterThanOrEqual(180);
  });
});
