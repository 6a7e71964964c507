/**
 * startGateway(): the gateway core of one process, built from a Config — the database (given
 * or embedded) and its migrations, the main and read pools, the EventLog and its group
 * Appender (with a pool of its own), Hub, the one Listener, the Pruner, the stream sessions, the HTTP server and the WebSocket endpoint — and
 * the plug-ins started on top of it (gateway/plugin.ts). It returns them with an orderly
 * close(). Nothing here knows what a plug-in does: the registry is one (src/herald.ts).
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { type Express, type NextFunction, type Request, type Response, Router } from 'express';
import type pg from 'pg';
import type { Config } from '../config.ts';
import { waitForDatabase } from '../db/connect.ts';
import { type EmbeddedDatabase, startEmbeddedPostgres } from '../db/embedded.ts';
import { migrate } from '../db/migrate.ts';
import { createPool } from '../db/pool.ts';
import { coerceError, HeraldError } from '../errors.ts';
import { Appender } from '../events/appender.ts';
import { CatchUpReads } from '../events/catch-up-reads.ts';
import { Hub } from '../events/hub.ts';
import { Listener } from '../events/listener.ts';
import { EventLog } from '../events/log.ts';
import { Pruner } from '../events/retention.ts';
import { createAccessLog } from '../http/access-log.ts';
import { bodyDeadline, createApp } from '../http/app.ts';
import { createCors } from '../http/cors.ts';
import { createErrorHandler } from '../http/errors.ts';
import { createMetricsHandler, createReadyzHandler, healthz, startHealthPing } from '../http/health.ts';
import { createMetrics, type Metrics } from '../http/metrics.ts';
import { createLogger, type Logger } from '../logger.ts';
import { TopicAccess } from './access.ts';
import { createHeadHandler } from './head.ts';
import type { GatewayPlugin, GatewayServices, PluginInstance } from './plugin.ts';
import { createPollHandler } from './poll.ts';
import { ROUTES } from 'herald-client/protocol';
import { createPublishHandler, type PublishHandler } from './publish.ts';
import { Sessions } from './sessions.ts';
import { createSseHandler } from './sse.ts';
import { subscribe } from './subscribe.ts';
import { attachWebSocket, type WebSocketGateway } from './websocket.ts';

/**
 * Where the gateway is in its life: `starting` until HTTP listens, `running`, then `stopping`
 * from the first close() (new streams are refused, plug-ins are told) until everything is
 * released, `stopped`.
 */
export type GatewayState = 'starting' | 'running' | 'stopping' | 'stopped';

/** The moves the lifecycle allows; start-up that fails goes from starting to stopping. */
const TRANSITIONS: Readonly<Record<GatewayState, readonly GatewayState[]>> = {
  starting: ['running', 'stopping'],
  running: ['stopping'],
  stopping: ['stopped'],
  stopped: [],
};

/**
 * Group-append flushes in flight at once (events/appender.ts), each on its own connection.
 * 1 is pure group commit: while one flush commits, the next batch gathers.
 */
const APPEND_FLUSHES_MAX = 1;

/** How startGateway() runs. */
export interface GatewayOptions {
  logger?: Logger;
  /** Skip migrations (when `herald migrate` runs separately). */
  skipMigrations?: boolean;
  /** Serve HTTP (default true; `herald worker` runs workers only). */
  http?: boolean;
  /** Started in order once the gateway's services run; closed in reverse order. */
  plugins?: readonly GatewayPlugin[];
}

/** A running gateway core. */
export interface Gateway {
  /** The services plug-ins were started with. */
  readonly services: GatewayServices;
  readonly state: GatewayState;
  readonly websockets: WebSocketGateway;
  /** Base URL of the HTTP server, e.g. http://127.0.0.1:8080 (empty when not serving HTTP). */
  readonly url: string;
  readonly databaseUrl: string;
  readonly server: http.Server;
  readonly pruner: Pruner;
  /** The group append that POST /v1/events goes through. */
  readonly appender: Appender;
  /** Stops accepting, ends every stream with its resume position, and releases everything. */
  close(): Promise<void>;
}

