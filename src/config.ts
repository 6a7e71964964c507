/**
 * Every setting Herald has, parsed once. This is the only module that reads `process.env`.
 * Precedence: CLI flag, then environment variable, then the default below. The resulting
 * object is frozen and passed down; modules never re-read options.
 *
 * The SETTINGS table is also the source of `herald --help` and of the configuration table in
 * README.md (a test checks that every variable appears there).
 */
import { z } from 'zod';
import { HeraldError } from './errors.ts';

const SECOND_MS = 1000;
const MINUTE_MS = 60 * SECOND_MS;
const DAY_MS = 24 * 60 * MINUTE_MS;
const MIB = 1024 * 1024;
const KIB = 1024;

const int = (min: number, max: number) => z.coerce.number().int().min(min).max(max);
const bool = z.union([z.boolean(), z.enum(['true', 'false', '1', '0']).transform((v) => v === 'true' || v === '1')]);
const list = z
  .union([z.array(z.string()), z.string()])
  .transform((v) => (Array.isArray(v) ? v : v.split(',')).map((s) => s.trim()).filter((s) => s.length > 0));
/**
 * A browser origin (`https://app.example.com`, written as a browser sends it in `Origin`:
 * lower-case, no default port, no path) or `*`. Written otherwise it is normalized to that
 * form; a path, query or credentials are refused, since an origin never carries them.
 */
const origin = z.string().transform((s, ctx) => {
  if (s === '*') return s;
  const u = URL.canParse(s) ? new URL(s) : undefined;
  if (u && (u.protocol === 'https:' || u.protocol === 'http:') && u.pathname === '/' && !u.search && !u.hash && !u.username && !u.password) return u.origin;
  ctx.addIssue({ code: 'custom', message: `${JSON.stringify(s)} is not an origin: write scheme://host[:port] (e.g. https://app.example.com) or *` });
  return z.NEVER;
});

interface Setting<S extends z.ZodType> {
  env: string;
  schema: S;
  doc: string;
  /**
   * Hidden in logs and `herald config --resolved`: `true` hides the whole value (tokens, a URL
   * that is itself the credential); `'password'` hides only the password of a URL, so the
   * host and database stay visible for debugging.
   */
  secret?: true | 'password';
}

const setting = <S extends z.ZodType>(s: Setting<S>) => s;

