/**
 * `POST /v1/events` through the group append (src/events/appender.ts): publishes that arrive
 * while a flush is in flight share the next one, and a full queue answers at once with a
 * retryable 503 and Retry-After. A flush is held in flight by the id lock (sql/001_events.sql)
 * taken in a transaction of the test's own.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.ts';
import { type Gateway, startGateway } from '../../src/gateway/server.ts';
import { createLogger } from '../../src/logger.ts';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';
import { publish, TEST_PUBLISH_TOKEN, until } from '../support/herald.ts';

let db: TestDatabase;
let gateway: Gateway;
let admin: pg.Client;

beforeAll(async () => {
  db = await createTestDatabase();
  const config = loadConfig(
    { port: 0, host: '127.0.0.1', databaseUrl: db.url, logLevel: 'silent', publishTokens: [TEST_PUBLISH_TOKEN], retentionMaxAgeMs: 0, appendQueueMaxEvents: 3 },
    {},
  );
  gateway = await startGateway(config, { logger: createLogger('silent'), skipMigrations: true });
  admin = new pg.Client({ connectionString: db.url });
  await admin.connect();
});
afterAll(async () => {
  await admin?.end();
  await gateway?.close();
  await db?.drop();
});

/** Takes the id lock in a transaction of its own: every append waits until release(). */
async function holdIdLock(): Promise<{ release(): Promise<void> }> {
  const c = new pg.Client({ connectionString: db.url });
  await c.connect();
  await c.query('begin');
  await c.query('select pg_advisory_xact_lock(114784919972964)');
  return { release: () => c.query('commit').then(() => c.end()) };
}

const event = (n: number) => ({ topic: 'publish:queue', type: 't', data: { n } });

describe('POST /v1/events through the group append', () => {
  it('past HERALD_APPEND_QUEUE_MAX_EVENTS waiting, a publish gets 503 unavailable with Retry-After; the queued ones are appended in order', async () => {
    const lock = await holdIdLock();
    const first = publish(gateway.url, event(0));
    // Its flush is in flight once the append backend waits on the lock.
    await until(
      async () =>
        (
          await admin.query(
            `select 1 from pg_stat_activity where application_name = 'herald-append' and datname = current_database() and wait_event_type = 'Lock' and wait_event = 'advisory'`,
          )
        ).rowCount === 1,
      10_000,
      'the flush to wait on the id lock',
    );
    const queued = [publish(gateway.url, { events: [event(1), event(2)] }), publish(gateway.url, event(3))];
    await until(() => gateway.appender.waitingEvents === 3, 10_000, 'three events to wait');

    const refused = await publish(gateway.url, event(4));
    expect(refused.status).toBe(503);
    expect(refused.headers.get('retry-after')).toBe('1');
    expect(await refused.json()).toEqual({
      error: {
        code: 'unavailable',
        message: '3 events are waiting to be appended, the most this server queues: retry after 1 s',
        retryable: true,
        retryAfterS: 1,
      },
    });

    await lock.release();
    const answers = await Promise.all([first, ...queued]);
    expect(answers.map((r) => r.status)).toEqual([201, 201, 201]);
    const [a, b, c] = (await Promise.all(answers.map((r) => r.json()))) as { ids: number[] }[];
    const x = a!.ids[0]!;
    expect([a!.ids, b!.ids, c!.ids]).toEqual([[x], [x + 1, x + 2], [x + 3]]);
    // The first flush alone, then the two that gathered behind it in one.
    expect(gateway.appender.flushes).toBe(2);
    const { rows } = await admin.query(`select id::int, data->>'n' as n from herald.events where topic = 'publish:queue' order by id`);
    expect(rows).toEqual([0, 1, 2, 3].map((n) => ({ id: x + n, n: String(n) })));
  });
});
