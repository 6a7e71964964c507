/**
 * Every error Herald reports, with a stable code. Callers match on `code`, never on the
 * message. Transports map errors to the wire from these fields and never re-derive meaning:
 * HTTP uses `httpStatus`, WebSocket uses `closeCode` (4000–4999 is left to applications by
 * RFC 6455) when the error ends the connection, and every transport puts `wire` in
 * `{error:{code,message}}`. The wire names are part of the API (DESIGN.md); the
 * `HERALD_ERR_*` names are for code and logs. docs/errors.md lists them all.
 */

export interface ErrorSpec {
  /** Short name sent to clients in `error.code`. */
  wire: string;
  httpStatus: number;
  /** WebSocket close code used when this error ends a connection. */
  closeCode: number;
  /** Whether the same request may succeed later without changing it. */
  retryable: boolean;
}

export const ERROR_SPECS = {
  HERALD_ERR_BAD_REQUEST: { wire: 'bad_request', httpStatus: 400, closeCode: 4000, retryable: false },
  HERALD_ERR_UNAUTHORIZED: { wire: 'unauthorized', httpStatus: 401, closeCode: 4001, retryable: false },
  HERALD_ERR_FORBIDDEN: { wire: 'forbidden', httpStatus: 403, closeCode: 4003, retryable: false },
  HERALD_ERR_NOT_FOUND: { wire: 'not_found', httpStatus: 404, closeCode: 4004, retryable: false },
  HERALD_ERR_METHOD_NOT_ALLOWED: { wire: 'method_not_allowed', httpStatus: 405, closeCode: 4005, retryable: false },
  HERALD_ERR_EPOCH_MISMATCH: { wire: 'epoch_mismatch', httpStatus: 409, closeCode: 4009, retryable: false },
  HERALD_ERR_POSITION_AHEAD: { wire: 'cursor_ahead', httpStatus: 409, closeCode: 4009, retryable: false },
  HERALD_ERR_POSITION_EXPIRED: { wire: 'cursor_expired', httpStatus: 410, closeCode: 4010, retryable: false },
  HERALD_ERR_UPGRADE_REQUIRED: { wire: 'upgrade_required', httpStatus: 426, closeCode: 4026, retryable: false },
  // Over WebSocket only in theory (bodies are HTTP); 4408 because 4008 is slow_consumer.
  HERALD_ERR_REQUEST_TIMEOUT: { wire: 'request_timeout', httpStatus: 408, closeCode: 4408, retryable: true },
  HERALD_ERR_PAYLOAD_TOO_LARGE: { wire: 'payload_too_large', httpStatus: 413, closeCode: 1009, retryable: false },
  HERALD_ERR_UNSUPPORTED_MEDIA_TYPE: { wire: 'unsupported_media_type', httpStatus: 415, closeCode: 4015, retryable: false },
  HERALD_ERR_RATE_LIMITED: { wire: 'rate_limited', httpStatus: 429, closeCode: 1008, retryable: true },
  HERALD_ERR_TOO_MANY_CONNECTIONS: { wire: 'too_many_connections', httpStatus: 503, closeCode: 1013, retryable: true },
  HERALD_ERR_SLOW_CONSUMER: { wire: 'slow_consumer', httpStatus: 503, closeCode: 4008, retryable: true },
  HERALD_ERR_SHUTTING_DOWN: { wire: 'shutting_down', httpStatus: 503, closeCode: 1001, retryable: true },
  HERALD_ERR_UNAVAILABLE: { wire: 'unavailable', httpStatus: 503, closeCode: 1011, retryable: true },
  HERALD_ERR_INTERNAL: { wire: 'internal', httpStatus: 500, closeCode: 1011, retryable: true },
  HERALD_ERR_CONFIG: { wire: 'config', httpStatus: 500, closeCode: 1011, retryable: false },
  // Start-up only, never sent to a client: the process exits instead (see EXIT_CODES).
  HERALD_ERR_DATABASE_UNREACHABLE: { wire: 'unavailable', httpStatus: 503, closeCode: 1011, retryable: true },
  HERALD_ERR_CANNOT_LISTEN: { wire: 'internal', httpStatus: 500, closeCode: 1011, retryable: false },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof ERROR_SPECS;

/** Extra fields sent to the client beside `code` and `message` (e.g. `oldest`, `head`). */
export type ErrorDetails = Record<string, string | number | boolean | null>;

export class HeraldError extends Error {
  override readonly name = 'HeraldError';
  readonly code: ErrorCode;
  readonly wire: string;
  readonly httpStatus: number;
  readonly closeCode: number;
  readonly retryable: boolean;
  readonly details: ErrorDetails;

  constructor(code: ErrorCode, message: string, details: ErrorDetails = {}, options?: { cause?: unknown }) {
    super(message, options);
    const spec: ErrorSpec = ERROR_SPECS[code];
    this.code = code;
    this.wire = spec.wire;
    this.httpStatus = spec.httpStatus;
    this.closeCode = spec.closeCode;
    this.retryable = spec.retryable;
    this.details = details;
  }

  /** The body every transport sends: `{error:{code,message,...details}}`. */
  toWire(): { error: { code: string; message: string } & ErrorDetails } {
    return { error: { ...this.details, code: this.wire, message: this.message } };
  }
}

// Connection-level failures (Postgres restarting, unreachable, shutting down): the request
// can be retried, so they are 503 unavailable rather than 500.
const UNAVAILABLE_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  '57P01',
  '57P02',
  '57P03',
  '08000',
  '08001',
  '08003',
  '08004',
  '08006',
  '53300',
]);
const UNAVAILABLE_MESSAGES =
  /Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error|the database system is (starting up|shutting down)/;

