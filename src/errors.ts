/**
 * Every error Herald reports, with a stable code. Callers match on `code`, never on the
 * message. Each `HERALD_ERR_*` code (for code and logs) names one wire code (the API, sent
 * to clients in `error.code`), and takes its HTTP status, WebSocket close code and retryable
 * flag from the wire module's one table (`WIRE_ERRORS` in herald-client/protocol), which the
 * client reads too. Transports map errors to the wire from these fields and never re-derive
 * meaning: HTTP uses `httpStatus`, WebSocket closes with `closeCode` when `closes` says the
 * error ends a connection, and every transport sends `toWire()`'s `{code,message,retryable}`.
 * docs/errors.md lists them all.
 */
import { type WireError, type WireErrorCode, WIRE_ERRORS } from 'herald-client/protocol';

/**
 * Each server code and the wire code it is sent as. Several may share a wire code: the
 * start-up failures are reported as `unavailable` and `config` would be, were they ever sent.
 */
export const ERROR_SPECS = {
  HERALD_ERR_BAD_REQUEST: 'bad_request',
  HERALD_ERR_UNAUTHORIZED: 'unauthorized',
  HERALD_ERR_TOKEN_EXPIRED: 'token_expired',
  HERALD_ERR_FORBIDDEN: 'forbidden',
  HERALD_ERR_NOT_FOUND: 'not_found',
  HERALD_ERR_METHOD_NOT_ALLOWED: 'method_not_allowed',
  HERALD_ERR_EPOCH_MISMATCH: 'epoch_mismatch',
  HERALD_ERR_POSITION_AHEAD: 'cursor_ahead',
  HERALD_ERR_POSITION_EXPIRED: 'cursor_expired',
  HERALD_ERR_UPGRADE_REQUIRED: 'upgrade_required',
  HERALD_ERR_REQUEST_TIMEOUT: 'request_timeout',
  HERALD_ERR_PAYLOAD_TOO_LARGE: 'payload_too_large',
  HERALD_ERR_UNSUPPORTED_MEDIA_TYPE: 'unsupported_media_type',
  HERALD_ERR_IDEMPOTENCY_KEY_REUSED: 'idempotency_key_reused',
  HERALD_ERR_RATE_LIMITED: 'rate_limited',
  HERALD_ERR_TOO_MANY_CONNECTIONS: 'too_many_connections',
  HERALD_ERR_SLOW_CONSUMER: 'slow_consumer',
  HERALD_ERR_SHUTTING_DOWN: 'shutting_down',
  HERALD_ERR_UNAVAILABLE: 'unavailable',
  HERALD_ERR_INTERNAL: 'internal',
  HERALD_ERR_CONFIG: 'config',
  // Start-up only, never sent to a client: the process exits instead (see EXIT_CODES).
  HERALD_ERR_DATABASE_UNREACHABLE: 'unavailable',
  HERALD_ERR_CANNOT_LISTEN: 'config',
} as const satisfies Record<string, WireErrorCode>;

/** A `HERALD_ERR_*` code. */
export type ErrorCode = keyof typeof ERROR_SPECS;

/** Extra fields sent to the client beside `code` and `message` (e.g. `oldest`, `head`). */
export type ErrorDetails = Record<string, string | number | boolean | null>;

/** The one error class: a code, its wire mapping, a message for people, and details for programs. */
export class HeraldError extends Error {
  override readonly name = 'HeraldError';
  readonly code: ErrorCode;
  /** The wire code (`error.code` on the wire). */
  readonly wire: WireErrorCode;
  readonly httpStatus: number;
  /** WebSocket close code, sent only when `closes`. */
  readonly closeCode: number;
  /** True when this error ends a WebSocket connection rather than arriving as an `error` message. */
  readonly closes: boolean;
  /** Whether the same request may succeed later without changing it (sent as `retryable`). */
  readonly retryable: boolean;
  readonly details: ErrorDetails;

  constructor(code: ErrorCode, message: string, details: ErrorDetails = {}, options?: { cause?: unknown }) {
    super(message, options);
    const wire = ERROR_SPECS[code];
    const spec = WIRE_ERRORS[wire];
    this.code = code;
    this.wire = wire;
    this.httpStatus = spec.httpStatus;
    this.closeCode = spec.closeCode;
    this.closes = spec.closes;
    this.retryable = spec.retryable;
    this.details = details;
  }

  /** The body every transport sends: `{error:{...details,code,message,retryable}}` (details never replace the three). */
  toWire(): { error: WireError } {
    return { error: { ...this.details, code: this.wire, message: this.message, retryable: this.retryable } };
  }
}

/**
 * A schema failure (zod's, taken by shape so this file needs no zod) as one line,
 * `path: message`, naming `whole` when the failure is at the root: the form every
 * `bad_request` about a body, a message or a setting uses.
 */
export function formatZodIssue(
  error: { readonly issues: readonly { readonly path: readonly PropertyKey[]; readonly message: string }[] },
  whole: string,
): string {
  const issue = error.issues[0];
  return `${issue?.path.map(String).join('.') || whole}: ${issue?.message ?? 'invalid'}`;
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

// SQLSTATE classes raised for a statement's data: 22 a value a column or jsonb refuses, 23 a
// constraint, 54 too deep for the parser's stack. The statement wrote nothing, and another
// statement without that data may succeed: group commits write each item again alone.
const DATA_ERROR_CLASSES = new Set(['22', '23', '54']);

/** True for an error PostgreSQL raised for a statement's data (SQLSTATE class 22, 23 or 54). */
export function isDataError(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && DATA_ERROR_CLASSES.has(code.slice(0, 2));
}

/**
 * True for an error after which a statement in autocommit wrote nothing and the same work,
 * split, may succeed: a data error, or the transaction rolled back (SQLSTATE class 40: a
 * deadlock, a serialization failure), which two concurrent batches can cause together.
 */
export function isRolledBack(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return isDataError(err) || (typeof code === 'string' && code.startsWith('40'));
}

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
