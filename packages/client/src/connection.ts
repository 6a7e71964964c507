/**
 * connect(): a WebSocket subscription that survives disconnects. It resumes from the last
 * delivered id (or a later checkpoint) with capped, jittered backoff, drops any id it has
 * already delivered, and stops on errors that retrying cannot fix, reporting them to the
 * caller. Which errors those are is the server's to say: every error carries `retryable`,
 * and close codes and refused upgrades are looked up in the wire module's one table
 * (protocol.ts), so this file keeps no list of its own. With `getToken` it refreshes an
 * expired JWT over the same connection (`auth`) and resumes, once per expiry.
 * Works in browsers (global WebSocket) and in Node (the `ws` package).
 */
import {
  type AuthMessage,
  BACKOFF_INITIAL_MS,
  backoffMs,
  type CloseReason,
  type HeraldEvent,
  isRetryable,
  QUERY,
  ROUTES,
  type SubscribeMessage,
  type WsServerMessage,
  wireCodeOfClose,
  wireCodeOfStatus,
} from './protocol.js';

export type { HeraldEvent } from './protocol.js';

/** Where a connection is: `connecting` (initial, not reported), `open`, `reconnecting`, `closed`. */
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
  /** Whether the same subscription may succeed later: false for every error that reaches `onError`. */
  readonly retryable: boolean;
  constructor(
    /** Wire code: cursor_expired, epoch_mismatch, cursor_ahead, forbidden, bad_request, … */
    readonly code: string,
    message: string,
    /** The rest of the error frame (`oldest`, `head`, `epoch`, `position`, …). */
    readonly details: Record<string, unknown>,
    retryable?: unknown,
  ) {
    super(message);
    this.retryable = isRetryable(code, retryable);
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
/** A WebSocket class: the global one, `ws`'s, or a test's. */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

/** What connect() is given: where, what, from where, and the callbacks. */
export interface ConnectOptions<T = unknown> {
  /** `ws(s)://host/v1/ws`, or the server's `http(s)://host` base URL. */
  url: string;
  /** Topic filter entries (`job:42`, `package:*`, `*`). */
  topics: string[];
  /** Start after this id (exclusive), or `now` (default). */
  since?: number | 'now';
  /** The epoch the `since` cursor belongs to, if known (checked by the server). */
  epoch?: string;
  /** A read token or a JWT, for private topics (sent as `?token=`). */
  token?: string;
  /**
   * Returns a fresh token (a JWT) when the server says the one in use expired
   * (`token_expired`, or a refused upgrade): the client sends it over the same connection
   * (`auth`) and resumes from its position. Asked once per expiry: a second expiry before a
   * stream is running again is fatal, as is a token the server refuses. Also asked for the
   * first connection when `token` is not given.
   */
  getToken?(): string | Promise<string>;
  /** Each matching event, in id order, each id once. */
  onEvent(event: HeraldEvent<T>): void;
  /**
   * The position moved without an event (past events the filter did not want): a
   * checkpoint, or the position a retryable error or a close reported. Store it with the epoch.
   */
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

/** A live subscription: its state and resume point, and close(). */
export interface HeraldConnection {
  readonly state: ClientState;
  /** Resume point: every matching event up to it has been delivered. Undefined until known. */
  readonly position: number | undefined;
  readonly epoch: string | undefined;
  /** Resolves at the first `subscribed` acknowledgement; rejects if the connection fails fatally first. */
  readonly ready: Promise<void>;
  close(): void;
}

/** The WebSocket URL for `url` (an http(s) base URL gets ws(s) and the `/v1/ws` route). */
function wsUrl(url: string, token: string | undefined): string {
  const u = new URL(url);
  if (u.protocol === 'http:') u.protocol = 'ws:';
  if (u.protocol === 'https:') u.protocol = 'wss:';
  if (u.pathname === '/' || u.pathname === '') u.pathname = ROUTES.ws;
  if (token) u.searchParams.set(QUERY.token, token);
  return u.toString();
}

/** The message of anything thrown (the client cannot use the server's coerceError). */
function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** The JSON of a Herald close reason, or {} for another peer's text (or none). */
function parseCloseReason(reason: string): Partial<CloseReason> {
  try {
    const parsed: unknown = JSON.parse(reason);
    return typeof parsed === 'object' && parsed !== null ? (parsed as Partial<CloseReason>) : {};
  } catch {
    return {};
  }
}

async function defaultWebSocket(): Promise<WebSocketConstructor> {
  const g = (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  if (g) return g;
  const mod = (await import('ws')) as unknown as { WebSocket: WebSocketConstructor };
  return mod.WebSocket;
}

/** Opens a subscription that reconnects and resumes by itself until close() or a fatal error. */
export function connect<T = unknown>(opts: ConnectOptions<T>): HeraldConnection {
  const initialMs = opts.backoff?.initialMs ?? BACKOFF_INITIAL_MS;
  const maxMs = opts.backoff?.maxMs ?? 10_000;
  let state = 'connecting' as ClientState;
  // A function, not an inline comparison: TypeScript would keep the narrowed state across awaits.
  const closed = () => state === 'closed';
  let position: number | undefined = typeof opts.since === 'number' ? opts.since : undefined;
  let epoch = opts.epoch;
  let socket: WebSocketLike | null = null;
  let token = opts.token;
  // True from a refresh (getToken) until a stream runs again: a second expiry then is fatal,
  // so a getToken that hands out stale tokens cannot loop.
  let refreshed = false;
  // Set by a refresh after token_expired: the `authed` answer resumes the stream.
  let resubscribeOnAuth = false;
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

  /**
   * Moves a known position up to a stream's own (an error's or a close reason's `position`):
   * every matching event up to it was sent before the message that reports it, so it has
   * arrived, and resuming there skips the events the filter did not want.
   */
  const advance = (to: unknown) => {
    if (position === undefined || typeof to !== 'number' || to <= position) return;
    position = to;
    opts.onCheckpoint?.(to);
  };

  const scheduleReconnect = (reason: string, code: string | undefined) => {
    if (closed()) return;
    setState('reconnecting');
    const delayMs = backoffMs(attempt, maxMs, initialMs);
    attempt++;
    timer = setTimeout(() => {
      timer = null;
      void open();
    }, delayMs);
    opts.onReconnect?.({ attempt, delayMs, reason, ...(code ? { code } : {}) });
  };

  const sendSubscribe = (ws: WebSocketLike) => {
    const subscribe: SubscribeMessage = { op: 'subscribe', topics: opts.topics, since: position ?? opts.since ?? 'now', ...(epoch ? { epoch } : {}) };
    ws.send(JSON.stringify(subscribe));
  };

  /** The stream ended with token_expired: a new token over the same connection, then `subscribe` again on `authed`. */
  const refresh = async (ws: WebSocketLike) => {
    refreshed = true;
    let fresh: string;
    try {
      fresh = await opts.getToken!();
    } catch (err) {
      if (socket === ws) fail(new HeraldClientError('token_expired', `the token expired and getToken() failed: ${messageOf(err)}`, {}, false));
      return;
    }
    if (socket !== ws || closed()) return;
    token = fresh;
    resubscribeOnAuth = true;
    const auth: AuthMessage = { op: 'auth', token: fresh };
    ws.send(JSON.stringify(auth));
  };

  const onMessage = (raw: string) => {
    let msg: WsServerMessage<T>;
    try {
      msg = JSON.parse(raw);
    } catch {
      return;
    }
    switch (msg.op) {
      case 'event': {
        // Never deliver an id twice, whatever the server or a reconnect does.
        if (position !== undefined && msg.id <= position) return;
        position = msg.id;
        const { op: _op, ...event } = msg;
        opts.onEvent(event);
        return;
      }
      case 'checkpoint':
        if (position === undefined || msg.id > position) {
          position = msg.id;
          opts.onCheckpoint?.(msg.id);
        }
        return;
      case 'subscribed':
        epoch = msg.epoch;
        if (position === undefined) position = msg.since;
        attempt = 0;
        refreshed = false;
        setState('open');
        resolveReady();
        return;
      case 'authed':
        if (resubscribeOnAuth && socket) {
          resubscribeOnAuth = false;
          sendSubscribe(socket);
        }
        return;
      case 'error': {
        const { op: _op, code, message, retryable, ...details } = msg;
        const err = new HeraldClientError(String(code), String(message), details, retryable);
        if (err.code === 'token_expired' && opts.getToken && !refreshed && socket) {
          advance(details.position);
          void refresh(socket);
        } else if (!err.retryable) fail(err);
        else {
          // Anything else (the database restarting…): start over from our position, or the
          // stream's if it got further.
          advance(details.position);
          retryCode = err.code;
          socket?.close(1000, 'retry');
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
      fail(new HeraldClientError('no_websocket', `no WebSocket implementation: ${messageOf(err)}`, {}, false));
      return;
    }
    if (closed()) return;
    if (token === undefined && opts.getToken) {
      try {
        token = await opts.getToken();
      } catch (err) {
        scheduleReconnect(`getToken() failed: ${messageOf(err)}`, undefined);
        return;
      }
      if (closed()) return;
    }
    const ws = new Ctor(wsUrl(opts.url, token));
    socket = ws;
    retryCode = undefined;
    socketError = undefined;
    let opened = false;
    ws.onopen = () => {
      opened = true;
      resubscribeOnAuth = false;
      sendSubscribe(ws);
    };
    ws.onmessage = (ev) => {
      if (socket === ws) onMessage(typeof ev.data === 'string' ? ev.data : String(ev.data));
    };
    ws.onerror = (ev) => {
      // Node's `ws` reports a refused upgrade with its status: a status that names one wire
      // code that retrying cannot fix (401, 403, 404, …) is fatal; 503 and the like are retried.
      // (Browsers do not expose the status: there the client keeps retrying with backoff.)
      const message = (ev as { message?: unknown } | null)?.message;
      if (typeof message === 'string' && message !== '' && socket === ws) socketError = message;
      const status = /Unexpected server response: (\d{3})/.exec(String(message ?? ''))?.[1];
      const refused = status === undefined ? undefined : wireCodeOfStatus(Number(status));
      if (refused === 'unauthorized' && opts.getToken && !refreshed && socket === ws) {
        // The token was refused before a stream ran (a key rotated, a token that went stale
        // while disconnected): one new token, then connect again.
        refreshed = true;
        token = undefined;
        socket = null;
        scheduleReconnect(`server: unauthorized (${status}): getting a new token`, refused);
        return;
      }
      if (refused !== undefined && !isRetryable(refused) && socket === ws) {
        fail(new HeraldClientError(refused, `the server refused the connection (${status})`, {}, false));
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
      const code = retryCode ?? wireCodeOfClose(ev.code);
      const { message, ...details } = parseCloseReason(ev.reason);
      if (code && !isRetryable(code)) {
        // A close that retrying cannot fix (1009: our subscribe is over the server's limit).
        fail(new HeraldClientError(code, message ?? `the server closed the connection (${ev.code})`, details, false));
      } else if (code) {
        advance(details.position);
        scheduleReconnect(`server: ${code}`, code);
      } else if (!opened && socketError) scheduleReconnect(`connection failed: ${socketError}`, undefined);
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
      rejectReady(new HeraldClientError('closed', 'connection closed before it was subscribed', {}, false));
    },
  };
}
