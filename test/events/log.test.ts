import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPool } from '../../src/db/pool.ts';
import { HeraldError } from '../../src/errors.ts';
import { EventLog } from '../../src/events/log.ts';
import { TopicFilter } from '../../src/events/topic.ts';
import { createLogger } from '../../src/logger.ts';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';

let db: TestDatabase;
let pool: pg.Pool;
let log: EventLog;

beforeAll(async () => {
  db = await createTestDatabase();
  pool = createPool(db.url, 20, createLogger('silent'));
  log = new EventLog(pool);
});
afterAll(async () => {
  await pool.end();
  await db.drop();
});

async function client(): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: db.url });
  await c.connect();
  return c;
}

async function allEvents(): Promise<{ id: number; topic: string; type: string }[]> {
  const { rows } = await pool.query('select id, topic, type from herald.events order by id');
  return rows;
}

describe('commit-ordered ids', () => {
  it('a plain bigserial loses an event that commits late (the bug this design avoids)', async () => {
    await pool.query('create table public.naive (id bigserial primary key, v text)');
    const a = await client();
    const b = await client();
    await a.query('begin');
    await a.query(`insert into public.naive (v) values ('a')`); // takes id 1
    await b.query(`insert into public.naive (v) values ('b')`); // takes id 2, commits
    const seen1 = (await pool.query('select id from public.naive where id > 0 order by id')).rows.map((r) => r.id);
    await a.query('commit');
    const seen2 = (await pool.query('select id from public.naive where id > $1 order by id', [seen1.at(-1)])).rows.map((r) => r.id);
    expect(seen1).toEqual([2]);
    expect(seen2).toEqual([]); // id 1 is never seen by an `id > last` reader
    await a.end();
    await b.end();
  });

  it('herald.emit assigns ids at commit, so the same interleaving loses nothing', async () => {
    const base = (await log.readHead()).head;
    const a = await client();
    const b = await client();
    await a.query('begin');
    await a.query(`select herald.emit('order:a', 'x', '{"who":"a"}')`); // emitted first…
    await b.query(`select herald.emit('order:b', 'x', '{"who":"b"}')`); // …b commits first
    const first = await log.read(base, TopicFilter.ALL, 100);
    expect(first.events.map((e) => [e.id, e.topic])).toEqual([[base + 1, 'order:b']]);
    await a.query('commit');
    const second = await log.read(first.events[0]!.id, TopicFilter.ALL, 100);
    expect(second.events.map((e) => [e.id, e.topic])).toEqual([[base + 2, 'order:a']]);
    await a.end();
    await b.end();
  });

  it('a rolled-back producer leaves no event and no hole that a reader could wait on', async () => {
    const base = (await log.readHead()).head;
    const a = await client();
    await a.query('begin');
    await a.query(`select herald.emit('rollback:x', 'x')`);
    await a.query('rollback');
    await log.emit({ topic: 'rollback:y', type: 'y' });
    const r = await log.read(base, TopicFilter.ALL, 100);
    expect(r.events.map((e) => e.topic)).toEqual(['rollback:y']);
    expect(r.events[0]!.id).toBe(base + 1);
    await a.end();
  });

  it('emit_many and several emits in one transaction get consecutive ids in emit order with one doorbell', async () => {
    const base = (await log.readHead()).head;
    const listener = await client();
    const notes: string[] = [];
    listener.on('notification', (n) => notes.push(`${n.channel}:${n.payload}`));
    await listener.query('listen herald_events');
    const a = await client();
    await a.query('begin');
    await a.query(`select herald.emit('multi:1', 'x', '1')`);
    await a.query(`select herald.emit_many('[{"topic":"multi:2","type":"x","data":2},{"topic":"multi:3","type":"x"}]')`);
    await a.query(`select herald.emit('multi:4', 'x', '4')`);
    await a.query('commit');
    const r = await log.read(base, TopicFilter.ALL, 100);
    expect(r.events.map((e) => [e.id, e.topic, e.dataJson])).toEqual([
      [base + 1, 'multi:1', '1'],
      [base + 2, 'multi:2', '2'],
      [base + 3, 'multi:3', 'null'],
      [base + 4, 'multi:4', '4'],
    ]);
    // A fence: PostgreSQL delivers notifications in commit order, so once this later one has
    // arrived, every doorbell of the emitting transaction has arrived before it.
    const fenced = new Promise<void>((resolve) => listener.on('notification', (n) => n.payload === 'fence' && resolve()));
    await a.query(`select pg_notify('herald_events', 'fence')`);
    await fenced;
    expect(notes).toEqual(['herald_events:', 'herald_events:fence']);
    const pending = await pool.query('select count(*)::int as n from herald.pending');
    expect(pending.rows[0].n).toBe(0);
    await a.end();
    await listener.end();
  });

  it('REPEATABLE READ producers do not fail with serialization errors', async () => {
    const base = (await log.readHead()).head;
    const a = await client();
    const b = await client();
    await a.query('begin isolation level repeatable read');
    await b.query('begin isolation level repeatable read');
    await a.query(`select herald.emit('rr:a', 'x')`);
    await b.query(`select herald.emit('rr:b', 'x')`);
    await a.query('commit');
    await b.query('commit');
    const r = await log.read(base, TopicFilter.ALL, 10);
    expect(r.events.map((e) => e.topic)).toEqual(['rr:a', 'rr:b']);
    await a.end();
    await b.end();
  });

  it('many overlapping producers that commit late or roll back: an id>last reader sees every committed event once, in order', async () => {
    const base = (await log.readHead()).head;
    const PRODUCERS = 12;
    const ROUNDS = 15;
    const committed = new Set<string>();
    const seen: { id: number; topic: string }[] = [];
    let done = false;
    const reader = (async () => {
      let last = base;
      while (!done || last < (await log.readHead()).head) {
        const r = await log.read(last, TopicFilter.parse(['adv:*']), 50);
        for (const e of r.events) seen.push({ id: e.id, topic: e.topic });
        last = r.covered;
      }
    })();
    await Promise.all(
      Array.from({ length: PRODUCERS }, async (_, p) => {
        const c = await client();
        for (let round = 0; round < ROUNDS; round++) {
          const topic = `adv:${p}:${round}`;
          await c.query('begin');
          await c.query(`select herald.emit($1, 'x', '{}')`, [topic]);
          // Hold the transaction open a random while: others commit in between.
          await new Promise((r) => setTimeout(r, Math.random() * 8));
          if ((p + round) % 5 === 0) await c.query('rollback');
          else {
            await c.query('commit');
            committed.add(topic);
          }
        }
        await c.end();
      }),
    );
    done = true;
    await reader;
    const ids = seen.map((s) => s.id);
    expect(ids).toEqual([...ids].sort((x, y) => x - y));
    expect(new Set(ids).size).toBe(ids.length);
    expect(seen.map((s) => s.topic).sort()).toEqual([...committed].sort());
    expect(seen.length).toBe(PRODUCERS * ROUNDS - (PRODUCERS * ROUNDS) / 5);
  });
});

