/**
 * startHerald(): builds one Herald process from a Config — database (given or embedded),
 * migrations, pool, event log, Hub, the one Listener, the pruner and the HTTP server — and
 * returns it with an orderly close().
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import type { Config } from './config.ts';
import type { HeraldContext } from './context.ts';
import { startEmbeddedPostgres, type EmbeddedDatabase } from './db/embedded.ts';
import { migrate } from './db/migrate.ts';
import { waitForDatabase } from './db/connect.ts';
import { createPool } from './db/pool.ts';
import { HeraldError } from './errors.ts';
import { CatchUpReads } from './events/catch-up-reads.ts';
import { Hub } from './events/hub.ts';
import { Listener } from './events/listener.ts';
import { EventLog } from './events/log.ts';
import { Pruner } from './events/retention.ts';
import { TopicAccess } from './gateway/access.ts';
import { Sessions } from './gateway/sessions.ts';
import { attachWebSocket, type WebSocketGateway } from './gateway/websocket.ts';
import { createApp } from './http/app.ts';
import { startHealthPing } from './http/health.ts';
import { createRegistryHandlers } from './jobs/handlers.ts';
import { createJobRoutes } from './jobs/routes.ts';
import { JobStore } from './jobs/store.ts';
import { type JobHandler, WorkerPool } from './jobs/worker-pool.ts';
import { TokenStore } from './registry/tokens.ts';
import { type Bucket, openBucket } from './exporter/bucket.ts';
import { Exporter, type ExporterOptions } from './exporter/exporter.ts';
import { createExportRoutes } from './exporter/serve.ts';
import { createWebhookRoutes, requestIndexSync } from './registry/webhook.ts';
import { createPageRoutes, WEB_DIST, webBuilt } from './http/pages.ts';
import { createMetrics } from './http/metrics.ts';
import { createLogger, type Logger } from './logger.ts';

export interface Herald {
  readonly ctx: HeraldContext;
  readonly websockets: WebSocketGateway;
  /** Base URL of the HTTP server, e.g. http://127.0.0.1:8080. */
  readonly url: string;
  readonly databaseUrl: string;
  readonly server: http.Server;
  readonly pruner: Pruner;
  readonly jobs: JobStore;
  readonly tokens: TokenStore;
  /** This process's job workers (null with `workers: 0`). */
  readonly workers: WorkerPool | null;
  readonly bucket: Bucket;
  /** The exporter (running unless `exporter: false`; `herald export` drives one by hand). */
  readonly exporter: Exporter;
  /** Stops accepting, ends every stream with its resume cursor, and releases everything. */
  close(): Promise<void>;
}

export interface StartOptions {
  logger?: Logger;
  /** Skip migrations (when `herald migrate` runs separately). */
  skipMigrations?: boolean;
  /** Serve HTTP (default true; `herald worker` runs workers only). */
  http?: boolean;
  /** Extra job handlers by type (embedders and benchmarks); registry handlers are always there. */
  handlers?: Record<string, JobHandler>;
  /** Exporter overrides (tests: clock, JSON transform). */
  exporter?: Partial<ExporterOptions>;
  /** Start the exporter loop (default: config.exporter). */
  runExporter?: boolean;
}