/**
 * Everything the transports, the publish route and the health handlers are built from: each
 * takes the narrow part it declares. Not handed to plug-ins (they get GatewayServices).
 */
interface GatewayParts {
  readonly config: Config;
  readonly logger: Logger;
  readonly pool: pg.Pool;
  readonly log: EventLog;
  readonly appender: Appender;
  readonly hub: Hub;
  readonly listener: Listener;
  readonly metrics: Metrics;
  readonly sessions: Sessions;
  readonly access: TopicAccess;
  readonly stopping: boolean;
}

/** Starts the gateway core and `options.plugins` on it; see the file comment. */
export async function startGateway(config: Config, options: GatewayOptions = {}): Promise<Gateway> {
  const logger = options.logger ?? createLogger(config.logLevel, undefined, config.logFormat);
  const servesHttp = options.http ?? true;
  const { databaseUrl, pool, embedded } = await openDatabase(config, logger, options.skipMigrations ?? false);

  let state: GatewayState = 'starting';
  /** The one place the state changes: a move the lifecycle does not allow is refused (false). */
  const transition = (to: GatewayState): boolean => {
    if (!TRANSITIONS[state].includes(to)) return false;
    state = to;
    return true;
  };
  const isStopping = () => state === 'stopping' || state === 'stopped';

  const metrics = createMetrics();
  // Client-driven catch-up reads get a pool of their own (events/catch-up-reads.ts).
  const readPool = createPool(databaseUrl, config.readPoolMax, logger, { applicationName: 'herald-reads', statementTimeoutMs: config.readTimeoutMs });
  const reads = new CatchUpReads({
    pool: readPool,
    max: config.readPoolMax,
    queueMax: config.readQueueMax,
    timeoutMs: config.readTimeoutMs,
    shareMsPerS: config.readShareMsPerS,
    logger,
  });
  const log = new EventLog(pool, reads);
  // Group append (events/appender.ts): flushes run on connections of their own, so a busy main
  // pool (jobs, the registry) never delays a publish, and a publish never takes theirs.
  const appendPool = createPool(databaseUrl, APPEND_FLUSHES_MAX, logger, { applicationName: 'herald-append' });
  const appender = new Appender({
    pool: appendPool,
    maxBatchEvents: config.appendBatchMaxEvents,
    maxBatchBytes: config.appendBatchMaxBytes,
    maxQueueEvents: config.appendQueueMaxEvents,
    maxQueueBytes: config.appendQueueMaxBytes,
    maxFlushes: APPEND_FLUSHES_MAX,
  });
  const hub = new Hub({
    maxBytes: config.catchUpWindowBytes,
    retentionMaxAgeMs: config.retentionMaxAgeMs,
    retentionMaxEvents: config.retentionMaxEvents,
  });
  const listener = new Listener({
    databaseUrl,
    log,
    hub,
    logger,
    safetyPollMs: config.safetyPollMs,
    batchSize: config.listenerBatchSize,
    reconnectMaxMs: config.listenerReconnectMaxMs,
  });
  listener.on('listener:read', (n, _head, fanoutMs) => {
    metrics.eventsRead.inc(n);
    metrics.fanoutSeconds.observe(fanoutMs / 1000);
  });
  listener.on('listener:state', (listenerState) => {
    logger.info({ state: listenerState }, 'listener state');
    if (listenerState === 'listening' && listener.reconnects > 0) metrics.listenerReconnects.inc();
  });
  const sessions = new Sessions();
  const parts: GatewayParts = {
    config,
    logger,
    pool,
    log,
    appender,
    hub,
    listener,
    metrics,
    sessions,
    // HERALD_AUTHZ_FUNCTION runs on the catch-up read pool (gateway/authz-function.ts).
    access: new TopicAccess(config, { queries: reads, logger }),
    get stopping() {
      return isStopping();
    },
  };
  const { access } = parts;
  /** Pools opened by plug-ins (GatewayServices.openPool), ended after the plug-ins close. */
  const pluginPools: pg.Pool[] = [];
  const services: GatewayServices = {
    config,
    logger,
    pool,
    log,
    hub,
    metrics,
    listener,
    servesHttp,
    get stopping() {
      return isStopping();
    },
    // A plug-in reads as itself: no topic is private to it.
    subscribe: (transport, opts) => subscribe(parts, transport, opts),
    openPool: (applicationName, max, opts) => {
      const opened = createPool(databaseUrl, max, logger, { ...opts, applicationName });
      pluginPools.push(opened);
      return opened;
    },
    readable: async ({ authorization, token, address }, topics, signal) =>
      access.readable(topics, access.reader(await access.authenticate(authorization, token), address), signal),
  };

  await listener.start();
  const pruner = new Pruner({
    log,
    logger,
    intervalMs: config.retentionIntervalMs,
    maxAgeMs: config.retentionMaxAgeMs,
    maxEvents: config.retentionMaxEvents,
    batchSize: config.retentionBatchSize,
    onPruned: (n) => metrics.eventsPruned.inc(n),
  });
  pruner.start();
  const stopPing = config.healthcheckUrl
    ? startHealthPing(
        config.healthcheckUrl,
        config.healthcheckIntervalMs,
        async () =>
          listener.state === 'listening' &&
          (await log.readHead().then(
            () => true,
            () => false,
          )),
        logger,
      )
    : () => undefined;

  // headersTimeout is only checked every connectionsCheckingInterval (30 s by default). The
  // app is attached once the plug-ins have given their routers.
  const server = http.createServer({ connectionsCheckingInterval: Math.min(30_000, Math.ceil(config.idleSocketTimeoutMs / 4)) });
  const websockets = attachWebSocket(parts, server);
  // Long-polls may wait pollMaxWaitS; keep Node from cutting them. Bodies have their own
  // deadline (bodyTimeoutMs, http/app.ts); an idle socket is cut after idleSocketTimeoutMs,
  // except SSE streams and long-polls, which lift it while they stream, and WebSockets
  // (ws lifts it on upgrade).
  server.requestTimeout = 0;
  server.headersTimeout = config.idleSocketTimeoutMs;
  server.timeout = config.idleSocketTimeoutMs;

  const instances: { name: string; instance: PluginInstance }[] = [];
  let closing: Promise<void> | undefined;
  const close = () =>
    (closing ??= (async () => {
      transition('stopping');
      // Plug-ins stop taking new work at once (the registry stops claiming jobs); what runs
      // gets the grace period alongside HTTP.
      for (const { instance } of instances) instance.stopping?.();
      stopPing();
      const serverClosed = servesHttp ? new Promise<void>((resolve) => server.close(() => resolve())) : Promise.resolve();
      sessions.closeAll(new HeraldError('HERALD_ERR_SHUTTING_DOWN', 'server is shutting down: resume from your last position on any instance'));
      server.closeIdleConnections();
      // Streams got their closing frame; give them a moment to flush, then cut.
      const grace = setTimeout(() => server.closeAllConnections(), config.shutdownGraceMs);
      await websockets.close(config.shutdownGraceMs);
      await serverClosed;
      clearTimeout(grace);
      // A plug-in that fails to close must not keep the database and the embedded server up:
      // the rest is released, then the first failure is reported.
      let failure: unknown;
      for (const { name, instance } of [...instances].reverse()) {
        await instance.close().catch((err: unknown) => {
          failure ??= err;
          logger.error({ plugin: name, err: coerceError(err).message }, 'plug-in failed to close');
        });
      }
      // Plug-ins may append until they have closed; what is queued then is flushed.
      await appender.close();
      await pruner.stop();
      await listener.close();
      await pool.end();
      for (const p of pluginPools) await p.end();
      await appendPool.end();
      await readPool.end();
      await embedded?.stop();
      transition('stopped');
      logger.info('herald stopped');
      if (failure !== undefined) throw failure;
    })());

  try {
    for (const plugin of options.plugins ?? []) instances.push({ name: plugin.name, instance: await plugin.start(services) });
    const publish = createPublishHandler(parts);
    const app = createApp({
      logger,
      bodyTimeoutMs: config.bodyTimeoutMs,
      quietPaths: [ROUTES.healthz, ROUTES.readyz, ROUTES.metrics],
      routes: [
        createGatewayRouter(
          parts,
          publish,
          instances.map((p) => p.instance),
        ),
      ],
    });
    server.on('request', createRequestListener(config, logger, app, publish));
    if (servesHttp) await listen(server, config);
  } catch (err) {
    // Everything above is running (and maybe an embedded PostgreSQL): stop it before failing.
    await close();
    throw err;
  }
  transition('running');

  let url = '';
  if (servesHttp) {
    const address = server.address() as AddressInfo;
    const host = config.host === '0.0.0.0' || config.host === '::' ? '127.0.0.1' : config.host;
    url = `http://${host}:${address.port}`;
    // The line people look for: the URL to open.
    logger.info({ url }, `herald listening on ${url}`);
    if (config.metricsToken === undefined) logger.warn(`${ROUTES.metrics} is public: set HERALD_METRICS_TOKEN to require a bearer token (docs/operations.md)`);
  }

  return {
    services,
    get state() {
      return state;
    },
    websockets,
    url,
    databaseUrl,
    server,
    pruner,
    appender,
    close,
  };
}

