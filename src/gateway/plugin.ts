/**
 * The plug-in contract between the gateway core (server.ts) and a product built on it, such
 * as the registry (src/registry/module.ts). The gateway owns the database, the event log, the
 * fan-out and the HTTP server; a plug-in gets those services, adds routes and background work,
 * and is told when shutdown begins and when to release what it holds. The gateway knows
 * nothing else about it: the registry's jobs, exporter and pages stay on its side of this line.
 */
import type { Router } from 'express';
import type pg from 'pg';
import type { Config } from '../config.ts';
import type { Hub } from '../events/hub.ts';
import type { Listener } from '../events/listener.ts';
import type { EventLog } from '../events/log.ts';
import type { Subscription } from '../events/subscription.ts';
import type { PoolOptions } from '../db/pool.ts';
import type { Metrics } from '../http/metrics.ts';
import type { Logger } from '../logger.ts';
import type { SubscribeOptions } from './subscribe.ts';

/** What the gateway core hands a plug-in: its shared services, nothing else. */
export interface GatewayServices {
  readonly config: Config;
  readonly logger: Logger;
  /** The main pool (publishers, jobs, registry); client catch-up reads have their own. */
  readonly pool: pg.Pool;
  /**
   * A pool of the plug-in's own on the gateway's database, for work that must not wait behind
   * the main pool's (the job engine's writes): `max` connections named `applicationName` in
   * pg_stat_activity. The gateway ends it after the plug-in's close().
   */
  openPool(applicationName: string, max: number, options?: Omit<PoolOptions, 'applicationName'>): pg.Pool;
  readonly log: EventLog;
  readonly hub: Hub;
  readonly metrics: Metrics;
  readonly listener: Listener;
  /** True once shutdown has begun. */
  readonly stopping: boolean;
  /** False when this process serves no HTTP (`herald worker`, `herald export`). */
  readonly servesHttp: boolean;
  /**
   * Opens a trusted Subscription (the plug-in's own reader: no topic is private to it),
   * counted under `transport` in the subscriber gauge until it closes.
   */
  subscribe(transport: string, opts: SubscribeOptions): Promise<Subscription>;
  /**
   * Which of the exact `topics` the client behind a request may read, in order, under the
   * rules every read transport applies (docs/auth.md): for a plug-in's routes that answer
   * with what a topic's events carry (the job routes: `job:<id>`). Throws 401 for a token
   * that is not valid, token_expired, and unavailable when HERALD_AUTHZ_FUNCTION fails.
   */
  readable(request: ReadRequest, topics: readonly string[], signal?: AbortSignal): Promise<boolean[]>;
}

/** A client's read credentials, as the read transports take them. */
export interface ReadRequest {
  /** The Authorization header (`Bearer <token>`), if any. */
  readonly authorization: string | undefined;
  /** The `token` query parameter, if any. */
  readonly token: unknown;
  /** The client's address: the authorization function's calls are queued fairly by it. */
  readonly address: string;
}

/** What a plug-in gives back: routers to mount and a close(). */
export interface PluginInstance {
  /** Mounted at /api/v1 (before the gateway's 404). */
  readonly api?: Router;
  /** Mounted at the root, in this order (the registry: exported, webhook, pages). */
  readonly routers?: readonly Router[];
  /** Called when shutdown begins (stop claiming jobs etc.), before HTTP closes. */
  stopping?(): void;
  /** Called on shutdown after HTTP stops accepting and streams have ended. */
  close(): Promise<void>;
}

/** A product that plugs routes and background work into the gateway core. */
export interface GatewayPlugin {
  /** For logs and errors: which plug-in failed to start or stop. */
  readonly name: string;
  /**
   * Starts the plug-in once the gateway's services run (after the Listener, before HTTP
   * listens); a throw stops the gateway's start-up, which closes what had started.
   */
  start(services: GatewayServices): Promise<PluginInstance>;
}
