/**
 * One stream over any transport, for the cross-transport suite (test/gateway/transports.test.ts):
 * open it, collect its event ids and its position, see how it ended — the same handle whether
 * the events come over a raw WebSocket, SSE, polls, long-polls or the client library. Every
 * wait is on what the stream receives (an event, a checkpoint, an end), never on a timer.
 *
 * openStream() is one connection (for a poll: one run of requests, until one fails); follow()
 * reconnects from its position after every end that is worth retrying, as a client should
 * (the client library does it by itself), so its ids show whether anything was lost or
 * delivered twice across the reconnects.
 */
import http from 'node:http';
import type { Socket } from 'node:net';
import { connect, type HeraldConnection, type WebSocketConstructor } from 'herald-client';
import { backoffMs, isRetryable, type PollResponse, QUERY, ROUTES, SSE_EVENTS, type WireError, wireCodeOfClose } from 'herald-client/protocol';
import WebSocket from 'ws';

/** Every way a client can read a stream: the same test bodies run over each. */
export const TRANSPORTS = ['ws', 'sse', 'poll', 'long-poll', 'client'] as const;
export type TransportKind = (typeof TRANSPORTS)[number];

/** The server-side transport each kind goes through (the client library is a WebSocket client), as metrics label it. */
export const SERVER_TRANSPORT: Record<TransportKind, 'ws' | 'sse' | 'poll'> = { ws: 'ws', sse: 'sse', poll: 'poll', 'long-poll': 'poll', client: 'ws' };

/** Where to read from. */
export interface StreamOptions {
  topics: string[];
  since?: number | 'now';
  epoch?: string;
  /** A read token or a JWT: `token=` on every transport, or the `Authorization` header with `tokenIn: 'header'`. */
  token?: string;
  /** Where the token goes (default `query`); the client library sends it only as `token=`. */
  tokenIn?: 'query' | 'header';
  /** The client library's getToken (a fresh token when the server says the current one expired). */
  getToken?: () => string | Promise<string>;
  /** Polls: the most events per answer (`limit`). */
  limit?: number;
}

/** How a stream ended. */
export interface StreamEnd {
  /** The server's wire code, or `dropped` for a connection lost without one. */
  code: string;
  /** The resume position the end reported (close reason, error message or event, a poll's last `next`, the client's position). */
  position: number | undefined;
  /** The error's other fields (`oldest`, `head`, `epoch`, …), without code, message, retryable and position. */
  details: Record<string, unknown>;
  /** As the server sent it (undefined for a dropped connection). */
  retryable: boolean | undefined;
  /** The HTTP status when the end was an HTTP answer (a refused SSE stream, a poll, a refused WebSocket upgrade). */
  status?: number;
  /** How many event ids had arrived when it ended. */
  received: number;
}

/** A stream being read. */
export interface TestStream {
  readonly kind: TransportKind;
  /** Event ids, in arrival order. */
  readonly ids: number[];
  /** The position the client side knows: the last event id, checkpoint or `next` (the client library's own). */
  readonly position: number | undefined;
  /** Resolves when the server accepted the stream (`subscribed`, the first 200); rejects if it ends first. */
  readonly opened: Promise<void>;
  /** Every end so far (follow() goes on after each). */
  readonly ends: StreamEnd[];
  /** Resolves with the first end. */
  readonly ended: Promise<StreamEnd>;
  /** Polls: the most events one answer held. */
  readonly largestAnswer: number;
  /** Resolves once `holds()` is true, re-checked at each event, checkpoint and end. */
  until(holds: () => boolean, what: string, timeoutMs?: number): Promise<void>;
  /** Stops reading (a poller stops polling): to the server, a client that does not drain. */
  pause(): void;
  resume(): void;
  /** Cuts the connection as a network would (a poll loses its answer in flight). */
  drop(): void;
  /** Stops for good. */
  close(): void;
}

