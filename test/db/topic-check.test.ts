import { describe, expect, it } from 'vitest';
import { useTestPool } from '../support/db.ts';

const t = useTestPool();

const probes = [
  ...Array.from({ length: 1023 }, (_, i) => `x${String.fromCodePoint(i + 1)}x`),
  '',
  'a',
  ':',
  'a:',
  ':a',
  'a::b',
  'a:b:c',
  'job:42',
  'package:left-pad',
  'UPPER',
  'a b',
  'é',
  'a'.repeat(256),
  'a'.repeat(257),
  `${'a:'.repeat(127)}ab`,
  `${'a:'.repeat(128)}a`,
];

describe('herald.events topic check', () => {
  it('gives herald.valid_topic()’s answer for every probe', async () => {
    const { rows: con } = await t.pool.query<{ expr: string }>(
      `select pg_get_expr(conbin, conrelid) as expr from pg_constraint where conrelid = 'herald.events'::regclass and conname = 'events_topic_check'`,
    );
    expect(con[0]!.expr).not.toMatch(/valid_topic/);
    const { rows } = await t.pool.query<{ topic: string; rule: boolean; check: boolean }>(
      `select p.topic, herald.valid_topic(p.topic) as rule, (${con[0]!.expr}) as check from unnest($1::text[]) as p(topic)`,
      [probes],
    );
    expect(rows).toHaveLength(probes.length);
    expect(rows.filter((r) => r.rule !== r.check)).toEqual([]);
    expect(rows.filter((r) => r.rule).length).toBeGreaterThan(40);
  });

  it('refuses a bad topic written straight into herald.events', async () => {
    await expect(t.pool.query(`insert into herald.events (id, topic, type, data, at) values (-1, '../etc', 'x', 'null', now())`)).rejects.toMatchObject({
      code: '23514',
      constraint: 'events_topic_check',
    });
  });
});
