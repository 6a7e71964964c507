/**
 * The Herald wire protocol, in one module with no dependencies: the routes, the query and
 * header names, the WebSocket operations and message shapes, the SSE event names, the HTTP
 * bodies, and the wire error codes with their HTTP status, WebSocket close code and whether
 * retrying can help. The server (src/errors.ts, src/gateway/) and the client
 * (connection.ts) both import it, so neither keeps a copy of the other's tables. Published
 * as `herald-client/protocol` for other clients; docs/protocol.md and docs/errors.md
 * describe every name here in prose.
 */

// ---- Routes, parameters, headers --------------------------------------------------------

/** Every HTTP route of the protocol (`/v1/…`) and of operations (probes, Prometheus). */
export const ROUTES = {
  head: '/v1/head',
  events: '/v1/events',
  stream: '/v1/events/stream',
  ws: '/v1/ws',
  healthz: '/healthz',
  readyz: '/readyz',
  metrics: '/metrics',
} as const;

/**
 * Query parameter names of the read routes (`GET /v1/events`, `/v1/events/stream`; `token`
 * also on the `/v1/ws` upgrade). `token` carries a read token or a JWT where a header cannot
 * be set (EventSource, the browser WebSocket); `Authorization: Bearer` wins over it.
 */
export const QUERY = {
  since: 'since',
  topic: 'topic',
  limit: 'limit',
  wait: 'wait',
  epoch: 'epoch',
  token: 'token',
} as const;

/** Header names the protocol reads or sets, lower-case as Node's `http` hands them over. */
export const HEADERS = {
  authorization: 'authorization',
  /** Sent by EventSource when it reconnects; wins over `since` on `/v1/events/stream`. */
  lastEventId: 'last-event-id',
  /** On every 503: seconds to wait before retrying. */
  retryAfter: 'retry-after',
} as const;

/** The `since` that starts at the database's head (the default). */
export const SINCE_NOW = 'now';

/** Largest position: ids are JSON numbers, exact up to 2^53 − 1. */
export const MAX_POSITION = Number.MAX_SAFE_INTEGER;

// ---- Events and HTTP bodies -------------------------------------------------------------

/** An event as every transport delivers it (the WebSocket frame adds `"op":"event"`). */
export interface HeraldEvent<T = unknown> {
  /** Global id, assigned in commit order; also a position. */
  id: number;
  topic: string;
  type: string;
  data: T;
  /** ISO 8601 UTC with milliseconds. */
  at: string;
}

/** `GET /v1/head`. */
export interface HeadResponse {
  epoch: string;
  head: number;
  oldest: number;
}

/** `GET /v1/events` (poll and long-poll). `next` is the `since` to send next, even when `events` is empty. */
export interface PollResponse<T = unknown> {
  epoch: string;
  events: HeraldEvent<T>[];
  next: number;
  head: number;
}

// ---- WebSocket ----------------------------------------------------------------------------

/** Starts a new stream after `since` (a position or `now`), replacing the current one. */
export interface SubscribeMessage {
  op: 'subscribe';
  topics: string[];
  since?: number | string;
  epoch?: string;
}

/** Removes entries from the current stream's filter; the rest continues from its position. */
export interface UnsubscribeMessage {
  op: 'unsubscribe';
  topics: string[];
}

/** Answered with `pong`: a liveness check for clients that cannot send ping frames. */
export interface PingMessage {
  op: 'ping';
}

/**
 * Replaces the connection's credentials without reconnecting (a refreshed JWT, or a read
 * token): answered with `authed`, or an `error` (`unauthorized`, `token_expired`) that leaves
 * the previous credentials in place. A running stream goes on under the new grants from its
 * position (a `subscribed` follows the `authed`).
 */
export interface AuthMessage {
  op: 'auth';
  token: string;
}

/** What a WebSocket client sends. */
export type WsClientMessage = SubscribeMessage | UnsubscribeMessage | PingMessage | AuthMessage;

/** Every `op` a client may send, in the order error messages name them. */
export const WS_CLIENT_OPS: readonly WsClientMessage['op'][] = ['subscribe', 'unsubscribe', 'ping', 'auth'];

/** Answers `subscribe` and `unsubscribe`: where the stream starts and what it holds. */
export interface SubscribedMessage {
  op: 'subscribed';
  epoch: string;
  head: number;
  since: number;
  topics: string[];
}

/** One event (the server builds these frames once per event, for every recipient). */
export type EventMessage<T = unknown> = { op: 'event' } & HeraldEvent<T>;

/** Every matching event up to `id` has been sent: store it as the position. */
export interface CheckpointMessage {
  op: 'checkpoint';
  id: number;
}

/** Answers `ping`. */
export interface PongMessage {
  op: 'pong';
}

