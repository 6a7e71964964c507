/**
 * The per-object check (src/gateway/authz-function.ts) against a real function in a real
 * database, through the catch-up reads' runner: what it is passed, answers remembered per
 * connection for the TTL (denials too), failures never remembered and never an allow, a
 * statement timeout is `unavailable`, and a connection's memory is bounded.
 */
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPool } from '../../src/db/pool.ts';
import { CatchUpReads } from '../../src/events/catch-up-reads.ts';
import { AuthzFunction, DECISIONS_MAX, TopicDecisions } from '../../src/gateway/authz-function.ts';
import { createLogger } from '../../src/logger.ts';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';

let db: TestDatabase;
let pool: pg.Pool;
let reads: CatchUpReads;
const warnings: unknown[] = [];
const logger = { warn: (obj: unknown) => void warnings.push(obj) };

beforeAll(async () => {
  db = await createTestDatabase();
  pool = createPool(db.url, 2, createLogger('silent'), { statementTimeoutMs: 500 });
  reads = new CatchUpReads({ pool, max: 2, queueMax: 10, timeoutMs: 500, logger: createLogger('silent') });
  await pool.query(`
    create schema app;
    create table app.calls (subject text, claims jsonb, topic text);
    create function app.can_read(subject text, claims jsonb, topic text) returns boolean
    language plpgsql volatile as $$
    begin
      insert into app.calls values ($1, $2, $3);
      if $3 = 'x:boom' then raise exception 'down'; end if;
      if $3 = 'x:slow' then perform pg_sleep(5); end if;
      if $3 = 'x:null' then return null; end if;
      return $3 = 'x:yes';
    end $$;`);
});
afterAll(async () => {
  await pool?.end();
  await db?.drop();
});

async function calls(): Promise<{ subject: string | null; claims: unknown; topic: string }[]> {
  return (await pool.query('select subject, claims, topic from app.calls')).rows;
}

describe('AuthzFunction and TopicDecisions', () => {
  it('passes the subject, its claims and the topic; true allows, false and null deny', async () => {
    const fn = new AuthzFunction('app.can_read', reads, 60_000, logger);
    const claims = { sub: 'alice', herald: { subscribe: [] } };
    expect(await fn.allows({ sub: 'alice', claims }, ['x:yes'], 'k')).toEqual([true]);
    expect(await fn.allows({ sub: null, claims: {} }, ['x:no'], 'k')).toEqual([false]);
    expect(await fn.allows({ sub: 'alice', claims }, ['x:null'], 'k')).toEqual([false]);
    expect(await calls()).toEqual([
      { subject: 'alice', claims, topic: 'x:yes' },
      { subject: null, claims: {}, topic: 'x:no' },
      { subject: 'alice', claims, topic: 'x:null' },
    ]);
    await pool.query('truncate app.calls');
  });

  it('remembers answers, denials too, for the TTL; then asks again', async () => {
    let now = 1_000_000;
    const decisions = new TopicDecisions(new AuthzFunction('app.can_read', reads, 1000, logger), { sub: 'a', claims: {} }, 'k', () => now);
    for (let i = 0; i < 3; i++) expect([await decisions.decide('x:yes'), await decisions.decide('x:no')]).toEqual([true, false]);
    expect((await calls()).map((c) => c.topic)).toEqual(['x:yes', 'x:no']);
    expect([decisions.cached('x:yes'), decisions.cached('x:no'), decisions.cached('x:other')]).toEqual([true, false, undefined]);
    now += 999;
    expect(decisions.cached('x:no')).toBe(false);
    now += 1;
    expect(decisions.cached('x:no')).toBeUndefined();
    expect(await decisions.decide('x:no')).toBe(false);
    expect((await calls()).map((c) => c.topic)).toEqual(['x:yes', 'x:no', 'x:no']);
    await pool.query('truncate app.calls');
  });

  it('a failing call is unavailable (retryable), logged, and not remembered: the next asks again', async () => {
    const decisions = new TopicDecisions(new AuthzFunction('app.can_read', reads, 60_000, logger), { sub: 'a', claims: {} }, 'k');
    warnings.length = 0;
    for (let i = 0; i < 2; i++) await expect(decisions.decide('x:boom')).rejects.toMatchObject({ code: 'HERALD_ERR_UNAVAILABLE', retryable: true });
    expect(decisions.cached('x:boom')).toBeUndefined();
    expect((await calls()).length).toBe(0); // each call's insert rolled back with its error
    expect(warnings).toEqual([
      { err: expect.stringContaining('down'), topic: 'x:boom', topics: 1 },
      { err: expect.stringContaining('down'), topic: 'x:boom', topics: 1 },
    ]);
  });

  it('decideAll asks about every topic not remembered in one call, in order, and remembers each answer', async () => {
    const decisions = new TopicDecisions(new AuthzFunction('app.can_read', reads, 60_000, logger), { sub: 'a', claims: {} }, 'k');
    expect(await decisions.decide('x:yes')).toBe(true);
    const before = (await pool.query<{ n: number }>('select count(*)::int as n from app.calls')).rows[0]!.n;
    const batch = ['x:no', 'x:yes', 'x:null', 'x:no', 'x:other'];
    expect(await decisions.decideAll(batch)).toEqual([false, true, false, false, false]);
    // x:yes was remembered and x:no asked once: three topics, in first-seen order.
    expect((await calls()).slice(before).map((c) => c.topic)).toEqual(['x:no', 'x:null', 'x:other']);
    expect(await decisions.decideAll(batch)).toEqual([false, true, false, false, false]);
    expect((await calls()).length).toBe(before + 3);
    await expect(decisions.decideAll(['x:yes', 'x:boom'])).rejects.toMatchObject({ code: 'HERALD_ERR_UNAVAILABLE' });
    expect(decisions.cached('x:boom')).toBeUndefined();
    await pool.query('truncate app.calls');
  });

  it('a call past the read pool’s statement timeout is unavailable', async () => {
    const fn = new AuthzFunction('app.can_read', reads, 60_000, logger);
    await expect(fn.allows({ sub: 'a', claims: {} }, ['x:slow'], 'k')).rejects.toMatchObject({ code: 'HERALD_ERR_UNAVAILABLE', retryable: true });
  });

  it(`a connection remembers at most ${DECISIONS_MAX} topics, forgetting the oldest first`, async () => {
    // A function that answers without a query: the bound is about memory, not the database.
    const fn = new AuthzFunction('app.can_read', reads, 60_000, logger);
    fn.allows = async (_s, topics) => topics.map((t) => t.endsWith('1'));
    const decisions = new TopicDecisions(fn, { sub: 'a', claims: {} }, 'k');
    for (let i = 0; i <= DECISIONS_MAX; i++) await decisions.decide(`t:${i}`);
    expect([decisions.cached('t:0'), decisions.cached('t:1'), decisions.cached(`t:${DECISIONS_MAX}`)]).toEqual([undefined, true, false]);
  });
});