/** Every setting: its environment variable, how to parse it, and what it does. */
export const SETTINGS = {
  port: setting({ env: 'PORT', schema: int(0, 65535), doc: 'HTTP port to listen on (0 picks a free port).' }),
  host: setting({ env: 'HOST', schema: z.string().min(1), doc: 'Interface to bind.' }),
  databaseUrl: setting({
    env: 'DATABASE_URL',
    schema: z.string().url().optional(),
    doc: 'PostgreSQL URL. Unset: start an embedded PostgreSQL with data in `<dataDir>/pg`.',
    secret: 'password',
  }),
  dataDir: setting({ env: 'HERALD_DATA_DIR', schema: z.string().min(1), doc: 'Directory for local state (the embedded PostgreSQL lives in `<dataDir>/pg`).' }),
  embeddedPgPort: setting({ env: 'HERALD_EMBEDDED_PG_PORT', schema: int(1, 65535), doc: 'Port of the embedded PostgreSQL.' }),
  dbPoolMax: setting({ env: 'HERALD_DB_POOL_MAX', schema: int(2, 1000), doc: 'Connections in the query pool (the LISTEN connection is extra).' }),
  dbConnectTimeoutMs: setting({
    env: 'HERALD_DB_CONNECT_TIMEOUT_MS',
    schema: int(0, 60 * MINUTE_MS),
    doc: 'How long start-up keeps trying to reach the database (capped exponential backoff with jitter, one warning per failed attempt) before it exits with status 69. 0: one attempt.',
  }),
  logLevel: setting({
    env: 'LOG_LEVEL',
    schema: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']),
    doc: 'pino log level.',
  }),
  logFormat: setting({
    env: 'HERALD_LOG_FORMAT',
    schema: z.enum(['auto', 'json', 'pretty']),
    doc: 'Log output on stdout: `json` (one object per line), `pretty` (human-readable), or `auto` (pretty when stdout is a terminal, JSON otherwise).',
  }),
  publishTokens: setting({
    env: 'HERALD_PUBLISH_TOKENS',
    schema: list,
    doc: 'Comma-separated bearer tokens allowed to `POST /v1/events` (two for rotation). Empty: publishing over HTTP is off.',
    secret: true,
  }),
  safetyPollMs: setting({
    env: 'HERALD_SAFETY_POLL_MS',
    schema: int(50, 10 * MINUTE_MS),
    doc: 'How often the listener re-reads the log even without a NOTIFY (covers lost notifications).',
  }),
  listenerBatchSize: setting({ env: 'HERALD_LISTENER_BATCH_SIZE', schema: int(1, 100_000), doc: 'Rows per read when the listener fetches new events.' }),
  listenerReconnectMaxMs: setting({
    env: 'HERALD_LISTENER_RECONNECT_MAX_MS',
    schema: int(100, 10 * MINUTE_MS),
    doc: 'Cap of the LISTEN reconnect backoff (exponential from 100 ms, with jitter; retries forever).',
  }),
  replayPageSize: setting({ env: 'HERALD_REPLAY_PAGE_SIZE', schema: int(1, 100_000), doc: 'Rows per table read during catch-up.' }),
  maxClientQueueBytes: setting({
    env: 'HERALD_MAX_CLIENT_QUEUE_BYTES',
    schema: int(16 * KIB, 1024 * MIB),
    doc: 'Per-subscriber live buffer, in bytes. Past it the subscriber reads from the table at its own pace.',
  }),
  maxClientQueueEvents: setting({ env: 'HERALD_MAX_CLIENT_QUEUE_EVENTS', schema: int(16, 10_000_000), doc: 'Per-subscriber live buffer, in events.' }),
  catchUpWindowBytes: setting({
    env: 'HERALD_CATCHUP_WINDOW_BYTES',
    schema: int(0, 64 * 1024 * MIB),
    doc: 'Memory for recent events (each charged its serialized size plus 1 KiB), so that a catch-up from a position among them reads no table (see docs/operations.md). 0: every catch-up reads the table.',
  }),
  retentionMaxAgeMs: setting({
    env: 'HERALD_RETENTION_MAX_AGE_MS',
    schema: int(0, 100 * 365 * DAY_MS),
    doc: 'Delete events older than this (0 keeps them forever).',
  }),
  retentionMaxEvents: setting({
    env: 'HERALD_RETENTION_MAX_EVENTS',
    schema: int(0, Number.MAX_SAFE_INTEGER),
    doc: 'Keep at most this many newest events (0: no limit).',
  }),
  retentionIntervalMs: setting({ env: 'HERALD_RETENTION_INTERVAL_MS', schema: int(100, DAY_MS), doc: 'How often the pruner runs.' }),
  retentionBatchSize: setting({ env: 'HERALD_RETENTION_BATCH_SIZE', schema: int(1, 1_000_000), doc: 'Rows deleted per pruning transaction.' }),
  maxBodyBytes: setting({ env: 'HERALD_MAX_BODY_BYTES', schema: int(1 * KIB, 256 * MIB), doc: 'Largest accepted request body (413 above).' }),
  maxEventDataBytes: setting({ env: 'HERALD_MAX_EVENT_DATA_BYTES', schema: int(16, 64 * MIB), doc: 'Largest `data` of one event published over HTTP.' }),
  appendBatchMaxEvents: setting({
    env: 'HERALD_APPEND_BATCH_MAX_EVENTS',
    schema: int(1, 1_000_000),
    doc: "Most events one group-append flush writes (publishes and Herald's own appends that arrive while a flush is in flight share the next one; see docs/operations.md). One request with more goes alone.",
  }),
  appendBatchMaxBytes: setting({
    env: 'HERALD_APPEND_BATCH_MAX_BYTES',
    schema: int(1 * KIB, 1024 * MIB),
    doc: 'Most bytes of event JSON one group-append flush sends. One request with more goes alone.',
  }),
  appendQueueMaxEvents: setting({
    env: 'HERALD_APPEND_QUEUE_MAX_EVENTS',
    schema: int(1, 100_000_000),
    doc: 'Events waiting for a group-append flush; past it a publish gets 503 `unavailable` with `Retry-After`.',
  }),
  appendQueueMaxBytes: setting({
    env: 'HERALD_APPEND_QUEUE_MAX_BYTES',
    schema: int(1 * KIB, 64 * 1024 * MIB),
    doc: 'Bytes of event JSON waiting for a group-append flush; past it a publish gets 503 `unavailable` with `Retry-After`.',
  }),
  pollDefaultLimit: setting({ env: 'HERALD_POLL_DEFAULT_LIMIT', schema: int(1, 100_000), doc: 'Events per `GET /v1/events` when `limit` is omitted.' }),
  pollMaxLimit: setting({ env: 'HERALD_POLL_MAX_LIMIT', schema: int(1, 100_000), doc: 'Largest accepted `limit`.' }),
  pollMaxWaitS: setting({ env: 'HERALD_POLL_MAX_WAIT_S', schema: int(0, 3600), doc: 'Largest accepted long-poll `wait`, in seconds.' }),
  sseHeartbeatMs: setting({ env: 'HERALD_SSE_HEARTBEAT_MS', schema: int(100, 10 * MINUTE_MS), doc: 'SSE comment heartbeat interval.' }),
  checkpointIntervalMs: setting({
    env: 'HERALD_CHECKPOINT_INTERVAL_MS',
    schema: int(50, 10 * MINUTE_MS),
    doc: 'How often a filtered stream is sent a `checkpoint` while the head moves past its last event.',
  }),
  wsMaxPayloadBytes: setting({
    env: 'HERALD_WS_MAX_PAYLOAD_BYTES',
    schema: int(256, 16 * MIB),
    doc: 'Largest WebSocket message a client may send (closed with 1009 above).',
  }),
  wsMaxConnections: setting({
    env: 'HERALD_WS_MAX_CONNECTIONS',
    schema: int(1, 10_000_000),
    doc: 'WebSocket connections per process; further upgrades get 503.',
  }),
  maxFilterEntries: setting({
    env: 'HERALD_MAX_FILTER_ENTRIES',
    schema: int(1, 100_000),
    doc: 'Topic filter entries (`topic` parameters, or `topics` of a WebSocket `subscribe`) one request or connection may send, on every transport; more gets 400 `bad_request`.',
  }),
  wsSubscribeBurst: setting({
    env: 'HERALD_WS_SUBSCRIBE_BURST',
    schema: int(1, 100_000),
    doc: 'subscribe/unsubscribe messages a connection may send at once; it then earns one per second × HERALD_WS_SUBSCRIBE_PER_S. Past it: close 1008.',
  }),
  wsSubscribePerS: setting({ env: 'HERALD_WS_SUBSCRIBE_PER_S', schema: int(1, 100_000), doc: 'Sustained subscribe/unsubscribe rate per connection.' }),
  sseMaxStreams: setting({
    env: 'HERALD_SSE_MAX_STREAMS',
    schema: int(1, 10_000_000),
    doc: 'Concurrent SSE streams per process; more get 503 `too_many_connections` with `Retry-After`.',
  }),
  longPollMax: setting({
    env: 'HERALD_LONGPOLL_MAX',
    schema: int(1, 10_000_000),
    doc: 'Concurrent long-polls (`GET /v1/events` with `wait`) per process; more get 503 `too_many_connections` with `Retry-After`.',
  }),
  readPoolMax: setting({
    env: 'HERALD_READ_POOL_MAX',
    schema: int(1, 1000),
    doc: 'Connections for catch-up reads, a pool of their own beside HERALD_DB_POOL_MAX: client reads can never take the connections the Listener and publishers use. One client address holds at most half of them.',
  }),
  readQueueMax: setting({
    env: 'HERALD_READ_QUEUE_MAX',
    schema: int(0, 1_000_000),
    doc: 'Catch-up reads waiting for a read connection (served round-robin by client address); more get 503 `unavailable` with `Retry-After`.',
  }),
  readTimeoutMs: setting({
    env: 'HERALD_READ_TIMEOUT_MS',
    schema: int(10, 10 * MINUTE_MS),
    doc: 'Statement timeout of one catch-up read; past it the client gets the retryable 503 `unavailable`.',
  }),
  readShareMsPerS: setting({
    env: 'HERALD_READ_SHARE_MS_PER_S',
    schema: int(0, 1_000_000),
    doc: 'Catch-up read time one client address may use, in ms of database time per second (a burst of one second of it runs at once); past it its next reads wait in its queue while other addresses are served. 0: no limit.',
  }),
  bodyTimeoutMs: setting({
    env: 'HERALD_BODY_TIMEOUT_MS',
    schema: int(100, 10 * MINUTE_MS),
    doc: 'Time a client has to send a whole request body; past it the request gets 408 and its connection is closed.',
  }),
  idleSocketTimeoutMs: setting({
    env: 'HERALD_IDLE_SOCKET_TIMEOUT_MS',
    schema: int(100, 60 * MINUTE_MS),
    doc: 'A connection with no bytes in or out for this long is closed (request headers must also arrive within it), except SSE streams, long-polls and WebSockets while they stream.',
  }),
  wsPingIntervalMs: setting({
    env: 'HERALD_WS_PING_INTERVAL_MS',
    schema: int(100, 10 * MINUTE_MS),
    doc: 'WebSocket ping interval; a peer that has not answered the previous ping is dropped.',
  }),
  slowConsumerTimeoutMs: setting({
    env: 'HERALD_SLOW_CONSUMER_TIMEOUT_MS',
    schema: int(100, 10 * MINUTE_MS),
    doc: 'How long a WebSocket or SSE client may stay over its byte budget before it is closed (4008 / slow_consumer) with its cursor.',
  }),
  privateTopicPrefixes: setting({
    env: 'HERALD_PRIVATE_TOPIC_PREFIXES',
    schema: list,
    doc: 'Comma-separated topic prefixes (e.g. `private:`): a topic under one is readable only under a grant covering it (a read token, a JWT `subscribe` claim, or HERALD_AUTHZ_FUNCTION); patterns are narrowed to what the reader may read (docs/auth.md). Empty: every topic is public.',
  }),
  readTokens: setting({
    env: 'HERALD_READ_TOKENS',
    schema: list,
    doc: 'Comma-separated bearer tokens that may read every topic, private ones included (`Authorization` header or `?token=`).',
    secret: true,
  }),
  jwtSecrets: setting({
    env: 'HERALD_JWT_SECRETS',
    schema: list.pipe(z.array(z.string().min(32, 'an HS256 secret must be at least 32 characters (RFC 7518 §3.2: as long as the hash)'))),
    doc: 'Comma-separated HS256 secrets that sign JWTs (two for rotation), read from `Authorization: Bearer`, `?token=` or a WebSocket `auth` message (docs/auth.md). Empty: no HS256 tokens.',
    secret: true,
  }),
  jwtJwksUrl: setting({
    env: 'HERALD_JWT_JWKS_URL',
    schema: z.string().url().optional(),
    doc: 'URL of a JSON Web Key Set whose keys sign JWTs (RS256, ES256, EdDSA). Cached, refetched on an unknown `kid` at most every 30 s.',
  }),
  jwtAudience: setting({ env: 'HERALD_JWT_AUDIENCE', schema: z.string().min(1).optional(), doc: 'If set, a JWT must carry this `aud`.' }),
  jwtIssuer: setting({ env: 'HERALD_JWT_ISSUER', schema: z.string().min(1).optional(), doc: 'If set, a JWT must carry this `iss`.' }),
  authzFunction: setting({
    env: 'HERALD_AUTHZ_FUNCTION',
    schema: z
      .string()
      .regex(/^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?$/, 'a function name such as `app.can_read` (lower-case, optionally schema-qualified)')
      .optional(),
    doc: 'SQL function `(subject text, claims jsonb, topic text) → boolean` asked whether a reader may read a private topic its grants do not cover: at subscribe for exact topics, at the first event of each topic for patterns (docs/auth.md). Unset: grants alone decide.',
  }),
  authzCacheTtlMs: setting({
    env: 'HERALD_AUTHZ_CACHE_TTL_MS',
    schema: int(SECOND_MS, DAY_MS),
    doc: "How long one connection remembers HERALD_AUTHZ_FUNCTION's answer (allow or deny) for a topic; a grant revoked in the database stops that topic's events on a connection within it.",
  }),
  metricsToken: setting({
    env: 'HERALD_METRICS_TOKEN',
    schema: z.string().min(1).optional(),
    doc: 'Bearer token `GET /metrics` requires (`Authorization: Bearer <token>`, 401 otherwise). Unset: /metrics is public and start-up warns. `/healthz` and `/readyz` stay public.',
    secret: true,
  }),
  corsOrigins: setting({
    env: 'HERALD_CORS_ORIGINS',
    schema: list.pipe(z.array(origin)),
    doc: 'Comma-separated browser origins (`https://app.example.com`), or `*` for any, that may call `GET /v1/events`, `GET /v1/events/stream`, `GET /v1/head` and `POST /v1/events` from another origin (CORS, preflight answered) and open `/v1/ws` (a WebSocket from another browser origin gets 403). Empty: no CORS headers (same origin only), and any WebSocket origin is accepted.',
  }),
  workers: setting({
    env: 'HERALD_WORKERS',
    schema: int(0, 256),
    doc: 'Job workers in this process (0: this process runs no jobs; `herald worker` runs workers alone).',
  }),
  jobLeaseMs: setting({
    env: 'HERALD_JOB_LEASE_MS',
    schema: int(500, 60 * MINUTE_MS),
    doc: "A running job's lease, renewed every third of it; a crashed worker's job is retried once it lapses.",
  }),
  jobMaxAttempts: setting({
    env: 'HERALD_JOB_MAX_ATTEMPTS',
    schema: int(1, 100),
    doc: 'Attempts before a job that keeps failing (or losing its worker) is failed for good.',
  }),
  jobRetryBackoffMs: setting({ env: 'HERALD_JOB_RETRY_BACKOFF_MS', schema: int(0, 60 * MINUTE_MS), doc: 'Delay before a retry, doubled on each attempt.' }),
  jobTimeoutMs: setting({ env: 'HERALD_JOB_TIMEOUT_MS', schema: int(100, DAY_MS), doc: 'Default time limit of one job run.' }),
  jobTimeoutsMs: setting({
    env: 'HERALD_JOB_TIMEOUTS_MS',
    // The default (and programmatic callers) give the map itself; the environment gives `type=ms,…`.
    schema: z.union([
      z.record(z.string(), z.number().int().min(100)),
      list.transform((entries, zctx) => {
        const out: Record<string, number> = {};
        for (const e of entries) {
          const m = /^([a-z][a-z0-9-]*)=(\d+)$/.exec(e);
          if (!m || Number(m[2]) < 100) zctx.addIssue({ code: 'custom', message: `"${e}" is not type=milliseconds (at least 100)` });
          else out[m[1]!] = Number(m[2]);
        }
        return out;
      }),
    ]),
    doc: 'Per-type time limits, e.g. `publish=120000,index-sync=600000`.',
  }),
  jobPollMs: setting({
    env: 'HERALD_JOB_POLL_MS',
    schema: int(100, 10 * MINUTE_MS),
    doc: 'Safety re-check for claimable jobs (retries coming due, lapsed leases); new jobs wake workers through the event log at once.',
  }),
  jobPrefetch: setting({
    env: 'HERALD_JOB_PREFETCH',
    schema: int(0, 256).optional(),
    doc: 'Jobs a worker pool claims ahead of its free slots, to start each the moment a slot frees instead of after the next claim; each holds its lease (and its lock key) while it waits. Unset: as many as HERALD_WORKERS. 0: claim only for free slots.',
  }),
  jobBatchMax: setting({
    env: 'HERALD_JOB_BATCH_MAX',
    schema: int(1, 10_000),
    doc: 'Most job log lines, job outcomes, or job submissions written in one commit (what gathers while the previous commit is in flight); 1 writes each alone.',
  }),
  unpublishWindowMs: setting({
    env: 'HERALD_UNPUBLISH_WINDOW_MS',
    schema: int(0, 365 * DAY_MS),
    doc: 'How long after publishing an owner may unpublish a version (trustees always may).',
  }),
  maxArchiveBytes: setting({
    env: 'HERALD_MAX_ARCHIVE_BYTES',
    schema: int(1 * KIB, 1024 * MIB),
    doc: 'Largest accepted package archive (compressed; 413 above).',
  }),
  maxArchiveUncompressedBytes: setting({
    env: 'HERALD_MAX_ARCHIVE_UNCOMPRESSED_BYTES',
    schema: int(1 * KIB, 10 * 1024 * MIB),
    doc: 'Largest total size of an archive once decompressed.',
  }),
  maxArchiveFiles: setting({ env: 'HERALD_MAX_ARCHIVE_FILES', schema: int(1, 1_000_000), doc: 'Most entries in one archive.' }),
  healthcheckUrl: setting({
    env: 'HERALD_HEALTHCHECK_URL',
    schema: z.string().url().optional(),
    doc: 'If set, Herald GETs this URL (healthchecks.io style) every HERALD_HEALTHCHECK_INTERVAL_MS while healthy, so silence alerts the operator.',
    secret: true,
  }),
  healthcheckIntervalMs: setting({ env: 'HERALD_HEALTHCHECK_INTERVAL_MS', schema: int(1000, DAY_MS), doc: 'Interval of the health-check ping.' }),
  exporter: setting({ env: 'HERALD_EXPORTER', schema: bool, doc: 'Run the exporter in `herald serve`.' }),
  exportBucketUrl: setting({
    env: 'HERALD_EXPORT_BUCKET_URL',
    schema: z.string().optional(),
    doc: 'Where the static API goes: `file:///path` or `s3://[key:secret@]bucket/prefix?endpoint=…&region=…`. Unset: `<dataDir>/bucket`.',
    secret: 'password',
  }),
  runtimeVersion: setting({
    env: 'HERALD_RUNTIME_VERSION',
    schema: z
      .string()
      .regex(/^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$/, 'must be a version string such as 2026.11.22')
      .refine((v) => v !== 'latest' && !v.includes('..'), 'must not be "latest" or contain ".."'),
    doc: "This release's version: its own export prefix, and its rank when releases share `latest/` (newer wins).",
  }),
  exportKeepVersions: setting({ env: 'HERALD_EXPORT_KEEP_VERSIONS', schema: int(1, 1000), doc: 'GC keeps the newest N `<runtimeVersion>/` prefixes.' }),
  exportGraceMs: setting({
    env: 'HERALD_EXPORT_GRACE_MS',
    schema: int(0, 365 * DAY_MS),
    doc: 'Objects of deleted or moderated packages are kept this long before GC removes them.',
  }),
  exportGcIntervalMs: setting({
    env: 'HERALD_EXPORT_GC_INTERVAL_MS',
    schema: int(0, 30 * DAY_MS),
    doc: 'How often `herald serve` runs export GC (0: only `herald export --gc`).',
  }),
  exportServePrefix: setting({
    env: 'HERALD_EXPORT_SERVE_PREFIX',
    schema: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$/),
    doc: 'Prefix `GET /api/packages/…` and `/api/archives/…` are served from (`latest`, or a release for a rollback).',
  }),
  indexSourceUrl: setting({
    env: 'HERALD_INDEX_SOURCE_URL',
    schema: z.string().url().optional(),
    doc: 'Upstream package index to mirror: `file:///path` (a crates.io-index checkout) or a sparse `https://…/` base. Unset: no index sync.',
  }),
  indexNames: setting({
    env: 'HERALD_INDEX_NAMES',
    schema: list,
    doc: 'Names to fetch from a sparse index (it cannot be listed), besides every name already mirrored.',
  }),
  indexSyncIntervalMs: setting({
    env: 'HERALD_INDEX_SYNC_INTERVAL_MS',
    schema: int(0, DAY_MS),
    doc: 'Fallback sync interval even without webhooks (0: webhook only).',
  }),
  indexFetchConcurrency: setting({ env: 'HERALD_INDEX_FETCH_CONCURRENCY', schema: int(1, 256), doc: 'Parallel requests to a sparse index.' }),
  indexWebhookSecrets: setting({
    env: 'HERALD_INDEX_WEBHOOK_SECRETS',
    schema: list,
    doc: 'HMAC secrets for `X-Hub-Signature-256` on `POST /_/index-webhook` (two for rotation). Empty: the webhook is off (the route answers 404).',
    secret: true,
  }),
  indexWebhookMaxBytes: setting({ env: 'HERALD_INDEX_WEBHOOK_MAX_BYTES', schema: int(1, 64 * MIB), doc: 'Largest webhook body (413 above).' }),
  indexWebhookReplayWindowMs: setting({
    env: 'HERALD_INDEX_WEBHOOK_REPLAY_WINDOW_MS',
    schema: int(SECOND_MS, 365 * DAY_MS),
    doc: 'How long a webhook body is remembered (by its signature, in the database): the same signed body again within this time is answered as a duplicate and queues nothing, whatever its `X-GitHub-Delivery`.',
  }),
  takedownBurst: setting({ env: 'HERALD_TAKEDOWN_BURST', schema: int(1, 1000), doc: 'Takedown form submissions a client address may make at once.' }),
  takedownPerHour: setting({ env: 'HERALD_TAKEDOWN_PER_HOUR', schema: int(1, 100_000), doc: 'Sustained takedown submissions per client address per hour.' }),
  clientToken: setting({
    env: 'HERALD_TOKEN',
    schema: z.string().optional(),
    doc: "Bearer token the CLI's client commands (`herald tail`) send, when `--token` is not given.",
    secret: true,
  }),
  serverUrl: setting({
    env: 'HERALD_URL',
    schema: z.string().url().optional(),
    doc: "Herald base URL the CLI's client commands (`herald tail`) connect to, when `--url` is not given. No default: they never guess a server.",
  }),
  shutdownGraceMs: setting({ env: 'HERALD_SHUTDOWN_GRACE_MS', schema: int(0, 10 * MINUTE_MS), doc: 'Time given to streams to drain on SIGTERM.' }),
} as const;