/** Answers `auth`: the new credentials are in force; `expiresAt` (epoch ms) is when they stop, or null. */
export interface AuthedMessage {
  op: 'authed';
  expiresAt: number | null;
}

/** An error on an open connection (it stays open); `position` when a running stream ended. */
export type ErrorMessage = { op: 'error' } & WireError;

/** What the server sends on a WebSocket. */
export type WsServerMessage<T = unknown> = SubscribedMessage | EventMessage<T> | CheckpointMessage | PongMessage | AuthedMessage | ErrorMessage;

/** A close reason is at most this many bytes (RFC 6455 §5.5: 125 for the payload, 2 for the code). */
export const CLOSE_REASON_MAX_BYTES = 123;

/** The JSON a Herald close reason holds: the resume position, and why when it fits. */
export interface CloseReason {
  position: number;
  message?: string;
}

// ---- Server-Sent Events -----------------------------------------------------------------

/** SSE `event:` names; events themselves are default (`message`) blocks with an `id:`. */
export const SSE_EVENTS = {
  /** First block: `{epoch, head, since}`. */
  subscribed: 'subscribed',
  /** `{id}`, with an `id:` line so EventSource's Last-Event-ID moves too. */
  checkpoint: 'checkpoint',
  /** Last block: the error object plus `position`; the server then ends the stream. */
  error: 'error',
} as const;

/** The data of the SSE `subscribed` block. */
export interface SseSubscribed {
  epoch: string;
  head: number;
  since: number;
}

// ---- Errors -------------------------------------------------------------------------------

/** How one wire error code travels, and what a client should make of it. */
export interface WireErrorSpec {
  /** Status of an HTTP answer carrying it. */
  httpStatus: number;
  /** WebSocket close code (4000–4999 is left to applications by RFC 6455; some use the standard ones). */
  closeCode: number;
  /**
   * True when this error ends a WebSocket connection, with `closeCode`. Every other error
   * arrives as an `error` message (the connection stays open) or as the HTTP answer to the
   * upgrade, and its close code is never sent.
   */
  closes: boolean;
  /** Whether the same request may succeed later unchanged: reconnect and resume, or give up. */
  retryable: boolean;
  /**
   * A finer kind of another code that shares its HTTP status (token_expired is a kind of
   * unauthorized): a bare status stands for the coarser code (wireCodeOfStatus).
   */
  refines?: string;
}

/**
 * Every wire error code: the one table. Server errors (`HERALD_ERR_*` in src/errors.ts)
 * each name one of these and take their status, close code and retryable flag from it.
 */
export const WIRE_ERRORS = {
  bad_request: { httpStatus: 400, closeCode: 4000, closes: false, retryable: false },
  unauthorized: { httpStatus: 401, closeCode: 4001, closes: false, retryable: false },
  // A valid token past its `exp`: not retryable as it is; get a new token and resume from
  // the position (over WebSocket, `auth` with it on the same connection). Never a close.
  token_expired: { httpStatus: 401, closeCode: 4401, closes: false, retryable: false, refines: 'unauthorized' },
  forbidden: { httpStatus: 403, closeCode: 4003, closes: false, retryable: false },
  not_found: { httpStatus: 404, closeCode: 4004, closes: false, retryable: false },
  method_not_allowed: { httpStatus: 405, closeCode: 4005, closes: false, retryable: false },
  // Never sent over WebSocket (bodies are HTTP); 4408 because 4008 is slow_consumer.
  request_timeout: { httpStatus: 408, closeCode: 4408, closes: false, retryable: true },
  epoch_mismatch: { httpStatus: 409, closeCode: 4009, closes: false, retryable: false },
  cursor_ahead: { httpStatus: 409, closeCode: 4009, closes: false, retryable: false },
  cursor_expired: { httpStatus: 410, closeCode: 4010, closes: false, retryable: false },
  // 1009 is RFC 6455's "message too big": the `ws` library closes with it by itself.
  payload_too_large: { httpStatus: 413, closeCode: 1009, closes: true, retryable: false },
  unsupported_media_type: { httpStatus: 415, closeCode: 4015, closes: false, retryable: false },
  // The job API only: an Idempotency-Key already bound to a different request of the same user.
  idempotency_key_reused: { httpStatus: 422, closeCode: 4022, closes: false, retryable: false },
  upgrade_required: { httpStatus: 426, closeCode: 4026, closes: false, retryable: false },
  // 1008 is RFC 6455's "policy violation": a subscribe flood.
  rate_limited: { httpStatus: 429, closeCode: 1008, closes: true, retryable: true },
  internal: { httpStatus: 500, closeCode: 1011, closes: false, retryable: true },
  // Start-up and CLI only, never sent to a client.
  config: { httpStatus: 500, closeCode: 1011, closes: false, retryable: false },
  too_many_connections: { httpStatus: 503, closeCode: 1013, closes: false, retryable: true },
  slow_consumer: { httpStatus: 503, closeCode: 4008, closes: true, retryable: true },
  // 1001 is RFC 6455's "going away".
  shutting_down: { httpStatus: 503, closeCode: 1001, closes: true, retryable: true },
  unavailable: { httpStatus: 503, closeCode: 1011, closes: false, retryable: true },
} as const satisfies Record<string, WireErrorSpec>;

