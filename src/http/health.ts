/**
 * `/healthz` (the process is up), `/readyz` (database reachable, listener connected, and how
 * far the listener is behind the log), `/metrics` (Prometheus).
 */
import type { Request, Response } from 'express';
import type { HeraldContext } from '../context.ts';

/** The listener counts as ready while it is at most this many events behind. */
const READY_MAX_LAG_EVENTS = 10_000;
const DB_CHECK_TIMEOUT_MS = 2000;

export function healthz(_req: Request, res: Response) {
  res.json({ status: 'ok' });
}

export function createReadyzHandler(ctx: HeraldContext) {
  return async (_req: Request, res: Response) => {
    let database = 'ok';
    let head: number | null = null;
    try {
      const result = await Promise.race([
        ctx.log.readHead(),
        new Promise<never>((_, reject) => setTimeout(() => reject(new Error('timeout')), DB_CHECK_TIMEOUT_MS).unref()),
      ]);
      head = result.head;
    } catch (err) {
      database = `error: ${(err as Error).message}`;
    }
    const listenerHead = ctx.hub.head;
    const lag = head === null ? null : Math.max(0, head - listenerHead);
    const ready = !ctx.stopping && database === 'ok' && ctx.listener.state === 'listening' && lag !== null && lag <= READY_MAX_LAG_EVENTS;
    res.status(ready ? 200 : 503).json({
      status: ready ? 'ready' : 'not_ready',
      database,
      listener: { state: ctx.listener.state, head: listenerHead, lag, reconnects: ctx.listener.reconnects },
      head,
      stopping: ctx.stopping,
    });
  };
}

export function createMetricsHandler(ctx: HeraldContext) {
  return async (_req: Request, res: Response) => {
    ctx.metrics.listenerHead.set(ctx.hub.head);
    ctx.metrics.collect();
    res.type(ctx.metrics.registry.contentType).send(await ctx.metrics.registry.metrics());
  };
}

/**
 * Pings `url` every `intervalMs` while `healthy()` holds (healthchecks.io style): when
 * Herald stops or degrades, the pings stop and the checker alerts. The URL is a secret
 * (it identifies the check) and is never logged. Returns a stop function.
 */
export function startHealthPing(url: string, intervalMs: number, healthy: () => Promise<boolean>, logger: HeraldContext['logger']): () => void {
  const ping = async () => {
    try {
      if (!(await healthy())) return;
      const res = await fetch(url, { signal: AbortSignal.timeout(10_000) });
      await res.body?.cancel();
      if (!res.ok) logger.warn({ status: res.status }, 'health-check ping was refused');
    } catch (err) {
      logger.warn({ err: (err as Error).message }, 'health-check ping failed');
    }
  };
  void ping();
  const timer = setInterval(() => void ping(), intervalMs);
  return () => clearInterval(timer);
}