type Settings = typeof SETTINGS;
/** The resolved, frozen settings every part is given (one key per SETTINGS entry, units in the names). */
export type Config = {
  readonly [K in keyof Settings]: z.output<Settings[K]['schema']>;
};

/** Defaults, one place. Units are in the names. */
export const defaults = {
  port: 8080,
  host: '0.0.0.0',
  databaseUrl: undefined,
  dataDir: './.herald',
  embeddedPgPort: 54329,
  dbPoolMax: 10,
  // 30 s: covers a database container that is still starting (compose, Kubernetes) and a
  // failover, yet a wrong host or password is reported within half a minute.
  dbConnectTimeoutMs: 30 * SECOND_MS,
  logLevel: 'info',
  logFormat: 'auto',
  publishTokens: [],
  // 1 s: a NOTIFY is never lost on a live connection, so this only bounds the delay after
  // an unnoticed half-dead LISTEN socket; one indexed `id > head` query per second is free.
  safetyPollMs: 1 * SECOND_MS,
  listenerBatchSize: 1000,
  listenerReconnectMaxMs: 5 * SECOND_MS,
  replayPageSize: 500,
  maxClientQueueBytes: 1 * MIB,
  maxClientQueueEvents: 10_000,
  // 64 MiB: at 300 bytes an event (plus the 1 KiB each is charged for its objects in memory),
  // the last 50,000 events (minutes of a busy log, hours of a quiet one): what clients dropped
  // by a rolling restart or a network blip ask for.
  catchUpWindowBytes: 64 * MIB,
  retentionMaxAgeMs: 7 * DAY_MS,
  retentionMaxEvents: 0,
  retentionIntervalMs: 1 * MINUTE_MS,
  retentionBatchSize: 5000,
  maxBodyBytes: 1 * MIB,
  maxEventDataBytes: 256 * KIB,
  // 1,000: a full POST (MAX_EVENTS_PER_POST) fits one flush, which then costs what that POST
  // did alone. A flush holds the id lock while it inserts, so every other producer's commit
  // waits for it: 1,000 small events took 11 ms there on the loaded bench machine, 100 took
  // 0.8 ms; under load flushes carry 20–30 (BENCHMARKS.md, Group append).
  appendBatchMaxEvents: 1000,
  // 1 MiB, like maxBodyBytes: one default-sized publish fills a flush. The text is parsed as
  // jsonb when the statement is bound, before herald.append takes the lock.
  appendBatchMaxBytes: 1 * MIB,
  // 10,000: what a few flushes drain, tens of ms at the rates measured; a publisher that
  // would wait longer is better told to retry (or to go to another instance) at once.
  appendQueueMaxEvents: 10_000,
  // 16 MiB: the memory queued bodies may hold at most (16 full 1 MiB publishes).
  appendQueueMaxBytes: 16 * MIB,
  pollDefaultLimit: 100,
  pollMaxLimit: 1000,
  pollMaxWaitS: 60,
  // 15 s keeps idle SSE streams alive through proxies that cut at 30–60 s.
  sseHeartbeatMs: 15 * SECOND_MS,
  checkpointIntervalMs: 5 * SECOND_MS,
  shutdownGraceMs: 5 * SECOND_MS,
  // 64 KiB: subscribe messages are small; anything larger is a mistake or an attack.
  wsMaxPayloadBytes: 64 * KIB,
  wsMaxConnections: 50_000,
  // 100: the largest filter a real client uses is a handful of entries; each costs the read
  // up to 101 index probes to tell its shape (events/log.ts), within the read's budget of
  // 2,000 (PATTERN_PROBES_MAX) whatever the count.
  maxFilterEntries: 100,
  wsSubscribeBurst: 20,
  wsSubscribePerS: 5,
  // Both like wsMaxConnections: a stream costs a socket and a Subscription, not a connection.
  sseMaxStreams: 50_000,
  longPollMax: 50_000,
  // 2: catch-up reads are short index reads (issue 12 part 1) and most reconnects are served
  // by the catch-up window, so two in flight serve thousands a second; one client address
  // holds at most half, so the worst reads a stranger can send keep one backend busy, not
  // the database (BENCHMARKS.md, Under attack: publish p99 652 ms with 4, 85 ms with 2). The
  // pool is extra to dbPoolMax: the database sees dbPoolMax + readPoolMax + 1 per process.
  readPoolMax: 2,
  // 1,000 × a few ms each: a queue that drains within seconds; past it, retrying is cheaper.
  readQueueMax: 1000,
  // 5 s: a bounded read of one page takes milliseconds; one still running after 5 s is an
  // attack or a sick database, and a retry is cheaper than holding the connection.
  readTimeoutMs: 5 * SECOND_MS,
  // 250 ms a second: a quarter of one read connection, what an honest client catching up
  // needs (a page of 1,000 events takes a few ms: some 50,000 events a second), while the
  // worst reads one address can send cost the database a quarter of a core, not a whole one
  // (BENCHMARKS.md, Under attack). Keyed by address, so clients behind one proxy share it.
  readShareMsPerS: 250,
  // 10 s: a 1 MiB body needs under 1 Mbit/s to make it; one byte every few seconds does not.
  bodyTimeoutMs: 10 * SECOND_MS,
  // 30 s: above keep-alive (5 s) and any honest pause between requests; SSE heartbeats
  // (15 s) and long-polls are exempt anyway.
  idleSocketTimeoutMs: 30 * SECOND_MS,
  // 30 s: well inside the 60 s idle cut of common load balancers.
  wsPingIntervalMs: 30 * SECOND_MS,
  slowConsumerTimeoutMs: 10 * SECOND_MS,
  privateTopicPrefixes: [],
  readTokens: [],
  jwtSecrets: [],
  jwtJwksUrl: undefined,
  jwtAudience: undefined,
  jwtIssuer: undefined,
  authzFunction: undefined,
  // 60 s: a grant revoked in the database stops new topics of a connection within a minute,
  // and a pattern over many private topics costs one call per topic per minute, not per event.
  authzCacheTtlMs: 60 * SECOND_MS,
  metricsToken: undefined,
  corsOrigins: [],
  workers: 4,
  // 30 s: long enough that a GC pause or a slow query never loses a healthy job, short
  // enough that a crashed worker's job is retried within a minute.
  jobLeaseMs: 30 * SECOND_MS,
  jobMaxAttempts: 3,
  jobRetryBackoffMs: 1 * SECOND_MS,
  jobTimeoutMs: 5 * MINUTE_MS,
  jobTimeoutsMs: {},
  jobPollMs: 5 * SECOND_MS,
  // 500: a flush of 500 lines (at most 64 KiB each, usually far less) is one short statement;
  // batches form only while a flush is in flight, so the cap rarely binds but bounds the worst.
  jobBatchMax: 500,
  jobPrefetch: undefined,
  unpublishWindowMs: 3 * DAY_MS,
  maxArchiveBytes: 10 * MIB,
  maxArchiveUncompressedBytes: 50 * MIB,
  maxArchiveFiles: 2000,
  healthcheckUrl: undefined,
  healthcheckIntervalMs: 5 * MINUTE_MS,
  clientToken: undefined,
  serverUrl: undefined,
  exporter: true,
  exportBucketUrl: undefined,
  runtimeVersion: '0.1.0',
  exportKeepVersions: 3,
  exportGraceMs: 1 * DAY_MS,
  exportServePrefix: 'latest',
  exportGcIntervalMs: 60 * MINUTE_MS,
  indexSourceUrl: undefined,
  indexNames: [],
  indexSyncIntervalMs: 10 * MINUTE_MS,
  indexFetchConcurrency: 8,
  indexWebhookSecrets: [],
  indexWebhookMaxBytes: 1 * MIB,
  // A day: far past any honest retry of one delivery, so a captured one cannot be replayed
  // for a day; a sender whose body never changes (a timer posting `{}`) triggers a sync at
  // most once a day this way, and the periodic sync covers the rest.
  indexWebhookReplayWindowMs: 1 * DAY_MS,
  takedownBurst: 3,
  takedownPerHour: 10,
} satisfies Config;