/** A wire error code (`error.code` in every body, frame and SSE error event). */
export type WireErrorCode = keyof typeof WIRE_ERRORS;

/**
 * The error object of every transport: an HTTP body's `error`, a WebSocket `error` message
 * (with `op`), an SSE `error` event's data. Details (`oldest`, `head`, `epoch`, `position`,
 * `maxFilterEntries`, `retryAfterS`) sit beside the three fixed fields, which they never replace.
 */
export type WireError = { code: string; message: string; retryable: boolean } & Record<string, string | number | boolean | null>;

/** The body of every HTTP error answer. */
export interface ErrorResponse {
  error: WireError;
}

/** True when `code` is a wire error code this version knows. */
export function isWireErrorCode(code: string): code is WireErrorCode {
  return Object.hasOwn(WIRE_ERRORS, code);
}

/**
 * Whether retrying can help: the error's own `retryable` flag when it carries one, else the
 * table's, and true for a code this version does not know (a newer server's: reconnecting
 * with backoff is the safe default, and the server will say again).
 */
export function isRetryable(code: string, retryable?: unknown): boolean {
  if (typeof retryable === 'boolean') return retryable;
  return isWireErrorCode(code) ? WIRE_ERRORS[code].retryable : true;
}

/** Reverse index of one table field, keeping only the values exactly one code has. */
function uniqueBy(field: 'closeCode' | 'httpStatus', include: (spec: WireErrorSpec) => boolean): ReadonlyMap<number, WireErrorCode> {
  const seen = new Map<number, WireErrorCode | null>();
  for (const [code, spec] of Object.entries(WIRE_ERRORS) as [WireErrorCode, WireErrorSpec][]) {
    if (include(spec)) seen.set(spec[field], seen.has(spec[field]) ? null : code);
  }
  return new Map([...seen].filter((e): e is [number, WireErrorCode] => e[1] !== null));
}

const CODE_OF_CLOSE = uniqueBy('closeCode', (spec) => spec.closes);
const CODE_OF_STATUS = uniqueBy('httpStatus', (spec) => spec.refines === undefined);

/** The wire code a WebSocket close code stands for (1001 → shutting_down, 4008 → slow_consumer, …), if any. */
export function wireCodeOfClose(closeCode: number): WireErrorCode | undefined {
  return CODE_OF_CLOSE.get(closeCode);
}

/**
 * The wire code an HTTP status stands for, when exactly one code has it, refinements aside
 * (401 → unauthorized, though token_expired is a 401 too; not 503).
 */
export function wireCodeOfStatus(status: number): WireErrorCode | undefined {
  return CODE_OF_STATUS.get(status);
}

// ---- Retrying -----------------------------------------------------------------------------

/** The first reconnect delay, before jitter, in ms. */
export const BACKOFF_INITIAL_MS = 100;

/**
 * The one retry curve, for reconnecting to anything that went away (a client to Herald,
 * Herald to its database): capped exponential backoff with "equal jitter". Attempt n (from
 * 0) waits a random time in [½, 1) × min(capMs, initialMs × 2^n); with 100 ms and a 5 s cap
 * that is 50–100, 100–200, 200–400, 400–800, 800–1600, 1600–3200, then 2500–5000 ms for
 * every later attempt. The doubling keeps a dead peer from being hammered; the cap bounds
 * the delay once it is back; the random half spreads out peers that failed together (a
 * restart drops every client at once) so they do not retry in lockstep, and the fixed half
 * keeps a floor so a flapping peer is never retried in a tight loop. It lives in the wire
 * module because the protocol asks clients to retry this way and the client package can
 * import nothing from the server. `random` is injectable for tests and must return [0, 1).
 */
export function backoffMs(attempt: number, capMs: number, initialMs = BACKOFF_INITIAL_MS, random: () => number = Math.random): number {
  // 2^20 × 100 ms is already ~29 hours: clamping the exponent keeps the product finite.
  const base = Math.min(capMs, initialMs * 2 ** Math.min(Math.max(attempt, 0), 20));
  return Math.round(base * (0.5 + random() / 2));
}
