/**
 * The registry as a gateway plug-in: on start it builds the job engine with the registry's
 * handlers, the bucket and its exporter, the periodic index sync, and the routes (the API
 * under /api/v1, the exported static API, the index webhook and the pages). The gateway core
 * (gateway/server.ts) hands it its services and knows nothing else about it.
 */
import path from 'node:path';
import { coerceError, HeraldError } from '../errors.ts';
import type { Bucket } from '../exporter/bucket.ts';
import { Exporter, type ExporterOptions, type PackageSource } from '../exporter/exporter.ts';
import { openBucket } from '../exporter/open-bucket.ts';
import { ExportStore } from '../exporter/store.ts';
import type { GatewayPlugin, GatewayServices, PluginInstance } from '../gateway/plugin.ts';
import { JobStore } from '../jobs/store.ts';
import { type JobHandler, WorkerPool } from '../jobs/worker-pool.ts';
import { createExportRoutes } from './exported-routes.ts';
import { createRegistryHandlers } from './handlers.ts';
import { IndexStore } from './index-store.ts';
import { createPageRoutes, WEB_DIST, webBuilt } from './pages.ts';
import { createRegistryRoutes } from './routes.ts';
import * as registry from './store.ts';
import { TakedownStore } from './takedown-store.ts';
import { TokenStore } from './tokens.ts';
import { createWebhookRoutes, requestIndexSync } from './webhook.ts';

/** How the embedding process wants the registry run. */
export interface RegistryOptions {
  /** Extra job handlers by type (embedders and benchmarks); the registry's are always there. */
  handlers?: Record<string, JobHandler>;
  /** Exporter overrides (tests: clock, JSON transform). */
  exporter?: Partial<ExporterOptions>;
  /** Start the exporter loop (default: config.exporter; `herald export` drives one by hand). */
  runExporter?: boolean;
}

/** The registry plug-in, with the handles the CLI, tests and benchmarks use once it has started. */
export interface Registry extends GatewayPlugin {
  readonly jobs: JobStore;
  readonly tokens: TokenStore;
  /** This process's job workers (null with `workers: 0`). */
  readonly workers: WorkerPool | null;
  readonly bucket: Bucket;
  /** The exporter (running unless `exporter: false`). */
  readonly exporter: Exporter;
}

interface Handles {
  jobs: JobStore;
  tokens: TokenStore;
  workers: WorkerPool | null;
  bucket: Bucket;
  exporter: Exporter;
}

/** The registry's store as the exporter's PackageSource. */
function packageSource(pool: GatewayServices['pool']): PackageSource {
  return {
    names: () => registry.packageNames(pool),
    get: (name) => registry.getPackage(pool, name),
    archives: (name) => registry.getArchives(pool, name),
    collectable: (names, before) => registry.collectablePackages(pool, names, before),
  };
}

/** Creates the registry plug-in; its handles are readable once the gateway has started it. */
export function createRegistry(options: RegistryOptions = {}): Registry {
  let handles: Handles | null = null;
  const started = (): Handles => {
    if (!handles) throw new HeraldError('HERALD_ERR_INTERNAL', 'the registry has not started yet');
    return handles;
  };
  return {
    name: 'registry',
    get jobs() {
      return started().jobs;
    },
    get tokens() {
      return started().tokens;
    },
    get workers() {
      return started().workers;
    },
    get bucket() {
      return started().bucket;
    },
    get exporter() {
      return started().exporter;
    },
    async start(services) {
      const started = await startRegistry(services, options);
      handles = started.handles;
      return started.instance;
    },
  };
}

/**
 * The job engine's connections: its writes (claims with outcomes, log lines: one flush in
 * flight each) and lease renewals run on a pool of their own, so a busy main pool (HTTP
 * requests, handlers' effects) never delays a claim. Its few fixed statements are planned
 * once (genericPlans): planning the claim statement afresh cost more than running it.
 */
const ENGINE_CONNECTIONS = 3;

