/**
 * The group append (src/events/appender.ts) against a real PostgreSQL. A flush is held in
 * flight by taking the id lock (sql/001_events.sql) in a transaction of the test's own: the
 * flush's backend then waits on it, which pg_stat_activity shows, and callers that arrive
 * meanwhile gather into the next batch. Faults strike while a flush waits there: its
 * backend killed, or PostgreSQL restarted. Every caller must then get its ids or an error,
 * every acknowledged id must hold exactly its event, once, and a failed batch no row at all.
 */
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { createPool } from '../../src/db/pool.ts';
import type { HeraldError } from '../../src/errors.ts';
import { Appender, type AppenderOptions } from '../../src/events/appender.ts';
import { createLogger } from '../../src/logger.ts';
import { startPrivateCluster } from '../support/cluster.ts';
import { createTestDatabase } from '../support/db.ts';
import { until } from '../support/herald.ts';

const cleanups: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
});

/** The id lock's key (herald.lock_ids() in sql/001_events.sql). */
const ID_LOCK_KEY = '114784919972964';
const silent = createLogger('silent');
let apps = 0;

/** An Appender on a pool of its own, named so the test can find its backend. */
function startAppender(url: string, opts: Partial<Omit<AppenderOptions, 'pool'>> = {}) {
  const app = `herald-append-test-${++apps}`;
  const maxFlushes = opts.maxFlushes ?? 1;
  const pool = createPool(url, maxFlushes, silent, { applicationName: app });
  const appender = new Appender({
    pool,
    maxBatchEvents: 1000,
    maxBatchBytes: 1024 * 1024,
    maxQueueEvents: 10_000,
    maxQueueBytes: 16 * 1024 * 1024,
    maxFlushes,
    ...opts,
  });
  cleanups.push(async () => {
    await appender.close();
    await pool.end();
  });
  return { appender, app };
}

/** A connection of the test's own (errors ignored: some tests restart the server under it). */
async function connect(url: string): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: url });
  c.on('error', () => undefined);
  await c.connect();
  cleanups.push(() => c.end());
  return c;
}

/** Takes the id lock in an open transaction; every append waits until release(). */
async function holdIdLock(url: string) {
  const c = await connect(url);
  await c.query('begin');
  await c.query(`select pg_advisory_xact_lock(${ID_LOCK_KEY})`);
  return { client: c, release: () => c.query('commit') };
}

/** Resolves once `app`'s backend waits on the id lock: its flush is in flight. */
async function flushWaitsOnLock(admin: pg.Client, app: string): Promise<void> {
  await until(
    async () =>
      (await admin.query(`select 1 from pg_stat_activity where application_name = $1 and wait_event_type = 'Lock' and wait_event = 'advisory'`, [app]))
        .rowCount === 1,
    10_000,
    `${app} to wait on the id lock`,
  );
}

/** A database of its own, a connection to watch it, and an Appender on it. */
async function onNewDatabase(opts: Partial<Omit<AppenderOptions, 'pool'>> = {}) {
  const db = await createTestDatabase();
  cleanups.push(db.drop);
  const admin = await connect(db.url);
  return { url: db.url, admin, ...startAppender(db.url, opts) };
}

/** Holds the id lock, starts `first` and resolves once its flush waits on the lock. */
async function inFlight<T>(t: { url: string; admin: pg.Client; app: string }, first: () => T) {
  const lock = await holdIdLock(t.url);
  const started = first();
  await flushWaitsOnLock(t.admin, t.app);
  return { first: started, release: lock.release };
}

/** Settles every promise: its ids or its error. */
type Outcome = { ok: true; ids: number[] } | { ok: false; err: unknown };
const settle = (p: Promise<number[]>): Promise<Outcome> =>
  p.then(
    (ids) => ({ ok: true as const, ids }),
    (err: unknown) => ({ ok: false as const, err }),
  );

/** Callers of `appender` on `topic`, each of `n` events, remembered in call order with their outcomes. */
function callers(appender: Appender, topic: string) {
  const sizes: number[] = [];
  const calls: Promise<Outcome>[] = [];
  const call = (n: number) => {
    sizes.push(n);
    calls.push(settle(appender.emitMany(eventsOf(topic, calls.length, n))));
  };
  return { sizes, calls, call };
}