/** Turns anything thrown into a HeraldError, keeping the original as `cause`. */
export function coerceError(err: unknown): HeraldError {
  if (err instanceof HeraldError) return err;
  const message = err instanceof Error ? err.message : String(err);
  const code = (err as { code?: unknown } | null)?.code;
  if ((typeof code === 'string' && UNAVAILABLE_CODES.has(code)) || UNAVAILABLE_MESSAGES.test(message)) {
    return new HeraldError('HERALD_ERR_UNAVAILABLE', 'the database is unavailable; retry shortly', {}, { cause: err });
  }
  return new HeraldError('HERALD_ERR_INTERNAL', `internal error: ${message}`, {}, { cause: err });
}

/** The message a client sees for an unexpected failure: never internals or stack traces. */
export function publicError(err: unknown): HeraldError {
  const e = coerceError(err);
  if (e.code !== 'HERALD_ERR_INTERNAL') return e;
  return new HeraldError('HERALD_ERR_INTERNAL', 'internal error; the request may be retried', {}, { cause: e.cause });
}

/**
 * Exit statuses of the `herald` command, defined once here (README.md and
 * docs/operations.md list them). Values come from BSD sysexits.h so that scripts and
 * orchestrators can tell "fix the configuration" from "the database is down" without
 * parsing the message.
 */
export const EXIT_CODES = {
  ok: 0,
  /** An unexpected failure (a bug), a failed shutdown, a forced exit on a second signal, or `herald tail`'s fatal error. */
  failure: 1,
  /** EX_USAGE: a bad argument (unknown flag, bad `--since`, `emit` data that is not JSON, `export` without `--full`/`--gc`). */
  usage: 64,
  /** EX_UNAVAILABLE: the database stayed unreachable, or kept refusing the login, for HERALD_DB_CONNECT_TIMEOUT_MS. */
  unavailable: 69,
  /** EX_CANTCREAT: the HTTP port could not be bound (in use, not permitted, or HOST is not an address of this machine). */
  cannotListen: 73,
  /** EX_CONFIG: an invalid setting, a command run without DATABASE_URL, PostgreSQL older than 13, a failing migration. */
  config: 78,
} as const;

const EXIT_CODE_OF: Partial<Record<ErrorCode, number>> = {
  HERALD_ERR_BAD_REQUEST: EXIT_CODES.usage,
  HERALD_ERR_UNAVAILABLE: EXIT_CODES.unavailable,
  HERALD_ERR_DATABASE_UNREACHABLE: EXIT_CODES.unavailable,
  HERALD_ERR_CANNOT_LISTEN: EXIT_CODES.cannotListen,
  HERALD_ERR_CONFIG: EXIT_CODES.config,
};

/** The exit status for a failure that ends the CLI: EXIT_CODES.failure unless the error is an expected one. */
export function exitCodeOf(err: unknown): number {
  return EXIT_CODE_OF[coerceError(err).code] ?? EXIT_CODES.failure;
}
