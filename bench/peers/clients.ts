/**
 * The client fleet, in its own process: N WebSocket connections that count event frames and
 * (when asked) record commit-to-client latency from the `t` each event carries.
 */
import WebSocket from 'ws';
import { serve, stats } from './ipc.ts';

const sockets: WebSocket[] = [];
let received = 0;
let latencies: number[] = [];
let measureLatency = false;

function onMessage(data: WebSocket.RawData): void {
  const text = data.toString();
  if (!text.startsWith('{"op":"event"')) return;
  received++;
  if (measureLatency) {
    // Postgres renders jsonb with a space after the colon.
    const m = /"t": ?([0-9.]+)/.exec(text);
    if (m) latencies.push(performance.timeOrigin + performance.now() - Number(m[1]));
  }
}

async function openOne(url: string, subscribe: string | null): Promise<void> {
  const ws = new WebSocket(url, { perMessageDeflate: false });
  ws.on('message', onMessage);
  ws.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  if (subscribe) {
    ws.send(JSON.stringify({ op: 'subscribe', topics: [subscribe] }));
    await new Promise<void>((resolve) => {
      const ack = (d: WebSocket.RawData) => {
        if (d.toString().startsWith('{"op":"subscribed"')) {
          ws.off('message', ack);
          resolve();
        }
      };
      ws.on('message', ack);
    });
  }
  sockets.push(ws);
}

serve({
  stats,
  /** Opens `n` connections; herald mode subscribes each to `bench:all` or its own `bench:<i>`. */
  open: async ({ url, n, herald, own }) => {
    const start = sockets.length;
    for (let i = 0; i < (n as number); i += 200) {
      await Promise.all(
        Array.from({ length: Math.min(200, (n as number) - i) }, (_, j) =>
          openOne(url as string, herald ? (own ? `bench:${start + i + j}` : 'bench:all') : null),
        ),
      );
    }
    return sockets.length;
  },
  reset: ({ latency }) => {
    received = 0;
    latencies = [];
    measureLatency = Boolean(latency);
    return null;
  },
  count: () => received,
  latencies: () => {
    const sorted = [...latencies].sort((a, b) => a - b);
    const at = (p: number) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] ?? Number.NaN;
    return { n: sorted.length, p50: at(0.5), p99: at(0.99) };
  },
  closeAll: async () => {
    for (const ws of sockets.splice(0)) ws.terminate();
    return null;
  },
});
