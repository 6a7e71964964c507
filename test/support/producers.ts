/**
 * Producers that make ids hard to follow: overlapping transactions that commit out of order,
 * some rolling back, each retried when Postgres goes away mid-transaction. And what a
 * follower must end with: every committed matching event after its start, in id order.
 */
import pg from 'pg';
import { createPool } from '../../src/db/pool.ts';
import type { TopicFilter } from '../../src/events/topic.ts';
import { createLogger } from '../../src/logger.ts';

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** `producers` connections, `rounds` transactions each, over `topics`; one in seven rolls back. */
export async function produce(url: string, producers: number, rounds: number, topics: string[]): Promise<void> {
  const pool = createPool(url, producers, createLogger('silent'));
  try {
    await Promise.all(
      Array.from({ length: producers }, async (_, p) => {
        for (let r = 0; r < rounds; r++) {
          for (;;) {
            const c = await pool.connect().catch(() => null);
            if (!c) {
              await pause(50);
              continue;
            }
            try {
              await c.query('begin');
              await c.query(`select herald.emit($1, 'x', $2)`, [topics[(p + r) % topics.length], JSON.stringify({ p, r })]);
              // Held open a random moment, so that transactions overlap and commit out of id order.
              await pause(Math.random() * 6);
              if ((p + r) % 7 === 3) await c.query('rollback');
              else await c.query('commit');
              c.release();
              break;
            } catch {
              // Postgres went away mid-transaction: nothing committed; try the round again.
              c.release(true);
              await pause(50);
            }
          }
        }
      }),
    );
  } finally {
    await pool.end();
  }
}

/** Every committed event after `start` that `filter` matches, in id order: what a follower must end with. */
export async function committedIds(url: string, filter: TopicFilter, start: number): Promise<number[]> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    const { rows } = await c.query<{ id: string; topic: string }>('select id, topic from herald.events where id > $1 order by id', [start]);
    return rows.filter((r) => filter.matches(r.topic)).map((r) => Number(r.id));
  } finally {
    await c.end();
  }
}