async function startRegistry(services: GatewayServices, options: RegistryOptions): Promise<{ instance: PluginInstance; handles: Handles }> {
  const { config, logger, pool } = services;
  const subscribe: GatewayServices['subscribe'] = (transport, opts) => services.subscribe(transport, opts);
  const jobs = new JobStore(pool, { batchMax: config.jobBatchMax });
  const tokens = new TokenStore(pool);
  const index = new IndexStore(pool);
  const workers =
    config.workers > 0
      ? new WorkerPool(
          {
            store: new JobStore(services.openPool('herald-jobs', ENGINE_CONNECTIONS, { genericPlans: true }), { batchMax: config.jobBatchMax }),
            pool,
            logger,
            subscribe,
            settings: config,
          },
          { ...createRegistryHandlers({ settings: config, index, pool }), ...options.handlers },
        )
      : null;
  let exporter: Exporter | undefined;
  try {
    await workers?.start();
    const bucket = await openBucket(config.exportBucketUrl ?? `file://${path.resolve(config.dataDir, 'bucket')}`);
    exporter = new Exporter(
      { packages: packageSource(pool), store: new ExportStore(pool), log: services.log, hub: services.hub, subscribe, logger, metrics: services.metrics },
      bucket,
      { runtimeVersion: config.runtimeVersion, keepVersions: config.exportKeepVersions, graceMs: config.exportGraceMs, ...options.exporter },
    );
    if (options.runExporter ?? config.exporter) await exporter.start(config.exportGcIntervalMs);
    const handles = { jobs, tokens, workers, bucket, exporter };
    return { instance: assemble(services, handles, index), handles };
  } catch (err) {
    // The gateway closes what it started; what this start began is the registry's to stop.
    await workers?.stop();
    await exporter?.stop();
    throw err;
  }
}

/** The running registry's routes, its periodic index sync and its shutdown steps. */
function assemble(services: GatewayServices, handles: Handles, index: IndexStore): PluginInstance {
  const { config, logger, pool } = services;
  const { jobs, tokens, workers, bucket, exporter } = handles;
  // The fallback sync, where the API is served: every such process asks; the requests fold
  // into the one queued sync.
  const indexTimer =
    config.indexSourceUrl && config.indexSyncIntervalMs > 0 && services.servesHttp
      ? setInterval(
          () =>
            void requestIndexSync(jobs, 'periodic').catch((err: unknown) =>
              logger.warn({ err: coerceError(err).message }, 'could not queue the periodic index sync'),
            ),
          config.indexSyncIntervalMs,
        )
      : null;
  // Unsigned webhooks were once accepted: say why a sender that relied on that now gets 404.
  if (services.servesHttp && config.indexSourceUrl && config.indexWebhookSecrets.length === 0)
    logger.info('the index webhook is off (POST /_/index-webhook answers 404): set HERALD_INDEX_WEBHOOK_SECRETS to turn it on');
  // The pages' scripts are built ahead of time (`npm run build`); nothing is built here.
  if (services.servesHttp && !webBuilt())
    logger.warn({ dir: WEB_DIST }, "the web pages' scripts are not built (run `npm run build`): pages will load without them");

  let workersStopped: Promise<void> | undefined;
  const stopping = () => {
    // Stop claiming jobs at once; running ones get the grace period alongside HTTP.
    workersStopped ??= workers?.stop() ?? Promise.resolve();
    if (indexTimer) clearInterval(indexTimer);
  };
  return {
    api: createRegistryRoutes({
      jobs,
      tokens,
      pool,
      settings: config,
      workers,
      exporter,
      listener: services.listener,
      hub: services.hub,
      metrics: services.metrics,
      readable: services.readable,
    }),
    routers: [
      createExportRoutes(bucket, config.exportServePrefix),
      createWebhookRoutes({
        jobs,
        index,
        secrets: config.indexWebhookSecrets,
        maxBytes: config.indexWebhookMaxBytes,
        replayWindowMs: config.indexWebhookReplayWindowMs,
      }),
      createPageRoutes({ jobs, bucket, takedowns: new TakedownStore(pool), settings: config }),
    ],
    stopping,
    async close() {
      stopping();
      await workersStopped;
      await exporter.stop();
      // Submissions still gathering (an index sync queued on the way out) are written before the pool ends.
      await jobs.close();
    },
  };
}