/** Raw values by setting key (CLI flags, test overrides), checked by loadConfig like the environment. */
export type ConfigInput = { [K in keyof Config]?: unknown };

/** Where a resolved value came from, in precedence order: a CLI flag, the environment, the default. */
export type SettingSource = 'flag' | 'env' | 'default';

/** A `HERALD_*` variable that no setting reads, with the closest one that does. */
export interface UnknownVariable {
  variable: string;
  closest: string;
}

/** loadConfig's full answer: the settings, where each came from, and unknown variables. */
export interface ResolvedConfig {
  config: Config;
  sources: { readonly [K in keyof Config]: SettingSource };
  /** `HERALD_*` variables in the environment that no setting reads (typos, removed settings). */
  unknown: UnknownVariable[];
}

const entries = () => Object.entries(SETTINGS) as [keyof Config, Setting<z.ZodType>][];

/**
 * Resolves the configuration: `flags` (already-parsed CLI values) over `env` over defaults,
 * with where each value came from. Throws HERALD_ERR_CONFIG naming every offending setting
 * and its variable, on one line.
 */
export function resolveConfig(flags: ConfigInput = {}, env: NodeJS.ProcessEnv = process.env): ResolvedConfig {
  const out: Record<string, unknown> = {};
  const sources: Record<string, SettingSource> = {};
  const problems: string[] = [];
  for (const [key, s] of entries()) {
    const fromFlag = flags[key];
    const fromEnv = env[s.env];
    const source: SettingSource = fromFlag !== undefined ? 'flag' : fromEnv !== undefined && fromEnv !== '' ? 'env' : 'default';
    const raw = source === 'flag' ? fromFlag : source === 'env' ? fromEnv : defaults[key];
    sources[key] = source;
    const parsed = s.schema.safeParse(raw);
    if (parsed.success) out[key] = parsed.data;
    else {
      const shown = s.secret ? '<hidden>' : JSON.stringify(raw);
      problems.push(`${key} (${s.env}=${shown}): ${parsed.error.issues.map((i) => i.message).join('; ')}`);
    }
  }
  if (problems.length === 0) {
    const c = out as Config;
    if (c.pollDefaultLimit > c.pollMaxLimit) problems.push(`pollDefaultLimit (${c.pollDefaultLimit}) must not exceed pollMaxLimit (${c.pollMaxLimit})`);
    const jwt = c.jwtSecrets.length > 0 || c.jwtJwksUrl !== undefined;
    for (const key of ['jwtAudience', 'jwtIssuer'] as const) {
      if (c[key] !== undefined && !jwt)
        problems.push(`${key} (${SETTINGS[key].env}) is set but no JWT is accepted: set HERALD_JWT_SECRETS or HERALD_JWT_JWKS_URL`);
    }
  }
  if (problems.length > 0) {
    // One line: the CLI prints it as `herald: <message>`, and log collectors keep lines whole.
    throw new HeraldError('HERALD_ERR_CONFIG', `invalid configuration: ${problems.join('; ')}`);
  }
  return { config: Object.freeze(out as Config), sources: Object.freeze(sources) as ResolvedConfig['sources'], unknown: unknownVariables(env) };
}