/** Connects to the database (starting the embedded one when no URL is set) and migrates it. */
async function openDatabase(
  config: Config,
  logger: Logger,
  skipMigrations: boolean,
): Promise<{ databaseUrl: string; pool: pg.Pool; embedded: EmbeddedDatabase | undefined }> {
  let embedded: EmbeddedDatabase | undefined;
  let databaseUrl = config.databaseUrl;
  if (!databaseUrl) {
    const dir = path.resolve(config.dataDir, 'pg');
    logger.info({ dir, port: config.embeddedPgPort }, 'DATABASE_URL is not set: starting embedded PostgreSQL');
    // As root, the binaries or the data may be moved somewhere the `postgres` user can reach:
    // the notice says where and why (docs/operations.md "Running as root").
    embedded = await startEmbeddedPostgres({ dir, port: config.embeddedPgPort, onNotice: (message) => logger.warn(message) });
    databaseUrl = embedded.url;
    // Local-only server with a fixed local password: logged in full so `herald migrate`,
    // `herald token create` and psql can reach it while `herald serve` runs.
    logger.info({ databaseUrl: embedded.url }, `embedded PostgreSQL: ${embedded.url}`);
  }
  const pool = createPool(databaseUrl, config.dbPoolMax, logger);
  try {
    await waitForDatabase(databaseUrl, { budgetMs: config.dbConnectTimeoutMs, logger });
    if (!skipMigrations) await migrate(pool, logger);
  } catch (err) {
    await pool.end();
    await embedded?.stop();
    throw err;
  }
  return { databaseUrl, pool, embedded };
}

