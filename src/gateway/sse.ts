/**
 * `GET /v1/events/stream`: Server-Sent Events. Each event is a message whose `id:` is the
 * event id, so a browser's EventSource resumes by itself with `Last-Event-ID`. Filtered
 * streams also get `checkpoint` messages (with an `id:` too) so their resume point moves
 * past events they did not want. Comment heartbeats keep proxies from cutting idle streams.
 */
import type { Request, Response } from 'express';
import { subscribe, type HeraldContext } from '../context.ts';
import { HeraldError, publicError } from '../errors.ts';
import { type Event, perBatch } from '../events/event.ts';
import { waitForRoom } from './backpressure.ts';
import { parseStreamQuery } from './protocol.ts';

type SseState = 'streaming' | 'closed';

export function formatSseEvent(e: Event): string {
  return `id: ${e.id}\ndata: ${e.body}\n\n`;
}

/**
 * A batch as SSE text, built once per array: live subscribers of a topic are handed the
 * Hub's one shared array, so every stream writes the same string without re-formatting it.
 */
export const sseBatch = perBatch((events) => events.map(formatSseEvent).join(''));

export function createSseHandler(ctx: HeraldContext) {
  return async (req: Request, res: Response) => {
    const q = parseStreamQuery(req.query as Record<string, unknown>, req.headers['last-event-id']);
    if (ctx.stopping) throw new HeraldError('HERALD_ERR_SHUTTING_DOWN', 'server is shutting down: retry on another instance');
    // Errors up to here (bad query, expired cursor) are plain JSON responses with a status:
    // EventSource treats a non-200 answer as final instead of reconnecting in a loop.
    const reader = ctx.access.authenticate(req.headers.authorization, req.query.token);
    const sub = await subscribe(ctx, 'sse', reader, q);
    let state: SseState = 'streaming';
    // A function, not an inline comparison: TypeScript would keep the narrowed state across awaits.
    const closed = () => state === 'closed';
    let lastSent = sub.since;
    const aborter = new AbortController();

    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache, no-transform',
      connection: 'keep-alive',
      // nginx: do not buffer the stream.
      'x-accel-buffering': 'no',
    });
    res.flushHeaders();
    res.socket?.setNoDelay(true);
    res.write(`retry: 1000\nevent: subscribed\ndata: {"epoch":"${sub.epoch}","head":${Math.max(ctx.hub.head, sub.since)},"since":${sub.since}}\n\n`);

    const end = (reason?: HeraldError) => {
      if (state === 'closed') return;
      state = 'closed';
      clearInterval(heartbeat);
      clearInterval(checkpoints);
      unregister();
      sub.close();
      aborter.abort();
      if (reason && !res.writableEnded) {
        const body = { ...reason.toWire().error, position: sub.position };
        res.write(`event: error\ndata: ${JSON.stringify(body)}\n\n`);
      }
      res.end();
    };
    const unregister = ctx.sessions.add({ close: end });
    res.on('close', () => end());

    const overBudget = () => res.writableLength > ctx.config.maxClientQueueBytes;
    const heartbeat = setInterval(() => {
      if (state === 'streaming' && !overBudget()) res.write(': heartbeat\n\n');
    }, ctx.config.sseHeartbeatMs);
    const checkpoints = setInterval(() => {
      const position = sub.position;
      if (state === 'streaming' && position > lastSent && !overBudget()) {
        lastSent = position;
        res.write(`event: checkpoint\nid: ${position}\ndata: {"id":${position}}\n\n`);
      }
    }, ctx.config.checkpointIntervalMs);

    try {
      while (!closed()) {
        const events = await sub.next({ signal: aborter.signal });
        if (closed() || events.length === 0) continue;
        // One write per batch: a burst reaches the socket in one syscall.
        res.write(sseBatch(events));
        lastSent = events[events.length - 1]!.id;
        ctx.metrics.deliveries.labels('sse').inc(events.length);
        ctx.metrics.deliveryLag.labels('sse').observe((Date.now() - events[0]!.atMs) / 1000);
        // Over the byte budget: stop pulling (the Subscription falls back to table reads)
        // until the socket drains, or close the stream if it does not drain in time.
        if (res.writableLength > ctx.config.maxClientQueueBytes) {
          await waitForRoom({
            queued: () => res.writableLength,
            budget: ctx.config.maxClientQueueBytes,
            stream: res,
            timeoutMs: ctx.config.slowConsumerTimeoutMs,
            gone: closed,
            resumeHint: 'reconnect with Last-Event-ID',
          });
        }
      }
    } catch (err) {
      const e = publicError(err);
      if (e.code === 'HERALD_ERR_SLOW_CONSUMER') {
        ctx.metrics.slowConsumerCloses.labels('sse').inc();
        // The error event queues behind the backlog; a stalled reader never takes it, so
        // drop the socket (and its buffered bytes) after one more timeout.
        setTimeout(() => res.destroy(), ctx.config.slowConsumerTimeoutMs).unref();
      }
      else if (e.code === 'HERALD_ERR_INTERNAL') ctx.logger.error({ err }, 'sse stream failed');
      end(e);
    }
  };
}
