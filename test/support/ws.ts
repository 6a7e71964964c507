/** A raw `ws` test client that records every frame and the close. */
import { ROUTES } from 'herald-client/protocol';
import WebSocket from 'ws';

export interface WsMessage {
  op: string;
  [k: string]: unknown;
}

export interface WsClient {
  ws: WebSocket;
  messages: WsMessage[];
  /** Raw text of each frame, for byte-identity checks. */
  raw: string[];
  send(msg: unknown): void;
  waitFor(pred: (m: WsMessage) => boolean, timeoutMs?: number): Promise<WsMessage>;
  closed: Promise<{ code: number; reason: string }>;
  events(): number[];
}

export function openWs(url: string, headers: Record<string, string> = {}): Promise<WsClient> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url.replace(/^http/, 'ws') + (url.includes(ROUTES.ws) ? '' : ROUTES.ws), { headers });
    const messages: WsMessage[] = [];
    const raw: string[] = [];
    const waiters: { pred: (m: WsMessage) => boolean; resolve: (m: WsMessage) => void }[] = [];
    const closed = new Promise<{ code: number; reason: string }>((res) => ws.on('close', (code, reason) => res({ code, reason: reason.toString() })));
    ws.on('message', (data) => {
      const text = data.toString();
      raw.push(text);
      const m = JSON.parse(text) as WsMessage;
      messages.push(m);
      for (const w of [...waiters]) {
        if (w.pred(m)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(m);
        }
      }
    });
    ws.on('error', (err) => reject(err));
    ws.on('open', () =>
      resolve({
        ws,
        messages,
        raw,
        closed,
        send: (msg) => ws.send(typeof msg === 'string' ? msg : JSON.stringify(msg)),
        events: () => messages.filter((m) => m.op === 'event').map((m) => m.id as number),
        waitFor(pred, timeoutMs = 10_000) {
          const found = messages.find(pred);
          if (found) return Promise.resolve(found);
          return new Promise((res, rej) => {
            const t = setTimeout(() => rej(new Error(`ws message not seen in ${timeoutMs} ms; have ${JSON.stringify(messages.slice(-3))}`)), timeoutMs);
            waiters.push({
              pred,
              resolve: (m) => {
                clearTimeout(t);
                res(m);
              },
            });
          });
        },
      }),
    );
  });
}