/** Caller `c`'s `n` events: `data` names the caller and the event, so every row says whose it is. */
const eventsOf = (topic: string, c: number, n: number) => Array.from({ length: n }, (_, e) => ({ topic, type: 't', data: { c, e } }));

/** Every row on `topic`, in id order. */
async function rowsOf(c: pg.Client, topic: string): Promise<{ id: number; data: { c: number; e: number } }[]> {
  const { rows } = await c.query<{ id: string; data: { c: number; e: number } }>('select id, data from herald.events where topic = $1 order by id', [topic]);
  return rows.map((r) => ({ id: Number(r.id), data: r.data }));
}

/**
 * The fault invariant: every acknowledged id holds its caller's event, in the caller's order,
 * exactly once; a caller that got an error has no row; no other row exists.
 */
async function expectExactlyAcknowledged(c: pg.Client, topic: string, outcomes: readonly Outcome[], sizes: readonly number[]): Promise<void> {
  const expected: { id: number; data: { c: number; e: number } }[] = [];
  for (const [i, o] of outcomes.entries()) {
    if (o.ok) for (const [e, id] of o.ids.entries()) expected.push({ id, data: { c: i, e } });
  }
  expected.sort((a, b) => a.id - b.id);
  expect(await rowsOf(c, topic)).toEqual(expected);
  outcomes.forEach((o, i) => {
    if (o.ok) expect(o.ids).toHaveLength(sizes[i]!);
  });
}

describe('Appender: one statement per flush, ids split back per caller', () => {
  it('callers that arrive while a flush is in flight share the next one: disjoint, contiguous ids in the order they called', async () => {
    const t = await onNewDatabase();
    const { admin, appender } = t;
    const { first, release } = await inFlight(t, () => appender.emitMany(eventsOf('group:a', 0, 2)));
    // 40 callers of 1–3 events each, all while the first flush waits.
    const sizes = [2, ...Array.from({ length: 40 }, (_, i) => 1 + (i % 3))];
    const rest = sizes.slice(1).map((n, i) => appender.emitMany(eventsOf('group:a', i + 1, n)));
    expect(appender.waitingEvents).toBe(sizes.slice(1).reduce((a, b) => a + b, 0));
    await release();
    const ids = await Promise.all([first, ...rest]);

    // Two flushes: the first caller alone, then everyone who gathered behind it.
    expect(appender.flushes).toBe(2);
    const start = ids[0]![0]!;
    let next = start;
    ids.forEach((got, i) => {
      expect(got).toEqual(Array.from({ length: sizes[i]! }, (_, e) => next + e));
      next += sizes[i]!;
    });
    await expectExactlyAcknowledged(
      admin,
      'group:a',
      ids.map((got) => ({ ok: true, ids: got })),
      sizes,
    );
  });

  it('with no flush in flight the first caller goes at once; many concurrent callers all get increasing, disjoint ids', async () => {
    const t = await onNewDatabase({ maxBatchEvents: 7 });
    const { admin, appender } = t;
    // 300 callers at once: batches of at most 7 events; no caller is split across two.
    const sizes = Array.from({ length: 300 }, (_, i) => 1 + (i % 4));
    const outcomes = await Promise.all(sizes.map((n, i) => settle(appender.emitMany(eventsOf('group:b', i, n)))));
    expect(outcomes.every((o) => o.ok)).toBe(true);
    const ids = outcomes.map((o) => (o.ok ? o.ids : []));
    // In call order: each caller's block starts right after the previous caller's.
    for (let i = 1; i < ids.length; i++) expect(ids[i]![0]).toBe(ids[i - 1]!.at(-1)! + 1);
    for (const got of ids) expect(got).toEqual(Array.from({ length: got.length }, (_, e) => got[0]! + e));
    expect(appender.flushes).toBeGreaterThanOrEqual(Math.ceil(sizes.reduce((a, b) => a + b, 0) / 7));
    await expectExactlyAcknowledged(admin, 'group:b', outcomes, sizes);
  });

  it('emit() returns one id; emitManyJson stores each data as the text sent, digits and all', async () => {
    const t = await onNewDatabase();
    const { admin, appender } = t;
    const [id, json] = await Promise.all([
      appender.emit({ topic: 'group:c', type: 'one', data: { n: 1 } }),
      appender.emitManyJson([
        { topic: 'group:c', type: 'big', dataJson: '12345678901234567890' },
        { topic: 'group:c', type: 'none', dataJson: 'null' },
      ]),
    ]);
    expect(json).toEqual([id + 1, id + 2]);
    const { rows } = await admin.query('select id::int, type, data::text from herald.events where topic = $1 order by id', ['group:c']);
    expect(rows).toEqual([
      { id, type: 'one', data: '{"n": 1}' },
      { id: id + 1, type: 'big', data: '12345678901234567890' },
      { id: id + 2, type: 'none', data: 'null' },
    ]);
  });
});

