/**
 * `GET /v1/events`: polling and long-polling. A poll is a Subscription that lives for one
 * request: it returns what is available after `since`, or with `wait` holds the request
 * until a matching event commits or the wait runs out.
 */
import type { Request, Response } from 'express';
import { subscribe, type HeraldContext } from '../context.ts';
import { HeraldError } from '../errors.ts';
import { parsePollQuery } from './protocol.ts';
import { StreamCap } from './sessions.ts';

export function createPollHandler(ctx: HeraldContext) {
  const longPolls = new StreamCap(ctx.config.longPollMax, 'long-polls', 'HERALD_LONGPOLL_MAX');
  return async (req: Request, res: Response) => {
    const q = parsePollQuery(req.query as Record<string, unknown>, ctx.config);
    if (ctx.stopping) throw new HeraldError('HERALD_ERR_SHUTTING_DOWN', 'server is shutting down: retry on another instance');
    const reader = ctx.access.authenticate(req.headers.authorization, req.query.token);
    if (q.waitMs > 0) {
      // A slot until the response ends; the wait may be silent, so no idle-socket timeout.
      res.once('close', longPolls.acquire());
      req.socket.setTimeout(0);
    }
    const sub = await subscribe(ctx, 'poll', reader, { ...q, readKey: req.socket.remoteAddress ?? 'unknown' });
    const aborter = new AbortController();
    const timer = q.waitMs > 0 ? setTimeout(() => aborter.abort(), q.waitMs) : null;
    if (q.waitMs === 0) aborter.abort();
    // The client went away, or shutdown: stop waiting and answer with what we have. Gone, it
    // wants nothing: close the Subscription too, which cancels a table read in flight.
    const onClose = () => {
      aborter.abort();
      if (!res.writableFinished) sub.close();
    };
    res.on('close', onClose);
    const unregister = ctx.sessions.add({ close: () => aborter.abort() });
    try {
      const events = await sub.next({ limit: q.limit, signal: aborter.signal });
      const next = sub.position;
      if (events.length > 0) {
        ctx.metrics.deliveries.labels('poll').inc(events.length);
        ctx.metrics.deliveryLag.labels('poll').observe((Date.now() - events[0]!.atMs) / 1000);
      }
      // Bodies are concatenated from each event's pre-serialized JSON.
      res
        .status(200)
        .type('application/json')
        .send(`{"epoch":"${sub.epoch}","events":[${events.map((e) => e.body).join(',')}],"next":${next},"head":${Math.max(ctx.hub.head, next)}}`);
    } finally {
      if (timer) clearTimeout(timer);
      res.off('close', onClose);
      unregister();
      sub.close();
    }
  };
}
