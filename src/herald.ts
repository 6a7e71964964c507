/**
 * startHerald(): the composition root of one Herald process — the gateway core
 * (gateway/server.ts: database, event log, fan-out, HTTP and WebSocket) with the registry
 * plugged into it (registry/module.ts: job workers, the job API, exporter, index sync,
 * webhook, pages). It returns the handles the CLI, tests and benchmarks use, and close().
 */
import type http from 'node:http';
import type { Config } from './config.ts';
import type { Pruner } from './events/retention.ts';
import type { GatewayServices } from './gateway/plugin.ts';
import { type GatewayOptions, startGateway } from './gateway/server.ts';
import type { WebSocketGateway } from './gateway/websocket.ts';
import { createRegistry, type RegistryOptions } from './registry/module.ts';

type Registry = ReturnType<typeof createRegistry>;

/** One running Herald process: the gateway's parts and the registry's handles. */
export interface Herald {
  /** The gateway's shared services (config, logger, pool, log, hub, listener, metrics). */
  readonly ctx: GatewayServices;
  readonly websockets: WebSocketGateway;
  /** Base URL of the HTTP server, e.g. http://127.0.0.1:8080. */
  readonly url: string;
  readonly databaseUrl: string;
  readonly server: http.Server;
  readonly pruner: Pruner;
  readonly jobs: Registry['jobs'];
  readonly tokens: Registry['tokens'];
  /** This process's job workers (null with `workers: 0`). */
  readonly workers: Registry['workers'];
  readonly bucket: Registry['bucket'];
  /** The exporter (running unless `exporter: false`; `herald export` drives one by hand). */
  readonly exporter: Registry['exporter'];
  /** Stops accepting, ends every stream with its resume position, and releases everything. */
  close(): Promise<void>;
}

/**
 * How startHerald() runs: the gateway's options (logger, skipMigrations, http) and the
 * registry's (extra job handlers, exporter overrides, runExporter), passed through.
 */
export interface StartOptions extends Omit<GatewayOptions, 'plugins'>, RegistryOptions {}

/** Starts the gateway core with the registry plugged in; see the file comment. */
export async function startHerald(config: Config, options: StartOptions = {}): Promise<Herald> {
  const { logger, skipMigrations, http: serveHttp, ...registryOptions } = options;
  const registry = createRegistry(registryOptions);
  const gateway = await startGateway(config, { logger, skipMigrations, http: serveHttp, plugins: [registry] });
  return {
    ctx: gateway.services,
    websockets: gateway.websockets,
    url: gateway.url,
    databaseUrl: gateway.databaseUrl,
    server: gateway.server,
    pruner: gateway.pruner,
    jobs: registry.jobs,
    tokens: registry.tokens,
    workers: registry.workers,
    bucket: registry.bucket,
    exporter: registry.exporter,
    close: gateway.close,
  };
}