describe('EventLog', () => {
  it('emitMany returns ids in order and rejects bad topics and types before touching the table', async () => {
    const before = await allEvents();
    const ids = await log.emitMany([
      { topic: 'job:1', type: 'status', data: { s: 'queued' } },
      { topic: 'job:1', type: 'log', data: 'line' },
    ]);
    expect(ids[1]).toBe(ids[0]! + 1);
    for (const bad of [
      { topic: '../x', type: 't' },
      { topic: 'Job:1', type: 't' },
      { topic: 'job:', type: 't' },
      { topic: 'job:*', type: 't' },
      { topic: 'a'.repeat(257), type: 't' },
      { topic: 'ok', type: '' },
    ]) {
      await expect(log.emitMany([bad])).rejects.toMatchObject({ code: 'HERALD_ERR_BAD_REQUEST' });
    }
    const after = await allEvents();
    expect(after.length).toBe(before.length + 2);
  });

  it('the database refuses bad topics from SQL producers too', async () => {
    await expect(pool.query(`select herald.emit('../etc', 'x')`)).rejects.toThrow(/check constraint/);
  });

  it('read filters by exact topic and prefix and reports covered = head on a short page', async () => {
    const base = (await log.readHead()).head;
    await log.emitMany([
      { topic: 'f:a', type: 't' },
      { topic: 'f:b:1', type: 't' },
      { topic: 'g:c', type: 't' },
      { topic: 'f:b:2', type: 't' },
    ]);
    const r = await log.read(base, TopicFilter.parse(['f:a', 'f:b:*']), 10);
    expect(r.events.map((e) => e.topic)).toEqual(['f:a', 'f:b:1', 'f:b:2']);
    expect(r.covered).toBe(base + 4);
    const page = await log.read(base, TopicFilter.ALL, 2);
    expect(page.events.map((e) => e.id)).toEqual([base + 1, base + 2]);
    expect(page.covered).toBe(base + 2);
  });

  it('an event body is valid JSON with the stored data, serialized once', async () => {
    const id = await log.emit({ topic: 'body:1', type: 'weird', data: { s: 'quote " and \\ and \u2028', n: [1, 2.5, null] } });
    const [e] = (await log.read(id - 1, TopicFilter.parse(['body:1']), 1)).events;
    expect(JSON.parse(e!.body)).toEqual({ id, topic: 'body:1', type: 'weird', data: { s: 'quote " and \\ and \u2028', n: [1, 2.5, null] }, at: e!.at });
    expect(JSON.parse(e!.wsFrame.toString())).toMatchObject({ op: 'event', id });
    expect(e!.wsFrame).toBe(e!.wsFrame);
  });

  it('prune by count removes the oldest in batches, records the horizon, and reads before it fail with cursor_expired', async () => {
    const head = (await log.readHead()).head;
    await log.emitMany(Array.from({ length: 30 }, (_, i) => ({ topic: 'prune:x', type: 't', data: i })));
    const removed = await log.prune({ maxAgeMs: 0, maxEvents: 10, batchSize: 7 });
    const after = await log.readHead();
    expect(after.head).toBe(head + 30);
    expect(removed).toBe(head + 20);
    expect(after.oldest).toBe(head + 21);
    expect((await allEvents()).map((e) => e.id)).toEqual(Array.from({ length: 10 }, (_, i) => head + 21 + i));
    const err = await log.read(head + 19, TopicFilter.ALL, 10).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(HeraldError);
    expect((err as HeraldError).toWire()).toMatchObject({ error: { code: 'cursor_expired', oldest: head + 21 } });
    // Reading exactly at the horizon is fine: nothing after it was removed.
    expect((await log.read(head + 20, TopicFilter.ALL, 100)).events.length).toBe(10);
  });

  it('prune by age removes only events older than the cut-off', async () => {
    const before = await log.readHead();
    await log.emitMany([{ topic: 'age:x', type: 't' }]);
    const future = new Date(Date.now() + 60_000);
    expect(await log.prune({ maxAgeMs: 120_000, maxEvents: 0, batchSize: 100 }, future)).toBe(0);
    const stored = (await allEvents()).length;
    const removed = await log.prune({ maxAgeMs: 1_000, maxEvents: 0, batchSize: 100 }, future);
    expect(removed).toBe(stored);
    expect(await allEvents()).toEqual([]);
    const after = await log.readHead();
    expect(after.head).toBe(before.head + 1);
    expect(after.oldest).toBe(after.head + 1);
  });
});
