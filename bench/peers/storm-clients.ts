/**
 * The reconnect-storm fleet, in its own process: N WebSocket clients on one topic that
 * remember the last id they received, drop together, and reconnect together with it; each
 * client's ids are checked for exactly-once delivery after the reconnect.
 */
import WebSocket from 'ws';
import { serve, stats } from './ipc.ts';

interface Client {
  ws: WebSocket | null;
  /** Highest id received (or the `since` of the first subscription). */
  last: number;
  /** Ids received since the last reconnect. */
  ids: number[];
}

const clients: Client[] = [];
let url = '';
let topic = '';

function attach(c: Client, ws: WebSocket, since: number | 'now', onSubscribed: () => void): void {
  c.ws = ws;
  ws.on('error', () => undefined);
  ws.on('open', () => ws.send(JSON.stringify({ op: 'subscribe', topics: [topic], since })));
  ws.on('message', (data: WebSocket.RawData) => {
    const text = data.toString();
    // {"op":"event","id":123,…}: the id without parsing the whole frame.
    if (text.startsWith('{"op":"event","id":')) {
      const id = Number.parseInt(text.slice(19), 10);
      c.ids.push(id);
      c.last = id;
    } else if (text.startsWith('{"op":"subscribed"')) {
      if (since === 'now') c.last = (JSON.parse(text) as { since: number }).since;
      onSubscribed();
    } else if (text.startsWith('{"op":"error"')) console.error(`storm client: ${text}`);
  });
}

/** Resolves once every client's last id is `last`; rejects after `timeoutMs`. */
function allReach(last: number, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const t0 = Date.now();
    const check = () => {
      if (clients.every((c) => c.last >= last)) return resolve();
      if (Date.now() - t0 > timeoutMs) return reject(new Error(`${clients.filter((c) => c.last < last).length} clients short of ${last}`));
      // A timer, not setImmediate: a spinning check would take CPU from the server.
      setTimeout(check, 2);
    };
    check();
  });
}

serve({
  stats,
  /** Opens `n` clients on `topic`, each subscribed from `now`, 200 at a time. */
  open: async (msg) => {
    url = msg.url as string;
    topic = msg.topic as string;
    const n = msg.n as number;
    for (let i = 0; i < n; i += 200) {
      await Promise.all(
        Array.from({ length: Math.min(200, n - i) }, () => {
          const c: Client = { ws: null, last: 0, ids: [] };
          clients.push(c);
          return new Promise<void>((resolve) => attach(c, new WebSocket(url, { perMessageDeflate: false }), 'now', resolve));
        }),
      );
    }
    return clients.length;
  },
  /** Resolves once every client has received up to `last`. */
  reach: async ({ last }) => {
    await allReach(last as number, 60_000);
    return null;
  },
  /** Every client drops its connection at once (no closing handshake: a network blip). */
  drop: () => {
    for (const c of clients) {
      c.ws?.terminate();
      c.ws = null;
    }
    return null;
  },
  /**
   * Every client reconnects at once with its last id; resolves when each has every id in
   * `expected` after it. Returns the time that took and how many clients got a duplicate, a
   * gap or an id out of order.
   */
  reconnect: async ({ expected }) => {
    const want = expected as number[];
    const t0 = performance.now();
    for (const c of clients) {
      const since = c.last;
      c.ids = [];
      attach(c, new WebSocket(url, { perMessageDeflate: false }), since, () => undefined);
    }
    await allReach(want[want.length - 1]!, 60_000);
    const ms = performance.now() - t0;
    // A duplicate would arrive with or before the last id; a moment more catches a late one.
    await new Promise((r) => setTimeout(r, 200));
    const wrong = clients.filter((c) => c.ids.length !== want.length || c.ids.some((id, i) => id !== want[i])).length;
    return { ms, wrong };
  },
  closeAll: () => {
    for (const c of clients.splice(0)) c.ws?.terminate();
    return null;
  },
});