/** Resolves the configuration (see resolveConfig) and returns the frozen values alone. */
export function loadConfig(flags: ConfigInput = {}, env: NodeJS.ProcessEnv = process.env): Config {
  return resolveConfig(flags, env).config;
}

/** Levenshtein distance: the number of one-character edits from `a` to `b`. */
function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) row[j] = Math.min(prev[j]! + 1, row[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = row;
  }
  return prev[b.length]!;
}

function unknownVariables(env: NodeJS.ProcessEnv): UnknownVariable[] {
  const known = entries().map(([, s]) => s.env);
  // Compared without the prefix, so HERALD_PORTT is one edit from PORT rather than three
  // from HERALD_HOST: a few settings (PORT, HOST, DATABASE_URL, LOG_LEVEL) have no prefix.
  const bare = (v: string) => v.replace(/^HERALD_/, '');
  return Object.keys(env)
    .filter((v) => v.startsWith('HERALD_') && !known.includes(v))
    .sort()
    .map((variable) => {
      let closest = known[0]!;
      let best = Number.POSITIVE_INFINITY;
      for (const k of known) {
        const d = editDistance(bare(variable), bare(k));
        if (d < best) [best, closest] = [d, k];
      }
      return { variable, closest };
    });
}

const REDACTED = '[redacted]';