/** The shared bookkeeping of a TestStream: what arrived, and who waits for it. */
class Recorder {
  readonly ids: number[] = [];
  readonly ends: StreamEnd[] = [];
  position: number | undefined;
  largestAnswer = 0;
  private readonly waiters = new Set<() => void>();
  private markOpened!: () => void;
  private openFailed!: (err: Error) => void;
  private isOpen = false;
  readonly opened = new Promise<void>((resolve, reject) => {
    this.markOpened = resolve;
    this.openFailed = reject;
  });
  private markEnded!: (end: StreamEnd) => void;
  readonly ended = new Promise<StreamEnd>((resolve) => (this.markEnded = resolve));
  /** Called at every end, after the waiters (follow() reconnects from here). */
  onEnd: ((end: StreamEnd) => void) | undefined;
  /** Called at every event (follow()'s dropEvery counts here). */
  onEvent: (() => void) | undefined;

  constructor(since: number | 'now' | undefined) {
    if (typeof since === 'number') this.position = since;
    // Rejects only for a stream that ends before it opens: a test that expects that does not await it.
    this.opened.catch(() => undefined);
  }

  open(since: number): void {
    if (this.position === undefined) this.position = since;
    this.isOpen = true;
    this.markOpened();
    this.notify();
  }

  event(id: number): void {
    this.ids.push(id);
    this.position = id;
    this.notify();
    this.onEvent?.();
  }

  checkpoint(id: number): void {
    if (this.position === undefined || id > this.position) this.position = id;
    this.notify();
  }

  end(end: Omit<StreamEnd, 'received'>): void {
    const full = { ...end, received: this.ids.length };
    this.ends.push(full);
    this.markEnded(full);
    if (!this.isOpen) this.openFailed(new Error(`the stream ended before it opened: ${JSON.stringify(full)}`));
    this.notify();
    this.onEnd?.(full);
  }