export async function startHerald(config: Config, options: StartOptions = {}): Promise<Herald> {
  const logger = options.logger ?? createLogger(config.logLevel, undefined, config.logFormat);
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
    if (!options.skipMigrations) await migrate(pool, logger);
  } catch (err) {
    await pool.end();
    await embedded?.stop();
    throw err;
  }
  const metrics = createMetrics();
  // Client-driven catch-up reads get a pool of their own (events/catch-up-reads.ts).
  const readPool = createPool(databaseUrl, config.readPoolMax, logger, { applicationName: 'herald-reads', statementTimeoutMs: config.readTimeoutMs });
  const reads = new CatchUpReads({ pool: readPool, max: config.readPoolMax, queueMax: config.readQueueMax, timeoutMs: config.readTimeoutMs, logger });
  const log = new EventLog(pool, reads);
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
  listener.on('listener:state', (state) => {
    logger.info({ state }, 'listener state');
    if (state === 'listening' && listener.reconnects > 0) metrics.listenerReconnects.inc();
  });
  const sessions = new Sessions();
  const state = { stopping: false };
  const ctx: HeraldContext = {
    config,
    logger,
    pool,
    log,
    hub,
    listener,
    metrics,
    sessions,
    access: new TopicAccess(config),
    get stopping() {
      return state.stopping;
    },
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

  const jobs = new JobStore(pool);
  const tokens = new TokenStore(pool);
  const workers = config.workers > 0 ? new WorkerPool(ctx, jobs, { ...createRegistryHandlers(config, pool), ...options.handlers }) : null;
  await workers?.start();
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

  const bucket = await openBucket(config.exportBucketUrl ?? `file://${path.resolve(config.dataDir, 'bucket')}`);
  const exporter = new Exporter(ctx, bucket, {
    runtimeVersion: config.runtimeVersion,
    keepVersions: config.exportKeepVersions,
    graceMs: config.exportGraceMs,
    ...options.exporter,
  });
  if (options.runExporter ?? config.exporter) await exporter.start(config.exportGcIntervalMs);

  const serveHttp = options.http ?? true;
  // The fallback sync, where the API is served: every such process asks; the requests fold
  // into the one queued sync.
  const indexTimer =
    config.indexSourceUrl && config.indexSyncIntervalMs > 0 && serveHttp
      ? setInterval(
          () => void requestIndexSync(jobs, 'periodic').catch((err: Error) => logger.warn({ err: err.message }, 'could not queue the periodic index sync')),
          config.indexSyncIntervalMs,
        )
      : null;

  // The pages' scripts are built ahead of time (`npm run build`); nothing is built here.
  if (serveHttp && !webBuilt()) logger.warn({ dir: WEB_DIST }, "the web pages' scripts are not built (run `npm run build`): pages will load without them");
  // headersTimeout is only checked every connectionsCheckingInterval (30 s by default).
  const server = http.createServer(
    { connectionsCheckingInterval: Math.min(30_000, Math.ceil(config.idleSocketTimeoutMs / 4)) },
    createApp(ctx, {
      api: createJobRoutes({ ctx, jobs, tokens, workers, exporter }),
      exported: createExportRoutes(bucket, config.exportServePrefix),
      webhook: createWebhookRoutes({ pool, jobs, secrets: config.indexWebhookSecrets, maxBytes: config.indexWebhookMaxBytes }),
      pages: createPageRoutes(ctx, jobs, bucket),
    }),
  );
  const websockets = attachWebSocket(ctx, server);
  // Long-polls may wait pollMaxWaitS; keep Node from cutting them. Bodies have their own
  // deadline (bodyTimeoutMs, http/app.ts); an idle socket is cut after idleSocketTimeoutMs,
  // except SSE streams and long-polls, which lift it while they stream, and WebSockets
  // (ws lifts it on upgrade).
  server.requestTimeout = 0;
  server.headersTimeout = config.idleSocketTimeoutMs;
  server.timeout = config.idleSocketTimeoutMs;
  let closing: Promise<void> | undefined;
  const close = () =>
    (closing ??= (async () => {
      state.stopping = true;
      // Stop claiming jobs at once; running ones get the grace period alongside HTTP.
      const workersStopped = workers?.stop();
      stopPing();
      if (indexTimer) clearInterval(indexTimer);
      const serverClosed = serveHttp ? new Promise<void>((resolve) => server.close(() => resolve())) : Promise.resolve();
      sessions.closeAll(new HeraldError('HERALD_ERR_SHUTTING_DOWN', 'server is shutting down: resume from your last position on any instance'));
      server.closeIdleConnections();
      // Streams got their closing frame; give them a moment to flush, then cut.
      const grace = setTimeout(() => server.closeAllConnections(), config.shutdownGraceMs);
      await websockets.close(config.shutdownGraceMs);
      await serverClosed;
      clearTimeout(grace);
      await workersStopped;
      await exporter.stop();
      await pruner.stop();
      await listener.close();
      await pool.end();
      await readPool.end();
      await embedded?.stop();
      logger.info('herald stopped');
    })());

  let url = '';
  if (serveHttp) {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(config.port, config.host, () => {
        server.off('error', reject);
        resolve();
      });
    }).catch(async (err: unknown) => {
      // Everything above is running (and maybe an embedded PostgreSQL): stop it before failing.
      await close();
      throw listenError(err, config);
    });
    const address = server.address() as AddressInfo;
    const host = config.host === '0.0.0.0' || config.host === '::' ? '127.0.0.1' : config.host;
    url = `http://${host}:${address.port}`;
    // The line people look for: the URL to open.
    logger.info({ url }, `herald listening on ${url}`);
  }

  return { ctx, websockets, url, databaseUrl, server, pruner, jobs, tokens, workers, bucket, exporter, close };
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
