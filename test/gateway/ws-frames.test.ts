/**
 * Prepared frames (src/gateway/ws-frames.ts): Herald frames each batch itself and writes the
 * bytes straight to the socket, so a real `ws` client must parse them exactly, at every
 * length encoding (7-bit, 16-bit and 64-bit payload lengths, and each boundary), with
 * control messages interleaved, and the counters must add up to what was written.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Event } from '../../src/events/event.ts';
import { preparedFrames } from '../../src/gateway/ws-frames.ts';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';
import { startTestHerald, type TestHerald, until } from '../support/herald.ts';
import { openWs } from '../support/ws.ts';

let db: TestDatabase;
let herald: TestHerald;

beforeAll(async () => {
  db = await createTestDatabase();
  herald = await startTestHerald(db.url, { workers: 0 });
});
afterAll(async () => {
  await herald.close();
  await db.drop();
});

const headerBytes = (payload: number) => (payload < 126 ? 2 : payload < 65_536 ? 4 : 10);
const metric = (text: string, line: RegExp) => Number(line.exec(text)?.[1] ?? Number.NaN);

describe('prepared WebSocket frames', () => {
  it('a batch is framed once: the same Buffer for every call with the same array', () => {
    const at = '2026-12-01T00:00:00.000Z';
    const batch = [1, 2, 3].map((id) => new Event({ id, topic: 'a', type: 't', data: '{}', at }));
    const bytes = preparedFrames(batch);
    expect(preparedFrames(batch)).toBe(bytes);
    // Three frames, each a 2-byte header (FIN + text opcode, 7-bit length) and the payload.
    const expected = Buffer.concat(batch.map((e) => Buffer.concat([Buffer.from([0x81, e.wsFrame.length]), e.wsFrame])));
    expect(bytes.equals(expected)).toBe(true);
    // Another array with the same events is another batch.
    expect(preparedFrames([...batch])).not.toBe(bytes);
  });

  it('a real ws client parses every length encoding and boundary, in order, byte for byte; the counters add up', async () => {
    const clients = [await openWs(herald.url), await openWs(herald.url)];
    for (const c of clients) {
      c.send({ op: 'subscribe', topics: ['fr:a'] });
      await c.waitFor((m) => m.op === 'subscribed');
    }
    // Payload = the frame's JSON; pad `data` so payloads land on and around each boundary
    // of the length encoding (125 | 126, 65535 | 65536) and well past it.
    const { head } = await herald.ctx.log.readHead();
    const at = '2026-12-01T00:00:00.000Z';
    const overhead = (id: number) => Buffer.byteLength(`{"op":"event","id":${id},"topic":"fr:a","type":"t","data":"","at":"${at}"}`);
    const targets = [0, 1, 124, 125, 126, 127, 65_534, 65_535, 65_536, 65_537, 200_000];
    const datas = targets.map((t, i) => 'x'.repeat(Math.max(0, t - overhead(head + 1 + i))));
    const ids = await herald.ctx.log.emitMany(datas.map((data) => ({ topic: 'fr:a', type: 't', data })));
    expect(ids).toEqual(targets.map((_, i) => head + 1 + i));
    // Live ones, as separate commits (so separate batches), with pongs (written by ws
    // itself, not prepared) in between.
    const more = [];
    for (let i = 0; i < 5; i++) {
      for (const c of clients) c.send({ op: 'ping' });
      more.push(...(await herald.ctx.log.emitMany([{ topic: 'fr:a', type: 't', data: i }])));
    }

    const all = [...ids, ...more];
    for (const c of clients) await c.waitFor((m) => m.id === all.at(-1), 10_000);
    for (const c of clients) {
      expect(c.events()).toEqual(all);
      const events = c.messages.filter((m) => m.op === 'event');
      expect(events.slice(0, targets.length).map((e) => (e.data as string).length)).toEqual(datas.map((d) => d.length));
      expect(events.slice(targets.length).map((e) => e.data)).toEqual([0, 1, 2, 3, 4]);
      await until(() => c.messages.filter((m) => m.op === 'pong').length === 5, 5000, 'pongs');
    }
    // The payload lengths received include each boundary exactly (the at of a real event has
    // the same 24 characters as the estimate, so every target is hit).
    const lengths = clients[0]!.raw.filter((t) => t.startsWith('{"op":"event"')).map((t) => Buffer.byteLength(t));
    for (const t of [125, 126, 65_535, 65_536]) expect(lengths).toContain(t);
    // Both clients got the very same bytes.
    expect(clients[1]!.raw.filter((t) => t.startsWith('{"op":"event"'))).toEqual(clients[0]!.raw.filter((t) => t.startsWith('{"op":"event"')));

    // Counters are tallied on the hot path and folded in at the scrape: exact.
    const wireBytes = lengths.reduce((sum, n) => sum + headerBytes(n) + n, 0);
    await until(
      async () => {
        const text = await (await fetch(`${herald.url}/metrics`)).text();
        return metric(text, /^herald_deliveries_total\{transport="ws"\} (\d+)$/m) === 2 * all.length;
      },
      5000,
      'ws deliveries counter',
    );
    const text = await (await fetch(`${herald.url}/metrics`)).text();
    expect(metric(text, /^herald_ws_bytes_out_total (\d+)$/m)).toBe(2 * wireBytes);
    // Lag is observed once per batch, not once per client: at most the 6 commits' batches.
    const lagSamples = metric(text, /^herald_delivery_lag_seconds_count\{transport="ws"\} (\d+)$/m);
    expect(lagSamples).toBeGreaterThanOrEqual(1);
    expect(lagSamples).toBeLessThanOrEqual(6);
    for (const c of clients) c.ws.close();
  });
});