  until(holds: () => boolean, what: string, timeoutMs = 30_000): Promise<void> {
    if (holds()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const check = () => {
        if (!holds()) return;
        clearTimeout(timer);
        this.waiters.delete(check);
        resolve();
      };
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what} (have ${this.ids.length} events, ends ${JSON.stringify(this.ends)})`));
      }, timeoutMs);
      this.waiters.add(check);
    });
  }

  private notify(): void {
    for (const check of [...this.waiters]) check();
  }
}

/** One connection (or run of polls) feeding a Recorder. */
interface Connection {
  pause(): void;
  resume(): void;
  drop(): void;
  close(): void;
}

/** An error object's fields beside the fixed ones. */
function detailsOf(error: object): Record<string, unknown> {
  const { code: _c, message: _m, retryable: _r, position: _p, op: _o, ...details } = error as Record<string, unknown>;
  return details;
}

function readQuery(opts: StreamOptions, since: number | 'now' | undefined): URLSearchParams {
  const q = new URLSearchParams();
  if (since !== undefined) q.set(QUERY.since, String(since));
  for (const t of opts.topics) q.append(QUERY.topic, t);
  if (opts.epoch) q.set(QUERY.epoch, opts.epoch);
  if (opts.token && opts.tokenIn !== 'header') q.set(QUERY.token, opts.token);
  return q;
}

/** The `Authorization` header, when the token goes there. */
function authHeader(opts: StreamOptions): Record<string, string> {
  return opts.token && opts.tokenIn === 'header' ? { authorization: `Bearer ${opts.token}` } : {};
}

/** An HTTP error answer's body, as an end. */
function httpEnd(status: number | undefined, text: string): Omit<StreamEnd, 'received'> {
  const { error } = JSON.parse(text) as { error: WireError };
  return { code: error.code, position: undefined, details: detailsOf(error), retryable: error.retryable, status };
}

function socketOf(ws: WebSocket): Socket {
  return (ws as unknown as { _socket: Socket })._socket;
}

/** A raw WebSocket: one `subscribe`, then frames until an error message or the close. */
function openWsConnection(url: string, opts: StreamOptions, rec: Recorder): Connection {
  const q = opts.token && opts.tokenIn !== 'header' ? `?${QUERY.token}=${encodeURIComponent(opts.token)}` : '';
  const ws = new WebSocket(`${url.replace(/^http/, 'ws')}${ROUTES.ws}${q}`, { headers: authHeader(opts) });
  let ended = false;
  const end = (e: Omit<StreamEnd, 'received'>) => {
    if (ended) return;
    ended = true;
    rec.end(e);
  };
  // A refused upgrade: its status and JSON body, as SSE and polls see them.
  ws.on('unexpected-response', (_req, res) => {
    let text = '';
    res.setEncoding('utf8');
    res.on('data', (chunk: string) => (text += chunk));
    res.on('end', () => {
      end(httpEnd(res.statusCode, text));
      ws.terminate();
    });
  });
  ws.on('open', () => ws.send(JSON.stringify({ op: 'subscribe', topics: opts.topics, since: rec.position ?? opts.since ?? 'now', epoch: opts.epoch })));
  ws.on('message', (data) => {
    const m = JSON.parse(String(data)) as { op: string; [k: string]: unknown };
    if (m.op === 'subscribed') rec.open(m.since as number);
    else if (m.op === 'event') rec.event(m.id as number);
    else if (m.op === 'checkpoint') rec.checkpoint(m.id as number);
    else if (m.op === 'error') {
      if (typeof m.position === 'number') rec.checkpoint(m.position);
      end({ code: String(m.code), position: m.position as number | undefined, details: detailsOf(m), retryable: m.retryable as boolean });
      ws.close();
    }
  });
  ws.on('close', (code, reason) => {
    const wire = wireCodeOfClose(code);
    let position: number | undefined;
    try {
      position = (JSON.parse(reason.toString()) as { position?: number }).position;
    } catch {
      // No Herald reason (a dropped connection).
    }
    if (position !== undefined) rec.checkpoint(position);
    end({ code: wire ?? 'dropped', position, details: {}, retryable: wire ? isRetryable(wire) : undefined });
  });
  ws.on('error', () => undefined);
  return {
    pause: () => socketOf(ws).pause(),
    resume: () => socketOf(ws).resume(),
    drop: () => ws.terminate(),
    close: () => {
      ended = true;
      ws.terminate();
    },
  };
}

/** A raw SSE request: a JSON error answer, or blocks until an `error` event or the end. */
function openSseConnection(url: string, opts: StreamOptions, rec: Recorder): Connection {
  const resume = rec.position;
  // Reconnecting, as EventSource does: Last-Event-ID carries the position.
  const headers: Record<string, string> = {
    accept: 'text/event-stream',
    ...authHeader(opts),
    ...(resume !== undefined ? { 'last-event-id': String(resume) } : {}),
  };
  let ended = false;
  let response: http.IncomingMessage | undefined;
  const end = (e: Omit<StreamEnd, 'received'>) => {
    if (ended) return;
    ended = true;
    rec.end(e);
  };
  const req = http.get(`${url}${ROUTES.stream}?${readQuery(opts, opts.since)}`, { headers }, (res) => {
    response = res;
    res.setEncoding('utf8');
    let buf = '';
    if (res.statusCode !== 200) {
      res.on('data', (chunk: string) => (buf += chunk));
      res.on('end', () => end(httpEnd(res.statusCode, buf)));
      return;
    }
    res.on('data', (chunk: string) => {
      buf += chunk;
      for (let at = buf.indexOf('\n\n'); at >= 0; at = buf.indexOf('\n\n')) {
        const block = buf.slice(0, at);
        buf = buf.slice(at + 2);
        const fields = new Map([...block.matchAll(/^(\w+): ?(.*)$/gm)].map((m) => [m[1]!, m[2]!]));
        const event = fields.get('event') ?? 'message';
        const data = fields.get('data');
        if (data === undefined) continue;
        const body = JSON.parse(data) as Record<string, unknown>;
        if (event === 'message') rec.event(body.id as number);
        else if (event === SSE_EVENTS.subscribed) rec.open(body.since as number);
        else if (event === SSE_EVENTS.checkpoint) rec.checkpoint(body.id as number);
        else if (event === SSE_EVENTS.error) {
          if (typeof body.position === 'number') rec.checkpoint(body.position);
          end({ code: String(body.code), position: body.position as number | undefined, details: detailsOf(body), retryable: body.retryable as boolean });
        }
      }
    });
    res.on('close', () => end({ code: 'dropped', position: undefined, details: {}, retryable: undefined }));
  });
  req.on('error', () => end({ code: 'dropped', position: undefined, details: {}, retryable: undefined }));
  return {
    pause: () => response?.pause(),
    resume: () => response?.resume(),
    drop: () => req.destroy(),
    close: () => {
      ended = true;
      req.destroy();
    },
  };
}

/** Polls (`wait` > 0 for long-polls) from the position, each from the last `next`, until one fails. */
function openPollConnection(url: string, opts: StreamOptions, rec: Recorder, waitS: number): Connection {
  let stopped = false;
  let inFlight: AbortController | undefined;
  let paused: { promise: Promise<void>; resolve: () => void } | undefined;
  let answered = false;
  const end = (e: Omit<StreamEnd, 'received'>) => {
    if (!stopped) rec.end(e);
    stopped = true;
  };
  void (async () => {
    for (;;) {
      if (paused) await paused.promise;
      if (stopped) return;
      const q = readQuery(opts, rec.position ?? opts.since);
      if (opts.limit) q.set(QUERY.limit, String(opts.limit));
      // A long-poller's first request answers at once (that is how it learns it was
      // accepted, and where the log stands); then it waits on the server.
      if (waitS > 0 && answered) q.set(QUERY.wait, String(waitS));
      inFlight = new AbortController();
      let status: number;
      let body: PollResponse | { error: WireError };
      try {
        const res = await fetch(`${url}${ROUTES.events}?${q}`, { signal: inFlight.signal, headers: authHeader(opts) });
        status = res.status;
        body = (await res.json()) as typeof body;
      } catch {
        // Aborted (a dropped answer) or refused (the server is gone).
        return end({ code: 'dropped', position: rec.position, details: {}, retryable: undefined });
      }
      if (stopped) return;
      if ('error' in body) {
        return end({ code: body.error.code, position: rec.position, details: detailsOf(body.error), retryable: body.error.retryable, status });
      }
      answered = true;
      rec.open(body.next);
      rec.largestAnswer = Math.max(rec.largestAnswer, body.events.length);
      for (const e of body.events) rec.event(e.id);
      rec.checkpoint(body.next);
      // A poller with nothing new asks again a moment later (a long-poll waits on the server).
      if (!q.has(QUERY.wait) && body.events.length === 0) await new Promise((r) => setTimeout(r, 20));
    }
  })();
  return {
    pause: () => {
      let resolve!: () => void;
      const promise = new Promise<void>((r) => (resolve = r));
      paused = { promise, resolve };
    },
    resume: () => {
      paused?.resolve();
      paused = undefined;
    },
    drop: () => inFlight?.abort(),
    close: () => {
      stopped = true;
      inFlight?.abort();
      paused?.resolve();
    },
  };
}

/** A `ws` WebSocket that remembers the latest instance, so a test can pause or cut it like a network would. */
function trackedWebSocket(): { Ctor: WebSocketConstructor; latest: () => WebSocket | undefined } {
  let latest: WebSocket | undefined;
  class Tracked extends WebSocket {
    constructor(url: string) {
      super(url);
      latest = this;
    }
  }
  return { Ctor: Tracked as unknown as WebSocketConstructor, latest: () => latest };
}

/** The client library: one connect() that reconnects by itself; each reconnect it schedules is an end. */
function openClient(url: string, opts: StreamOptions, rec: Recorder): Connection {
  const { Ctor, latest } = trackedWebSocket();
  const conn: HeraldConnection = connect({
    url,
    topics: opts.topics,
    since: opts.since,
    epoch: opts.epoch,
    token: opts.token,
    ...(opts.getToken ? { getToken: opts.getToken } : {}),
    WebSocket: Ctor,
    backoff: { initialMs: 10, maxMs: 200 },
    onEvent: (e) => rec.event(e.id),
    onCheckpoint: (id) => rec.checkpoint(id),
    onStateChange: (state) => {
      if (state === 'open') rec.open(conn.position ?? 0);
    },
    onReconnect: (info) =>
      rec.end({ code: info.code ?? 'dropped', position: conn.position, details: {}, retryable: info.code ? isRetryable(info.code) : undefined }),
    onError: (err) => {
      const { position, ...details } = err.details;
      rec.end({ code: err.code, position: position as number | undefined, details, retryable: err.retryable });
    },
  });
  return {
    pause: () => {
      const ws = latest();
      if (ws) socketOf(ws).pause();
    },
    resume: () => {
      const ws = latest();
      if (ws) socketOf(ws).resume();
    },
    drop: () => latest()?.terminate(),
    close: () => conn.close(),
  };
}

function openConnection(kind: TransportKind, url: string, opts: StreamOptions, rec: Recorder): Connection {
  if (kind === 'client') return openClient(url, opts, rec);
  if (kind === 'ws') return openWsConnection(url, opts, rec);
  if (kind === 'sse') return openSseConnection(url, opts, rec);
  return openPollConnection(url, opts, rec, kind === 'long-poll' ? 10 : 0);
}

/** The TestStream over a Recorder and its current connection; `close` defaults to closing that connection. */
function handle(kind: TransportKind, rec: Recorder, current: () => Connection, close: () => void = () => current().close()): TestStream {
  return {
    kind,
    ids: rec.ids,
    ends: rec.ends,
    opened: rec.opened,
    ended: rec.ended,
    // The client library's position moves through onCheckpoint too (close reasons, errors).
    get position() {
      return rec.position;
    },
    get largestAnswer() {
      return rec.largestAnswer;
    },
    until: (holds, what, timeoutMs) => rec.until(holds, what, timeoutMs),
    pause: () => current().pause(),
    resume: () => current().resume(),
    drop: () => current().drop(),
    close,
  };
}

/** One stream over `kind` from `baseUrl`: it stops at its first end (the client library is closed there too). */
export function openStream(kind: TransportKind, baseUrl: string, opts: StreamOptions): TestStream {
  const rec = new Recorder(opts.since);
  const connection = openConnection(kind, baseUrl, opts, rec);
  if (kind === 'client') void rec.ended.then(() => connection.close());
  return handle(kind, rec, () => connection);
}

/** How follow() misbehaves on purpose. */
export interface FollowOptions {
  /** Cuts the connection (drop()) after every this many events: each cut must be resumed from the position. */
  dropEvery?: number;
}

/**
 * A stream over `kind` that resumes from its position after every end worth retrying (a
 * retryable code or a dropped connection), with the protocol's backoff, until close() or an
 * end that retrying cannot fix. The client library resumes by itself.
 */
export function follow(kind: TransportKind, baseUrl: string, opts: StreamOptions, { dropEvery }: FollowOptions = {}): TestStream {
  const rec = new Recorder(opts.since);
  if (dropEvery) {
    let count = 0;
    // After the event has been handled (a poll's whole answer, a WebSocket's whole chunk).
    rec.onEvent = () => {
      if (++count % dropEvery === 0) queueMicrotask(() => stream.drop());
    };
  }
  const stream = followWith(kind, baseUrl, opts, rec);
  return stream;
}

function followWith(kind: TransportKind, baseUrl: string, opts: StreamOptions, rec: Recorder): TestStream {
  // The client library resumes by itself.
  if (kind === 'client') {
    const connection = openConnection(kind, baseUrl, opts, rec);
    return handle(kind, rec, () => connection);
  }
  let stopped = false;
  let connection = openConnection(kind, baseUrl, opts, rec);
  let attempt = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  void rec.opened.then(() => (attempt = 0));
  rec.onEnd = (end) => {
    if (stopped || end.retryable === false) return;
    timer = setTimeout(
      () => {
        if (!stopped) connection = openConnection(kind, baseUrl, opts, rec);
      },
      backoffMs(attempt++, 100, 5),
    );
  };
  return handle(
    kind,
    rec,
    () => connection,
    () => {
      stopped = true;
      clearTimeout(timer);
      connection.close();
    },
  );
}
