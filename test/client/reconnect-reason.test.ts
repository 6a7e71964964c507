/**
 * connect()'s onReconnect: each scheduled reconnect says why (the server's code when it gave
 * one, else how the socket ended) and how long it waits, so a CLI or a UI can tell people.
 * And when it does not reconnect: the server's `retryable` decides, and a close code's or a
 * refused upgrade's meaning comes from the wire module's table.
 */
import { once } from 'node:events';
import { afterAll, describe, expect, it } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';
import { connect, type HeraldClientError, type ReconnectInfo, type WebSocketConstructor } from 'herald-client';
import { createTestDatabase } from '../support/db.ts';
import { startTestHerald, until } from '../support/herald.ts';

const cleanups: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
});

/** A bare server standing in for Herald: it answers each connection's first message with `frame`. Returns its URL. */
async function answeringWith(frame: object): Promise<string> {
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
  await once(wss, 'listening');
  cleanups.push(() => new Promise((r) => wss.close(r)));
  wss.on('connection', (ws) => {
    ws.once('message', () => ws.send(JSON.stringify(frame)));
  });
  return `ws://127.0.0.1:${(wss.address() as { port: number }).port}/v1/ws`;
}

describe('client reconnect reasons', () => {
  it('a server shutting down is reported as server: shutting_down, then the refused connection as connection failed, with growing attempts and delays', async () => {
    const db = await createTestDatabase();
    cleanups.push(db.drop);
    const herald = await startTestHerald(db.url);
    cleanups.push(herald.close);
    const reconnects: ReconnectInfo[] = [];
    const states: string[] = [];
    const conn = connect({
      url: herald.url,
      topics: ['r:*'],
      backoff: { initialMs: 20, maxMs: 200 },
      onEvent: () => undefined,
      onStateChange: (s) => states.push(s),
      onReconnect: (info) => reconnects.push(info),
    });
    cleanups.push(async () => conn.close());
    await conn.ready;
    await herald.close();
    await until(() => reconnects.length >= 2, 10_000, 'two reconnects');
    conn.close();
    expect(reconnects[0]).toMatchObject({ attempt: 1, reason: 'server: shutting_down', code: 'shutting_down' });
    expect(reconnects[0]!.delayMs).toBeGreaterThanOrEqual(10);
    expect(reconnects[0]!.delayMs).toBeLessThanOrEqual(20);
    expect(reconnects[1]).toMatchObject({ attempt: 2 });
    expect(reconnects[1]!.reason).toMatch(/^connection failed: .*ECONNREFUSED/);
    expect(reconnects[1]!.code).toBeUndefined();
    // onStateChange is unchanged: one 'reconnecting' for the whole outage.
    expect(states).toEqual(['open', 'reconnecting', 'closed']);
  });

  it('a dropped connection is reported with its close code and no server code; the attempt count restarts once subscribed again', async () => {
    const db = await createTestDatabase();
    cleanups.push(db.drop);
    const herald = await startTestHerald(db.url);
    cleanups.push(herald.close);
    const sockets: WebSocket[] = [];
    class Tracked extends WebSocket {
      constructor(url: string) {
        super(url);
        sockets.push(this);
      }
    }
    const reconnects: ReconnectInfo[] = [];
    const conn = connect({
      url: herald.url,
      topics: ['r:*'],
      backoff: { initialMs: 10, maxMs: 50 },
      WebSocket: Tracked as unknown as WebSocketConstructor,
      onEvent: () => undefined,
      onReconnect: (info) => reconnects.push(info),
    });
    cleanups.push(async () => conn.close());
    await conn.ready;
    for (const round of [1, 2]) {
      sockets.at(-1)!.terminate();
      await until(() => reconnects.length === round, 5000, `reconnect ${round}`);
      await until(() => conn.state === 'open', 5000, 'the connection to be subscribed again');
    }
    conn.close();
    expect(reconnects).toEqual([
      { attempt: 1, delayMs: expect.any(Number), reason: 'connection closed: 1006' },
      { attempt: 1, delayMs: expect.any(Number), reason: 'connection closed: 1006' },
    ]);
  });

  it('a retryable error frame is reported with its code', async () => {
    // Real Herald sends a retryable error only when its database fails mid-stream; a bare
    // server stands in for that one frame.
    const url = await answeringWith({ op: 'error', code: 'unavailable', message: 'the database is restarting', position: 0 });
    const reconnects: ReconnectInfo[] = [];
    const conn = connect({
      url,
      topics: ['*'],
      backoff: { initialMs: 10, maxMs: 20 },
      onEvent: () => undefined,
      onReconnect: (info) => reconnects.push(info),
    });
    cleanups.push(async () => conn.close());
    await until(() => reconnects.length >= 2, 5000, 'two reconnects');
    conn.close();
    expect(reconnects[0]).toMatchObject({ attempt: 1, reason: 'server: unavailable', code: 'unavailable' });
    expect(reconnects[1]).toMatchObject({ attempt: 2, reason: 'server: unavailable', code: 'unavailable' });
  });
  it('a WebSocket that fires error and never close while connecting (Node 22, undici#3546) is retried, once per failure', async () => {
    const opened: ErrorOnlySocket[] = [];
    class ErrorOnlySocket {
      readyState = 0;
      onopen: ((ev: unknown) => void) | null = null;
      onmessage: ((ev: { data: unknown }) => void) | null = null;
      onclose: ((ev: { code: number; reason: string }) => void) | null = null;
      onerror: ((ev: unknown) => void) | null = null;
      constructor(readonly url: string) {
        opened.push(this);
        queueMicrotask(() => this.onerror?.({ message: 'connect ECONNREFUSED 127.0.0.1:1' }));
      }
      send(): void {}
      close(): void {
        this.readyState = 3;
      }
    }
    const reconnects: ReconnectInfo[] = [];
    const conn = connect({
      url: 'http://127.0.0.1:1',
      topics: ['x'],
      backoff: { initialMs: 1, maxMs: 2 },
      WebSocket: ErrorOnlySocket as unknown as WebSocketConstructor,
      onEvent: () => undefined,
      onReconnect: (info) => reconnects.push(info),
    });
    await until(() => reconnects.length >= 3, 5_000, 'three reconnects');
    conn.close();
    expect(reconnects.slice(0, 3).map((r) => [r.attempt, r.reason])).toEqual([
      [1, 'connection failed: connect ECONNREFUSED 127.0.0.1:1'],
      [2, 'connection failed: connect ECONNREFUSED 127.0.0.1:1'],
      [3, 'connection failed: connect ECONNREFUSED 127.0.0.1:1'],
    ]);
    // One reconnect per failed socket (the last socket may still be connecting at close()).
    expect(reconnects.map((r) => r.attempt)).toEqual(reconnects.map((_, i) => i + 1));
    expect(opened.length - reconnects.length).toBeGreaterThanOrEqual(0);
    expect(opened.length - reconnects.length).toBeLessThanOrEqual(1);
  });

  it("an error frame that says retryable: false is fatal, whatever its code: the server's flag decides, not a list in the client", async () => {
    const url = await answeringWith({ op: 'error', code: 'unavailable', message: 'not this time', retryable: false, position: 7 });
    const reconnects: ReconnectInfo[] = [];
    const errors: HeraldClientError[] = [];
    const conn = connect({
      url,
      topics: ['*'],
      backoff: { initialMs: 10, maxMs: 20 },
      onEvent: () => undefined,
      onError: (e) => errors.push(e),
      onReconnect: (info) => reconnects.push(info),
    });
    await expect(conn.ready).rejects.toMatchObject({ code: 'unavailable', retryable: false, details: { position: 7 } });
    expect(errors.map((e) => e.code)).toEqual(['unavailable']);
    expect(reconnects).toEqual([]);
    expect(conn.state).toBe('closed');
  });

  it('a close with 1009 (its subscribe is over the server limit) is fatal payload_too_large: resending it could never work', async () => {
    const db = await createTestDatabase();
    cleanups.push(db.drop);
    const herald = await startTestHerald(db.url, { wsMaxPayloadBytes: 1024 });
    cleanups.push(herald.close);
    const reconnects: ReconnectInfo[] = [];
    const errors: HeraldClientError[] = [];
    const conn = connect({
      url: herald.url,
      topics: Array.from({ length: 100 }, (_, i) => `big:topic-${i}`),
      backoff: { initialMs: 10, maxMs: 20 },
      onEvent: () => undefined,
      onError: (e) => errors.push(e),
      onReconnect: (info) => reconnects.push(info),
    });
    await expect(conn.ready).rejects.toMatchObject({ code: 'payload_too_large', retryable: false });
    expect(errors.map((e) => [e.code, e.message])).toEqual([['payload_too_large', 'the server closed the connection (1009)']]);
    expect(reconnects).toEqual([]);
  });
});
