import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';
import { publish, startTestHerald, type TestHerald, until } from '../support/herald.ts';

let db: TestDatabase;
let herald: TestHerald;

beforeAll(async () => {
  db = await createTestDatabase();
  herald = await startTestHerald(db.url);
});
afterAll(async () => {
  await herald.close();
  await db.drop();
});

describe('health and metrics', () => {
  it('/healthz is 200 while the process is up', async () => {
    const res = await fetch(`${herald.url}/healthz`);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ status: 'ok' });
  });

  it('/readyz reports database, listener state and lag, and stays ready across a LISTEN reconnect', async () => {
    await until(() => herald.ctx.listener.state === 'listening');
    const ok = await fetch(`${herald.url}/readyz`);
    expect(ok.status).toBe(200);
    expect(await ok.json()).toMatchObject({ status: 'ready', database: 'ok', listener: { state: 'listening', lag: 0 } });
    const before = herald.ctx.listener.reconnects;
    await herald.ctx.pool.query(
      `select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'herald-listener' and datname = current_database()`,
    );
    await until(() => herald.ctx.listener.reconnects > before && herald.ctx.listener.state === 'listening', 10_000, 'listener to come back');
    expect((await fetch(`${herald.url}/readyz`)).status).toBe(200);
  });

  it('/metrics exposes appends, reads, subscribers, deliveries and reconnects', async () => {
    const sse = await fetch(`${herald.url}/v1/events/stream?since=0`);
    const res0 = await publish(herald.url, {
      events: [
        { topic: 'm:a', type: 't' },
        { topic: 'm:b', type: 't' },
      ],
    });
    expect(res0.status).toBe(201);
    await until(async () => /herald_deliveries_total\{transport="sse"\} [1-9]/.test(await (await fetch(`${herald.url}/metrics`)).text()));
    const text = await (await fetch(`${herald.url}/metrics`)).text();
    expect(text).toMatch(/herald_events_appended_total 2/);
    expect(text).toMatch(/herald_events_read_total [1-9]/);
    expect(text).toMatch(/herald_subscribers\{transport="sse"\} 1/);
    expect(text).toMatch(/herald_listener_reconnects_total [1-9]/);
    expect(text).toMatch(/herald_delivery_lag_seconds_bucket/);
    await sse.body?.cancel();
  });

  it('/readyz is 503 not_ready once the listener is down (runs last: it closes the listener)', async () => {
    await herald.ctx.listener.close();
    const res = await fetch(`${herald.url}/readyz`);
    expect(res.status).toBe(503);
    expect(await res.json()).toMatchObject({ status: 'not_ready', database: 'ok', listener: { state: 'closed' } });
  });
});
