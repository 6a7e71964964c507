/**
 * connect(): a WebSocket subscription that survives disconnects. It resumes from the last
 * delivered id (or a later checkpoint) with capped, jittered backoff, drops any id it has
 * already delivered, and stops on errors that retrying cannot fix (cursor_expired,
 * epoch_mismatch, cursor_ahead, forbidden, bad_request, unauthorized, and in Node a refused
 * upgrade), reporting them to the caller.
 * Works in browsers (global WebSocket) and in Node (the `ws` package).
 */

/** An event as delivered to `onEvent`. */
export interface HeraldEvent<T = unknown> {
  id: number;
  topic: string;
  type: string;
  data: T;
  at: string;
}

export type ClientState = 'connecting' | 'open' | 'reconnecting' | 'closed';

/** Why the connection is about to reconnect, and when (`onReconnect`). */
export interface ReconnectInfo {
  /** 1 for the first retry after a working connection, then 2, 3, … until one is subscribed again. */
  attempt: number;
  /** Wait before this attempt, in ms (jitter included). */
  delayMs: number;
  /** One line for people: `server: shutting_down`, `connection closed: 1006`, `connection failed: connect ECONNREFUSED …`. */
  reason: string;
  /** The server's wire code when the server said why (`shutting_down`, `slow_consumer`, `unavailable`, …). */
  code?: string;
}

/** An error the server reported that ends the subscription (the caller decides what next). */
export class HeraldClientError extends Error {
  override readonly name = 'HeraldClientError';
  constructor(
    /** Wire code: cursor_expired, epoch_mismatch, cursor_ahead, forbidden, bad_request, … */
    readonly code: string,
    message: string,
    /** The rest of the error frame (`oldest`, `head`, `epoch`, `position`, …). */
    readonly details: Record<string, unknown>,
  ) {
    super(message);
  }
}

/** Minimal WebSocket surface shared by browsers and `ws`. */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

export interface ConnectOptions<T = unknown> {
  /** `ws(s)://host/v1/ws`, or the server's `http(s)://host` base URL. */
  url: string;
  /** Topic filter entries (`job:42`, `package:*`, `*`). */
  topics: string[];
  /** Start after this id (exclusive), or `now` (default). */
  since?: number | 'now';
  /** The epoch the `since` cursor belongs to, if known (checked by the server). */
  epoch?: string;
  /** Read token for private topics (sent as `?token=`). */
  token?: string;
  onEvent(event: HeraldEvent<T>): void;
  onCheckpoint?(id: number): void;
  /** A fatal error: the connection is closed and will not reconnect. */
  onError?(error: HeraldClientError): void;
  onStateChange?(state: ClientState): void;
  /** Called each time a reconnect is scheduled, with the reason and the delay (after `onStateChange('reconnecting')`). */
  onReconnect?(info: ReconnectInfo): void;
  /** Reconnect backoff: starts at `initialMs` (default 100), doubles to `maxMs` (default 10 s), with jitter. */
  backoff?: { initialMs?: number; maxMs?: number };
  /** WebSocket implementation; defaults to the global one, or `ws` in Node. */
  WebSocket?: WebSocketConstructor;
}

export interface HeraldConnection {
  readonly state: ClientState;
  /** Resume point: every matching event up to it has been delivered. Undefined until known. */
  readonly position: number | undefined;
  readonly epoch: string | undefined;
  /** Resolves at the first `subscribed` acknowledgement; rejects if the connection fails fatally first. */
  readonly ready: Promise<void>;
  close(): void;
}

/** Server error codes after which retrying the same subscription cannot succeed. */
const FATAL = new Set(['cursor_expired', 'epoch_mismatch', 'cursor_ahead', 'forbidden', 'bad_request', 'unauthorized', 'not_found']);

/** Close codes the server sends with a meaning of its own (docs/protocol.md "Close codes"), as wire codes. */
const CLOSE_CODE_WIRE: Record<number, string> = { 1001: 'shutting_down', 1008: 'rate_limited', 4008: 'slow_consumer' };

function wsUrl(url: string, token: string | undefined): string {
  const u = new URL(url);
  if (u.protocol === 'http:') u.protocol = 'ws:';
  if (u.protocol === 'https:') u.protocol = 'wss:';
  if (u.pathname === '/' || u.pathname === '') u.pathname = '/v1/ws';
  if (token) u.searchParams.set('token', token);
  return u.toString();
}