/** One value as safe to log or print: secrets hidden, an empty secret list still shown as empty. */
function redactValue(key: keyof Config, value: unknown): unknown {
  const { secret } = SETTINGS[key] as Setting<z.ZodType>;
  if (!secret || value === undefined) return value;
  if (Array.isArray(value)) return value.map(() => REDACTED);
  if (secret === 'password' && typeof value === 'string') {
    try {
      const u = new URL(value);
      if (u.password) u.password = '***';
      return u.toString();
    } catch {
      return REDACTED;
    }
  }
  return REDACTED;
}

/** The configuration as safe to log: secrets replaced (URL settings keep all but their password). */
export function redactConfig(config: Config): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key] of entries()) out[key] = redactValue(key, config[key]);
  return out;
}

/** The settings whose value differs from the default, by variable name, secrets redacted: the start-up log line. */
export function changedSettings(config: Config): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, s] of entries()) {
    if (JSON.stringify(config[key]) !== JSON.stringify(defaults[key])) out[s.env] = redactValue(key, config[key]);
  }
  return out;
}

/**
 * `herald config --resolved`: every variable, its value in effect and where it came from.
 * Secrets are redacted but an empty list prints as `[]`, so "publishing is off" can be told
 * from "tokens are set"; an unset optional value prints as `(unset)`.
 */