/**
 * The gateway's routes (health, the protocol's HTTP transports, publish) with the plug-ins'
 * routers between them and the gateway's own refusals (426 on the WebSocket path without an
 * upgrade, 405 on a protocol path with another method).
 */
function createGatewayRouter(parts: GatewayParts, publish: PublishHandler, plugins: readonly PluginInstance[]): Router {
  const router = Router();
  // First: a preflight must be answered before the 405 below refuses OPTIONS.
  router.use(createCors(parts.config.corsOrigins, { [ROUTES.events]: ['GET', 'POST'], [ROUTES.stream]: ['GET'], [ROUTES.head]: ['GET'] }));
  router.get(ROUTES.healthz, healthz);
  router.get(ROUTES.readyz, createReadyzHandler(parts));
  router.get(ROUTES.metrics, createMetricsHandler(parts));
  router.get(ROUTES.head, createHeadHandler(parts));
  router.get(ROUTES.stream, createSseHandler(parts));
  router.get(ROUTES.events, createPollHandler(parts));
  // Publishes from browsers (with an Origin header) come here, after CORS; the others are
  // served before the app (createRequestListener).
  router.post(ROUTES.events, (req: Request, res: Response, next: NextFunction) => publish(req, res, next));
  for (const plugin of plugins) if (plugin.api) router.use('/api/v1', plugin.api);
  for (const plugin of plugins) for (const r of plugin.routers ?? []) router.use(r);
  router.all(ROUTES.ws, (_req: Request, res: Response) => {
    res.set('upgrade', 'websocket');
    throw new HeraldError('HERALD_ERR_UPGRADE_REQUIRED', `${ROUTES.ws} is a WebSocket endpoint: connect with a WebSocket client`);
  });
  router.all([ROUTES.events, ROUTES.head, ROUTES.stream], (req: Request) => {
    throw new HeraldError('HERALD_ERR_METHOD_NOT_ALLOWED', `${req.method} is not allowed on ${req.path}`);
  });
  return router;
}

