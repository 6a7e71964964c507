import { describe, expect, it } from 'vitest';
import { logHead, useTestPool } from '../support/db.ts';

const t = useTestPool();

const head = () => logHead(t.pool);

describe('herald.append_rows', () => {
  it('appends in array order with contiguous ids and one `at`; empty arrays append nothing', async () => {
    const before = await head();
    const { rows } = await t.pool.query<{ id: number }>(
      `select herald.append_rows(array['rows:a', 'rows:b', 'rows:a'], array['one', 'two', 'three'], array['{"n":1}'::jsonb, null, '[3]'::jsonb]) as id`,
    );
    expect(rows.map((r) => r.id)).toEqual([before + 1, before + 2, before + 3]);
    const stored = await t.pool.query('select id, topic, type, data, at from herald.events where id > $1 order by id', [before]);
    expect(stored.rows.map((r) => [r.id, r.topic, r.type, r.data])).toEqual([
      [before + 1, 'rows:a', 'one', { n: 1 }],
      [before + 2, 'rows:b', 'two', null],
      [before + 3, 'rows:a', 'three', [3]],
    ]);
    expect(new Set(stored.rows.map((r) => (r.at as Date).getTime())).size).toBe(1);
    expect((await t.pool.query(`select herald.append_rows('{}', '{}', '{}') as id`)).rows).toEqual([]);
    expect((await t.pool.query('select herald.append_rows(null, null, null) as id')).rows).toEqual([]);
    expect(await head()).toBe(before + 3);
  });

  it('arrays of different lengths, or a topic herald.events refuses, fail the statement whole: nothing is appended', async () => {
    const before = await head();
    await expect(t.pool.query(`select herald.append_rows(array['rows:a', 'rows:b'], array['t'], array['1'::jsonb, '2'::jsonb])`)).rejects.toMatchObject({
      code: '22023',
    });
    await expect(t.pool.query(`select herald.append_rows(array['rows:a', '../x'], array['t', 't'], array['1'::jsonb, '2'::jsonb])`)).rejects.toMatchObject({
      code: '23514',
    });
    expect(await head()).toBe(before);
  });
});