describe('Appender: one bad event fails only its caller', () => {
  it('checked before batching: a bad topic, type or data is that caller’s bad_request; the others in the same batch get their ids', async () => {
    const t = await onNewDatabase();
    const { admin, appender } = t;
    const { first, release } = await inFlight(t, () => settle(appender.emitMany(eventsOf('bad:a', 0, 1))));
    const calls = [
      appender.emitMany(eventsOf('bad:a', 1, 2)),
      appender.emitMany([...eventsOf('bad:a', 2, 1), { topic: 'Not A Topic', type: 't', data: 1 }]),
      appender.emitMany(eventsOf('bad:a', 3, 1)),
      appender.emitMany([{ topic: 'bad:a', type: '', data: 1 }]),
      appender.emitMany([{ topic: 'bad:a', type: 't', data: { s: 'nul \u0000 here' } }]),
      appender.emitMany([{ topic: 'bad:a', type: 't', data: { s: 'lone \ud800' } }]),
      appender.emitMany([{ topic: 'bad:a', type: 't', data: { n: 1n } }]),
      appender.emitMany(eventsOf('bad:a', 8, 3)),
    ].map(settle);
    await release();
    const outcomes = [await first, ...(await Promise.all(calls))];
    const failed = outcomes.flatMap((o, i) => (o.ok ? [] : [[i, (o.err as HeraldError).code, (o.err as HeraldError).message]]));
    expect(failed).toEqual([
      [2, 'HERALD_ERR_BAD_REQUEST', expect.stringContaining('events[1].topic')],
      [4, 'HERALD_ERR_BAD_REQUEST', expect.stringContaining('type must be')],
      [5, 'HERALD_ERR_BAD_REQUEST', 'data holds a NUL (\\u0000) or an unpaired surrogate, which PostgreSQL cannot store: remove it'],
      [6, 'HERALD_ERR_BAD_REQUEST', 'data holds a NUL (\\u0000) or an unpaired surrogate, which PostgreSQL cannot store: remove it'],
      [7, 'HERALD_ERR_BAD_REQUEST', expect.stringContaining('data cannot be written as JSON')],
    ]);
    // Escaped backslashes before a `u0000` are text, not an escape: stored.
    expect(await appender.emit({ topic: 'bad:b', type: 't', data: '\\u0000' })).toBeGreaterThan(0);
    // The good callers shared one flush after the first: contiguous ids, in call order.
    expect(appender.flushes).toBe(3);
    const good = outcomes.flatMap((o) => (o.ok ? o.ids : []));
    expect(good).toEqual(Array.from({ length: good.length }, (_, i) => good[0]! + i));
    await expectExactlyAcknowledged(admin, 'bad:a', outcomes, [1, 2, 2, 1, 1, 1, 1, 1, 3]);
  });

  it('data PostgreSQL refuses anyway fails the batch, which is then flushed caller by caller: only the bad one gets the error', async () => {
    const t = await onNewDatabase();
    const { admin, appender } = t;
    const { first, release } = await inFlight(t, () => settle(appender.emitMany(eventsOf('bad:c', 0, 1))));
    // emitManyJson trusts its text to be scanned (POST /v1/events does): this one is not.
    const calls = [
      appender.emitMany(eventsOf('bad:c', 1, 2)),
      appender.emitManyJson([{ topic: 'bad:c', type: 't', dataJson: '"\\u0000"' }]),
      appender.emitMany(eventsOf('bad:c', 3, 1)),
    ].map(settle);
    await release();
    const outcomes = [await first, ...(await Promise.all(calls))];
    expect(outcomes.map((o) => o.ok)).toEqual([true, true, false, true]);
    const err = (outcomes[2] as { err: HeraldError }).err;
    expect(err.code).toBe('HERALD_ERR_BAD_REQUEST');
    expect(err.message).toBe('PostgreSQL refused the events: unsupported Unicode escape sequence: fix their data');
    // The first flush, the failed batch, then its three callers alone.
    expect(appender.flushes).toBe(5);
    await expectExactlyAcknowledged(admin, 'bad:c', outcomes, [1, 2, 1, 1]);
  });
});