/**
 * The HTTP server's request listener: the app, except for `POST /v1/events` without an
 * Origin header (every publisher but a browser), which is served before it with the same
 * access log, body deadline and error mapping. Express's own work per request (its request
 * and response objects, its routing) cost about 0.13 ms of CPU, more than the rest of a
 * publish together (BENCHMARKS.md, Group append). A browser's publish takes the app's route,
 * which answers CORS; with CORS configured, the direct answers say `Vary: Origin` as
 * createCors makes every answer of the route say.
 */
function createRequestListener(config: Config, logger: Logger, app: Express, publish: PublishHandler): http.RequestListener {
  const accessLog = createAccessLog(logger);
  const deadline = bodyDeadline(config.bodyTimeoutMs);
  const answerError = createErrorHandler({ logger });
  const cors = config.corsOrigins.length > 0;
  return (req, res) => {
    if (req.method !== 'POST' || req.headers.origin !== undefined || !isPublishPath(req.url ?? '')) return void app(req, res);
    if (cors) res.setHeader('vary', 'Origin');
    const fail = (err: unknown) => answerError(err, req, res, undefined);
    accessLog(req, res, () => deadline(req, res, () => publish(req, res, fail)));
  };
}

/** Whether `url` is ROUTES.events as Express matches a route: any case, a trailing slash allowed, any query. */
function isPublishPath(url: string): boolean {
  const q = url.indexOf('?');
  const p = (q < 0 ? url : url.slice(0, q)).toLowerCase();
  return p === ROUTES.events || p === `${ROUTES.events}/`;
}

/** Listens on the configured port and host; a failure comes back as listenError() says. */
function listen(server: http.Server, config: Config): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const onError = (err: unknown) => reject(listenError(err, config));
    server.once('error', onError);
    server.listen(config.port, config.host, () => {
      server.off('error', onError);
      resolve();
    });
  });
}

/** A failed listen() as one line saying which setting to change; other errors pass through. */
function listenError(err: unknown, config: Config): unknown {
  const code = (err as { code?: unknown } | null)?.code;
  const where = `port ${config.port} on ${config.host}`;
  const message =
    code === 'EADDRINUSE'
      ? `${where} is in use (set PORT or --port)`
      : code === 'EACCES'
        ? `not allowed to listen on ${where} (ports below 1024 need privileges; set PORT or --port)`
        : code === 'EADDRNOTAVAIL' || code === 'ENOTFOUND'
          ? `cannot listen on ${where}: ${config.host} is not an address of this machine (set HOST or --host)`
          : undefined;
  return message ? new HeraldError('HERALD_ERR_CANNOT_LISTEN', message, {}, { cause: err }) : err;
}
