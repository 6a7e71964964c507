/**
 * `/healthz` (the process is up), `/readyz` (database reachable, listener connected, and how
 * far the listener is behind the log), `/metrics` (Prometheus, behind HERALD_METRICS_TOKEN when
 * set), and the outbound health ping.
 * The gateway mounts the handlers at its routes; each declares only what it reads.
 */
import type { Request, Response } from 'express';
import type { Config } from '../config.ts';
import { coerceError, HeraldError } from '../errors.ts';
import type { Hub } from '../events/hub.ts';
import type { Listener } from '../events/listener.ts';
import type { EventLog } from '../events/log.ts';
import type { Logger } from '../logger.ts';
import { requireToken, TokenSet } from './auth.ts';
import type { Metrics } from './metrics.ts';

/** The listener counts as ready while it is at most this many events behind. */
const READY_MAX_LAG_EVENTS = 10_000;
const DB_CHECK_TIMEOUT_MS = 2000;

/** What `/readyz` looks at. */
export interface ReadinessDeps {
  readonly log: Pick<EventLog, 'readHead'>;
  readonly hub: Pick<Hub, 'head'>;
  readonly listener: Pick<Listener, 'state' | 'reconnects'>;
  /** True once shutdown has begun: a stopping process is not ready. */
  readonly stopping: boolean;
}

/** What `/metrics` reads: the registry, the listener head it sets at each scrape, and the token it may require. */
export interface MetricsDeps {
  readonly metrics: Metrics;
  readonly hub: Pick<Hub, 'head'>;
  readonly config: Pick<Config, 'metricsToken'>;
}

/** `/healthz`: answers while the process runs, whatever its dependencies say. */
export function healthz(_req: Request, res: Response) {
  res.json({ status: 'ok' });
}

/** `/readyz`: 200 while the database answers, the listener listens and keeps up, and shutdown has not begun; 503 otherwise. */
export function createReadyzHandler(deps: ReadinessDeps) {
  return async (_req: Request, res: Response) => {
    let database = 'ok';
    let head: number | null = null;
    try {
      const result = await Promise.race([
        deps.log.readHead(),
        new Promise<never>((_, reject) =>
          setTimeout(
            () => reject(new HeraldError('HERALD_ERR_UNAVAILABLE', `the database did not answer within ${DB_CHECK_TIMEOUT_MS} ms`)),
            DB_CHECK_TIMEOUT_MS,
          ).unref(),
        ),
      ]);
      head = result.head;
    } catch (err) {
      database = `error: ${coerceError(err).message}`;
    }
    const listenerHead = deps.hub.head;
    const lag = head === null ? null : Math.max(0, head - listenerHead);
    const ready = !deps.stopping && database === 'ok' && deps.listener.state === 'listening' && lag !== null && lag <= READY_MAX_LAG_EVENTS;
    res.status(ready ? 200 : 503).json({
      status: ready ? 'ready' : 'not_ready',
      database,
      listener: { state: deps.listener.state, head: listenerHead, lag, reconnects: deps.listener.reconnects },
      head,
      stopping: deps.stopping,
    });
  };
}

/**
 * `/metrics`: the Prometheus text of this process's registry, on-demand values collected
 * first. With HERALD_METRICS_TOKEN set, only for `Authorization: Bearer <that token>`
 * (401 `unauthorized` otherwise; compared in constant time, never logged).
 */
export function createMetricsHandler(deps: MetricsDeps) {
  const tokens = deps.config.metricsToken === undefined ? undefined : new TokenSet([deps.config.metricsToken]);
  return async (req: Request, res: Response) => {
    if (tokens) requireToken(tokens, req.headers.authorization, req.path);
    deps.metrics.listenerHead.set(deps.hub.head);
    deps.metrics.collect();
    res.type(deps.metrics.registry.contentType).send(await deps.metrics.registry.metrics());
  };
}

/**
 * Pings `url` every `intervalMs` while `healthy()` holds (healthchecks.io style): when
 * Herald stops or degrades, the pings stop and the checker alerts. The URL is a secret
 * (it identifies the check) and is never logged. Returns a stop function.
 */
export function startHealthPing(url: string, intervalMs: number, healthy: () => Promise<boolean>, logger: Logger): () => void {
  const ping = async () => {
    try {
      if (!(await healthy())) return;
      const res = await fetch(url, { signal: AbortSignal.timeout(10_000) });
      await res.body?.cancel();
      if (!res.ok) logger.warn({ status: res.status }, 'health-check ping was refused');
    } catch (err) {
      logger.warn({ err: coerceError(err).message }, 'health-check ping failed');
    }
  };
  void ping();
  const timer = setInterval(() => void ping(), intervalMs);
  return () => clearInterval(timer);
}