describe('Appender: bounds and shutdown', () => {
  it('a full queue refuses at once with unavailable and a Retry-After of 1 s; what was queued is appended', async () => {
    const t = await onNewDatabase({ maxQueueEvents: 5 });
    const { appender } = t;
    const { first, release } = await inFlight(t, () => appender.emitMany(eventsOf('full:a', 0, 1)));
    const queued = [appender.emitMany(eventsOf('full:a', 1, 3)), appender.emitMany(eventsOf('full:a', 2, 2))];
    const refused = await settle(appender.emitMany(eventsOf('full:a', 3, 1)));
    expect(refused.ok).toBe(false);
    const err = (refused as { err: HeraldError }).err;
    expect([err.code, err.httpStatus, err.retryable, err.details]).toEqual(['HERALD_ERR_UNAVAILABLE', 503, true, { retryAfterS: 1 }]);
    expect(err.message).toBe('5 events are waiting to be appended, the most this server queues: retry after 1 s');
    await release();
    const ids = await Promise.all([first, ...queued]);
    expect(ids.flat()).toEqual(Array.from({ length: 6 }, (_, i) => ids[0]![0]! + i));
  });

  it('the queue is bounded in bytes too: past HERALD_APPEND_QUEUE_MAX_BYTES an append is refused the same way', async () => {
    const t = await onNewDatabase({ maxQueueBytes: 1024 });
    const { appender } = t;
    const { first, release } = await inFlight(t, () => appender.emit({ topic: 'full:b', type: 't' }));
    const data = { pad: 'x'.repeat(900) };
    const queued = appender.emit({ topic: 'full:b', type: 't', data });
    const bytes = Buffer.byteLength(`{"topic":"full:b","type":"t","data":${JSON.stringify(data)}}`);
    expect(bytes).toBe(947);
    const refused = await settle(appender.emitMany([{ topic: 'full:b', type: 't', data: { pad: 'x'.repeat(100) } }]));
    expect(refused).toMatchObject({ ok: false, err: { code: 'HERALD_ERR_UNAVAILABLE', details: { retryAfterS: 1 } } });
    expect((refused as { err: HeraldError }).err.message).toBe(
      `${bytes} bytes of events are waiting to be appended, the most this server queues: retry after 1 s`,
    );
    await release();
    const [a, b] = await Promise.all([first, queued]);
    expect(b).toBe(a + 1);
  });

  it('one caller bigger than a batch or the whole queue goes alone, never split', async () => {
    const { appender } = await onNewDatabase({ maxBatchEvents: 2, maxQueueEvents: 2 });
    const ids = await appender.emitMany(eventsOf('big:a', 0, 5));
    expect(ids).toEqual(Array.from({ length: 5 }, (_, i) => ids[0]! + i));
    expect(appender.flushes).toBe(1);
  });

  it('close() flushes what is queued, then refuses new appends with shutting_down', async () => {
    const t = await onNewDatabase();
    const { appender } = t;
    const { first, release } = await inFlight(t, () => appender.emitMany(eventsOf('close:a', 0, 1)));
    const calls = [first];
    calls.push(appender.emitMany(eventsOf('close:a', 1, 1)));
    const closed = appender.close();
    expect(appender.state).toBe('draining');
    await expect(appender.emit({ topic: 'close:a', type: 't' })).rejects.toMatchObject({ code: 'HERALD_ERR_SHUTTING_DOWN' });
    await release();
    await closed;
    expect(appender.state).toBe('closed');
    const ids = await Promise.all(calls);
    expect(ids.flat()).toEqual([ids[0]![0]!, ids[0]![0]! + 1]);
  });
});

