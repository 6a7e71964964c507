/**
 * The ceiling: a bare `ws` server (no database, no Herald) that broadcasts pre-built frames,
 * shaped like Herald's event frames, to every connected client (or one client per frame).
 */
import { WebSocketServer, type WebSocket } from 'ws';
import { serve, stats } from './ipc.ts';

const wss = new WebSocketServer({ port: 0, host: '127.0.0.1', perMessageDeflate: false, clientTracking: false });
const clients: WebSocket[] = [];
wss.on('connection', (ws) => {
  clients.push(ws);
  ws.on('close', () => clients.splice(clients.indexOf(ws), 1));
  ws.on('error', () => undefined);
});
await new Promise((r) => wss.on('listening', r));
let seq = 0;

function frame(topic: string): Buffer {
  seq++;
  const t = performance.timeOrigin + performance.now();
  return Buffer.from(`{"op":"event","id":${seq},"topic":"${topic}","type":"tick","data":{"t":${t},"n":${seq}},"at":"${new Date().toISOString()}"}`);
}

type Corkable = { _socket?: { cork(): void; uncork(): void } };

/**
 * Sends `count` frames. Like Herald, frames that are ready together go to each socket
 * together (corked: one syscall), so this is a true ceiling for Herald's write path.
 */
function sendMany(count: number, own: boolean): void {
  if (own) {
    for (let i = 0; i < count; i++) {
      const ws = clients[seq % clients.length]!;
      ws.send(frame(`bench:${seq % clients.length}`));
    }
    return;
  }
  const frames = Array.from({ length: count }, () => frame('bench:all'));
  for (const ws of clients) {
    const socket = (ws as unknown as Corkable)._socket;
    socket?.cork();
    for (const f of frames) ws.send(f);
    socket?.uncork();
  }
}

serve({
  url: () => `ws://127.0.0.1:${(wss.address() as { port: number }).port}`,
  stats,
  /** Sends `count` frames as fast as possible, in chunks of `chunk` (Herald's commit batch). */
  burst: async ({ count, own, chunk }) => {
    for (let i = 0; i < (count as number); i += chunk as number) {
      sendMany(Math.min(chunk as number, (count as number) - i), own as boolean);
      // Let the event loop flush sockets between chunks, as Herald's does between reads.
      await new Promise((r) => setImmediate(r));
    }
    return null;
  },
  /** Sends `perSecond` frames a second for `seconds`, on a time-based schedule. */
  paced: async ({ perSecond, seconds, own }) => {
    const t0 = Date.now();
    let sent = 0;
    while (Date.now() - t0 < (seconds as number) * 1000) {
      const due = Math.floor(((Date.now() - t0) / 1000) * (perSecond as number)) - sent;
      // Each event is its own send, as each Herald event is its own commit.
      for (let i = 0; i < due; i++) sendMany(1, own as boolean);
      sent += Math.max(0, due);
      await new Promise((r) => setTimeout(r, 5));
    }
    return sent;
  },
});