async function defaultWebSocket(): Promise<WebSocketConstructor> {
  const g = (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  if (g) return g;
  const mod = (await import('ws')) as unknown as { WebSocket: WebSocketConstructor };
  return mod.WebSocket;
}

export function connect<T = unknown>(opts: ConnectOptions<T>): HeraldConnection {
  const initialMs = opts.backoff?.initialMs ?? 100;
  const maxMs = opts.backoff?.maxMs ?? 10_000;
  let state = 'connecting' as ClientState;
  // A function, not an inline comparison: TypeScript would keep the narrowed state across awaits.
  const closed = () => state === 'closed';
  let position: number | undefined = typeof opts.since === 'number' ? opts.since : undefined;
  let epoch = opts.epoch;
  let socket: WebSocketLike | null = null;
  let attempt = 0;
  let timer: ReturnType<typeof setTimeout> | null = null;
  // Why the current socket is ending, for onReconnect: the server's error code that made us
  // close it, or the error the socket reported (Node's `ws` says what failed; browsers do not).
  let retryCode: string | undefined;
  let socketError: string | undefined;
  let resolveReady!: () => void;
  let rejectReady!: (err: Error) => void;
  const ready = new Promise<void>((res, rej) => {
    resolveReady = res;
    rejectReady = rej;
  });
  // A caller that never awaits `ready` must not see an unhandled rejection.
  ready.catch(() => undefined);

  const setState = (s: ClientState) => {
    if (state === s) return;
    state = s;
    opts.onStateChange?.(s);
  };

  const fail = (err: HeraldClientError) => {
    setState('closed');
    socket?.close(1000);
    socket = null;
    rejectReady(err);
    opts.onError?.(err);
  };

  const scheduleReconnect = (reason: string, code: string | undefined) => {
    if (closed()) return;
    setState('reconnecting');
    const base = Math.min(maxMs, initialMs * 2 ** Math.min(attempt, 20));
    attempt++;
    const delayMs = base * (0.5 + Math.random() / 2);
    timer = setTimeout(() => {
      timer = null;
      void open();
    }, delayMs);
    opts.onReconnect?.({ attempt, delayMs: Math.round(delayMs), reason, ...(code ? { code } : {}) });
  };

  const onMessage = (raw: string) => {
    let msg: { op?: string; [k: string]: unknown };
    try {
      msg = JSON.parse(raw);
    } catch {
      return;
    }
    switch (msg.op) {
      case 'event': {
        const id = msg.id as number;
        // Never deliver an id twice, whatever the server or a reconnect does.
        if (position !== undefined && id <= position) return;
        position = id;
        const { op: _op, ...event } = msg;
        opts.onEvent(event as unknown as HeraldEvent<T>);
        return;
      }
      case 'checkpoint': {
        const id = msg.id as number;
        if (position === undefined || id > position) {
          position = id;
          opts.onCheckpoint?.(id);
        }
        return;
      }
      case 'subscribed':
        epoch = msg.epoch as string;
        if (position === undefined) position = msg.since as number;
        attempt = 0;
        setState('open');
        resolveReady();
        return;
      case 'error': {
        const { op: _op, code, message, ...details } = msg;
        const err = new HeraldClientError(String(code), String(message), details);
        if (FATAL.has(err.code)) fail(err);
        else {
          // Anything else (the database restarting…): start over from our position.
          retryCode = err.code;
          socket?.close(4000, 'retry');
        }
        return;
      }
      default:
        return;
    }
  };

  const open = async () => {
    if (closed()) return;
    let Ctor: WebSocketConstructor;
    try {
      Ctor = opts.WebSocket ?? (await defaultWebSocket());
    } catch (err) {
      fail(new HeraldClientError('no_websocket', `no WebSocket implementation: ${(err as Error).message}`, {}));
      return;
    }
    if (closed()) return;
    const ws = new Ctor(wsUrl(opts.url, opts.token));
    socket = ws;
    retryCode = undefined;
    socketError = undefined;
    let opened = false;
    ws.onopen = () => {
      opened = true;
      const since = position ?? opts.since ?? 'now';
      ws.send(JSON.stringify({ op: 'subscribe', topics: opts.topics, since, ...(epoch ? { epoch } : {}) }));
    };
    ws.onmessage = (ev) => {
      if (socket === ws) onMessage(typeof ev.data === 'string' ? ev.data : String(ev.data));
    };
    ws.onerror = (ev) => {
      // Node's `ws` reports a refused upgrade with its status; retrying cannot fix 401/403/404.
      // (Browsers do not expose the status: there the client keeps retrying with backoff.)
      const message = (ev as { message?: unknown } | null)?.message;
      if (typeof message === 'string' && message !== '' && socket === ws) socketError = message;
      const m = /Unexpected server response: (40[134])/.exec(String(message ?? ''));
      if (m && socket === ws) {
        const code = { '401': 'unauthorized', '403': 'forbidden', '404': 'not_found' }[m[1] as '401' | '403' | '404'];
        fail(new HeraldClientError(code, `the server refused the connection (${m[1]})`, {}));
        return;
      }
      // A connection that failed before opening: some implementations (Node 22's built-in
      // WebSocket, nodejs/undici#3546) fire `error` and never `close`. Treat it as closed
      // here; the `close` that other implementations send next finds the socket replaced.
      if (!opened && socket === ws) {
        socket = null;
        try {
          ws.close();
        } catch {
          // Closing a socket that never opened may throw; it is abandoned either way.
        }
        scheduleReconnect(`connection failed: ${socketError ?? 'error'}`, undefined);
      }
    };
    ws.onclose = (ev) => {
      if (socket !== ws) return;
      socket = null;
      const code = retryCode ?? CLOSE_CODE_WIRE[ev.code];
      if (code) scheduleReconnect(`server: ${code}`, code);
      else if (!opened && socketError) scheduleReconnect(`connection failed: ${socketError}`, undefined);
      else scheduleReconnect(`connection closed: ${ev.code}`, undefined);
    };
  };

  void open();

  return {
    get state() {
      return state;
    },
    get position() {
      return position;
    },
    get epoch() {
      return epoch;
    },
    ready,
    close() {
      if (timer) clearTimeout(timer);
      timer = null;
      setState('closed');
      const ws = socket;
      socket = null;
      ws?.close(1000);
      rejectReady(new HeraldClientError('closed', 'connection closed before it was subscribed', {}));
    },
  };
}