describe('Appender under faults', () => {
  it('its backend killed while a flush waits on the id lock: that batch fails whole with unavailable, the next batch commits, nothing half-written', async () => {
    const t = await onNewDatabase();
    const { admin, appender, app } = t;
    const { sizes, calls, call } = callers(appender, 'kill:a');
    // Five rounds: a batch in flight is killed, the one gathered behind it must commit.
    const doomed: number[] = [];
    for (let round = 0; round < 5; round++) {
      const killed = calls.length;
      // With nothing in flight, the first caller's flush goes at once, alone.
      const { release } = await inFlight(t, () => call(3));
      // These gather behind it.
      for (let i = 0; i < 4; i++) call(2);
      expect(appender.waitingEvents).toBe(8);
      const { rows } = await admin.query(`select pg_terminate_backend(pid) as ok from pg_stat_activity where application_name = $1`, [app]);
      expect(rows).toEqual([{ ok: true }]);
      // The next batch reconnects and waits on the lock again: then let it through.
      await flushWaitsOnLock(admin, app);
      await release();
      await Promise.all(calls);
      doomed.push(killed);
    }
    const outcomes = await Promise.all(calls);
    const failed = outcomes.flatMap((o, i) => (o.ok ? [] : [i]));
    expect(failed).toEqual(doomed);
    for (const o of outcomes) if (!o.ok) expect(o.err).toMatchObject({ code: 'HERALD_ERR_UNAVAILABLE', retryable: true });
    await expectExactlyAcknowledged(admin, 'kill:a', outcomes, sizes);
    // And it goes on appending.
    expect(await appender.emit({ topic: 'kill:b', type: 't' })).toBeGreaterThan(0);
  });

  it('PostgreSQL restarted while a flush waits on the id lock and callers keep coming: each gets ids or unavailable, and the log holds exactly the acknowledged events', async () => {
    const cluster = await startPrivateCluster(cleanups);
    const t = { url: cluster.url, admin: await connect(cluster.url), ...startAppender(cluster.url) };
    const { sizes, calls, call } = callers(t.appender, 'restart:a');
    // The lock is held until the restart ends its session.
    await inFlight(t, () => {
      for (let i = 0; i < 5; i++) call(1 + (i % 3));
    });
    for (let i = 0; i < 20; i++) call(1 + (i % 3));
    // Fast shutdown: the lock holder and the flush's backend are cut; the gathered batch then
    // meets a server going down or gone.
    const stopped = cluster.stop();
    for (let i = 0; i < 20; i++) call(1 + (i % 3));
    await stopped;
    for (let i = 0; i < 20; i++) call(1 + (i % 3));
    await cluster.start();
    // Callers that arrive once it is back, and those still queued, get their ids.
    for (let i = 0; i < 20; i++) call(1 + (i % 3));
    const outcomes = await Promise.all(calls);
    for (const o of outcomes) if (!o.ok) expect(o.err).toMatchObject({ code: 'HERALD_ERR_UNAVAILABLE', retryable: true });
    // The batch in flight and the one gathered behind it failed; the last callers succeeded.
    expect(outcomes.slice(0, 5).map((o) => o.ok)).toEqual([false, false, false, false, false]);
    expect(outcomes.slice(-20).every((o) => o.ok)).toBe(true);
    const after = await connect(cluster.url);
    await expectExactlyAcknowledged(after, 'restart:a', outcomes, sizes);
  });
});