export function resolvedTable({ config, sources }: ResolvedConfig): string {
  const shown = (key: keyof Config) => {
    const v = redactValue(key, config[key]);
    return v === undefined ? '(unset)' : typeof v === 'string' ? v : JSON.stringify(v);
  };
  const rows = entries().map(([key, s]) => [s.env, shown(key), sources[key]] as const);
  const widths = [0, 1].map((i) => Math.max(...rows.map((r) => r[i]!.length), 8));
  const line = (r: readonly [string, string, string]) => `${r[0].padEnd(widths[0]!)}  ${r[1].padEnd(widths[1]!)}  ${r[2]}`.trimEnd();
  return [line(['VARIABLE', 'VALUE', 'SOURCE']), ...rows.map(line)].join('\n');
}

/** Markdown table of every setting, for README.md and `herald config`. */
export function settingsTable(): string {
  const rows = (Object.entries(SETTINGS) as [keyof Config, Setting<z.ZodType>][]).map(([key, s]) => {
    const d = defaults[key];
    const shown =
      d === undefined
        ? '—'
        : Array.isArray(d)
          ? d.length
            ? d.join(',')
            : '(empty)'
          : typeof d === 'object'
            ? Object.entries(d)
                .map(([k, v]) => `${k}=${v}`)
                .join(',') || '(empty)'
            : String(d);
    return `| \`${s.env}\` | \`${key}\` | ${shown} | ${s.doc} |`;
  });
  return ['| Variable | Key | Default | Meaning |', '| --- | --- | --- | --- |', ...rows].join('\n');
}
