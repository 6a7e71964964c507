/**
 * The commit trigger of sql/012_emit_fast_path.sql: a transaction's staged events move to
 * herald.events exactly once, in emit order, with consecutive ids, whether the transaction
 * staged one event or thousands, rolled some back to a savepoint, or fired the trigger early.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPool } from '../../src/db/pool.ts';
import { createLogger } from '../../src/logger.ts';
import { createTestDatabase, logHead, type TestDatabase } from '../support/db.ts';

let db: TestDatabase;
let pool: pg.Pool;
let c: pg.Client;

beforeAll(async () => {
  db = await createTestDatabase();
  pool = createPool(db.url, 2, createLogger('silent'));
  c = new pg.Client({ connectionString: db.url });
  await c.connect();
});
afterAll(async () => {
  await c.end();
  await pool.end();
  await db.drop();
});

const head = () => logHead(pool);

/** Events after `after` as [id offset, topic, data]. */
async function since(after: number): Promise<[number, string, string][]> {
  const { rows } = await pool.query<{ id: number; topic: string; data: string }>(
    'select id, topic, data::text as data from herald.events where id > $1 order by id',
    [after],
  );
  return rows.map((r) => [r.id - after, r.topic, r.data]);
}

async function staged(): Promise<number> {
  return (await pool.query('select count(*)::int as n from herald.pending')).rows[0].n;
}

describe('staged events at commit', () => {
  it('a savepoint rolled back takes its events with it; the rest keep their order', async () => {
    const base = await head();
    await c.query('begin');
    await c.query(`select herald.emit('sp:a', 'x', '1')`);
    await c.query('savepoint s');
    await c.query(`select herald.emit_many('[{"topic":"sp:b","type":"x","data":2},{"topic":"sp:c","type":"x","data":3}]')`);
    await c.query('rollback to savepoint s');
    await c.query(`select herald.emit('sp:d', 'x', '4')`);
    await c.query('commit');
    expect(await since(base)).toEqual([
      [1, 'sp:a', '1'],
      [2, 'sp:d', '4'],
    ]);
    expect(await staged()).toBe(0);
  });

  it('SET CONSTRAINTS ALL IMMEDIATE moves each statement’s events at once, still in order', async () => {
    const base = await head();
    await c.query('begin');
    await c.query('set constraints all immediate');
    await c.query(`select herald.emit('im:a', 'x', '1')`);
    await c.query(`select herald.emit_many('[{"topic":"im:b","type":"x","data":2},{"topic":"im:c","type":"x","data":3}]')`);
    await c.query(`select herald.emit('im:d', 'x', '4')`);
    await c.query('commit');
    expect((await since(base)).map(([d, t]) => [d, t])).toEqual([
      [1, 'im:a'],
      [2, 'im:b'],
      [3, 'im:c'],
      [4, 'im:d'],
    ]);
    expect(await staged()).toBe(0);
  });

  it('thousands staged in one transaction, single emits around a batch: consecutive ids in emit order, one `at`', async () => {
    const base = await head();
    await c.query('begin');
    await c.query(`select herald.emit('big:first', 'x', '0')`);
    await c.query(
      `select herald.emit_many((select jsonb_agg(jsonb_build_object('topic', 'big:' || g, 'type', 'x', 'data', g) order by g) from generate_series(1, 3000) g))`,
    );
    await c.query(`select herald.emit('big:last', 'x', '3001')`);
    await c.query('commit');
    const events = await since(base);
    expect(events).toHaveLength(3002);
    expect(events.map(([d]) => d)).toEqual(Array.from({ length: 3002 }, (_, i) => i + 1));
    expect(events.map(([, , data]) => Number(data))).toEqual(Array.from({ length: 3002 }, (_, i) => i));
    const ats = await pool.query('select count(distinct at)::int as n from herald.events where id > $1', [base]);
    expect(ats.rows[0].n).toBe(1);
    expect(await staged()).toBe(0);
  });
});

describe('checks when staging (sql/013_emit_checks_once.sql: emit() checks, herald.pending has no constraints)', () => {
  it('emit and emit_many refuse a bad topic or type with the error the constraints raised, staging nothing', async () => {
    const base = await head();
    await expect(c.query(`select herald.emit('../etc', 'x')`)).rejects.toMatchObject({
      code: '23514',
      message: 'new row for relation "pending" violates check constraint "pending_topic_check"',
      schema: 'herald',
      table: 'pending',
      constraint: 'pending_topic_check',
    });
    await expect(c.query(`select herald.emit('ok:1', '')`)).rejects.toMatchObject({ code: '23514', constraint: 'pending_type_check' });
    await expect(c.query(`select herald.emit('ok:1', repeat('t', 129))`)).rejects.toMatchObject({ code: '23514', constraint: 'pending_type_check' });
    await expect(c.query(`select herald.emit('a'||repeat('b', 256), 't')`)).rejects.toMatchObject({ code: '23514', constraint: 'pending_topic_check' });
    await expect(
      c.query(`select herald.emit_many('[{"topic":"ok:1","type":"x"},{"topic":"Bad","type":"x"},{"topic":"ok:2","type":"x"}]')`),
    ).rejects.toMatchObject({ code: '23514', constraint: 'pending_topic_check' });
    await expect(c.query(`select herald.emit_many('[{"topic":"ok:1","type":"x"},{"topic":"ok:2"}]')`)).rejects.toMatchObject({ code: '23502' });
    await expect(c.query(`select herald.emit(null, 'x')`)).rejects.toMatchObject({ code: '23502' });
    await expect(c.query(`select herald.emit(null, '')`)).rejects.toMatchObject({ code: '23502' });
    expect(await head()).toBe(base);
    expect(await staged()).toBe(0);
  });

  it('a row staged around emit() is still checked, by herald.events, at COMMIT', async () => {
    const base = await head();
    await c.query('begin');
    await c.query(`select herald.emit('ok:a', 'x', '1')`);
    await c.query(`insert into herald.pending (topic, type, data) values ('../etc', 'x', '2')`);
    await expect(c.query('commit')).rejects.toMatchObject({ code: '23514', constraint: 'events_topic_check' });
    expect(await head()).toBe(base);
    expect(await staged()).toBe(0);
  });

  it('good events pass the checks, at the edges of the rules too', async () => {
    const base = await head();
    const longTopic = `${'a:'.repeat(127)}ab`;
    await c.query('begin');
    await c.query(`select herald.emit($1, $2)`, [longTopic, 't'.repeat(128)]);
    await c.query(`select herald.emit_many($1)`, [
      JSON.stringify([
        { topic: 'ok.b-c_d', type: 'é', data: null },
        { topic: 'x', type: 'y' },
      ]),
    ]);
    await c.query('commit');
    // Relative to the first: an aborted commit (the test above) leaves a gap of the ids it drew.
    const events = await since(base);
    expect(events.map(([d, t, data]) => [d - events[0]![0] + 1, t, data])).toEqual([
      [1, longTopic, '{}'],
      [2, 'ok.b-c_d', 'null'],
      [3, 'x', 'null'],
    ]);
  });
});
