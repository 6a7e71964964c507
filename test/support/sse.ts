/** A minimal real SSE client over node:http, for tests. */
import http from 'node:http';

export interface SseMessage {
  event: string;
  id: string | undefined;
  data: string;
}

export interface SseClient {
  status: number;
  messages: SseMessage[];
  /** Comment lines (heartbeats) received. */
  comments: () => number;
  /** Resolves when a message satisfying `pred` has arrived (checks earlier ones too). */
  waitFor(pred: (m: SseMessage) => boolean, timeoutMs?: number): Promise<SseMessage>;
  /** Resolves when the server ends the stream. */
  ended: Promise<void>;
  /** Drops the connection abruptly. */
  destroy(): void;
}

export function openSse(url: string, headers: Record<string, string> = {}): Promise<SseClient> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { headers: { accept: 'text/event-stream', ...headers } }, (res) => {
      const messages: SseMessage[] = [];
      let comments = 0;
      const waiters: { pred: (m: SseMessage) => boolean; resolve: (m: SseMessage) => void }[] = [];
      let buf = '';
      let endResolve!: () => void;
      const ended = new Promise<void>((r) => (endResolve = r));
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        buf += chunk;
        let idx: number;
        while ((idx = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, idx);
          buf = buf.slice(idx + 2);
          const m: SseMessage = { event: 'message', id: undefined, data: '' };
          const data: string[] = [];
          let any = false;
          for (const line of block.split('\n')) {
            if (line.startsWith(':')) comments++;
            if (line.startsWith(':') || line === '') continue;
            const colon = line.indexOf(':');
            const field = colon < 0 ? line : line.slice(0, colon);
            const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
            if (field === 'event') m.event = value;
            else if (field === 'id') m.id = value;
            else if (field === 'data') data.push(value);
            else continue;
            any = true;
          }
          if (!any || (data.length === 0 && m.event === 'message')) continue;
          m.data = data.join('\n');
          messages.push(m);
          for (const w of [...waiters]) {
            if (w.pred(m)) {
              waiters.splice(waiters.indexOf(w), 1);
              w.resolve(m);
            }
          }
        }
      });
      res.on('end', endResolve);
      res.on('close', endResolve);
      res.on('error', endResolve);
      resolve({
        status: res.statusCode ?? 0,
        messages,
        comments: () => comments,
        ended,
        destroy: () => req.destroy(),
        waitFor(pred, timeoutMs = 10_000) {
          const found = messages.find(pred);
          if (found) return Promise.resolve(found);
          return new Promise((res2, rej2) => {
            const t = setTimeout(() => rej2(new Error(`SSE message not seen within ${timeoutMs} ms (have ${messages.length})`)), timeoutMs);
            waiters.push({
              pred,
              resolve: (m) => {
                clearTimeout(t);
                res2(m);
              },
            });
          });
        },
      });
    });
    req.on('error', reject);
  });
}

/** The ids of the `message` events received so far. */
export function eventIds(c: SseClient): number[] {
  return c.messages.filter((m) => m.event === 'message').map((m) => JSON.parse(m.data).id as number);
}
