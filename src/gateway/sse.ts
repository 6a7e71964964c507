/**
 * `GET /v1/events/stream`: Server-Sent Events. Each event is a message whose `id:` is the
 * event id, so a browser's EventSource resumes by itself with `Last-Event-ID`. Filtered
 * streams also get `checkpoint` messages (with an `id:` too) so their resume point moves
 * past events they did not want. Comment heartbeats keep proxies from cutting idle streams.
 *
 * Delivery works as on a WebSocket (ws-session.ts): live batches are written inside the
 * Hub's publish (push mode), as one shared string per batch; catch-up reads and the wait
 * for a full socket to drain run in pull mode, and only one mode runs at a time.
 */
import type { Request, Response } from 'express';
import { subscribe, type HeraldContext } from '../context.ts';
import { HeraldError, publicError } from '../errors.ts';
import { type Event, perBatch } from '../events/event.ts';
import { waitForRoom } from './backpressure.ts';
import { parseStreamQuery } from './protocol.ts';
import { StreamCap } from './sessions.ts';

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
  // Off the per-stream path, as for WebSocket: deliveries are tallied in a plain number and
  // folded into the counter at each scrape, and a shared batch gets one lag sample however
  // many streams it is written to.
  const deliveries = ctx.metrics.deliveries.labels('sse');
  const lag = ctx.metrics.deliveryLag.labels('sse');
  let delivered = 0;
  let lastLagBatch: readonly Event[] | null = null;
  const streams = new StreamCap(ctx.config.sseMaxStreams, 'SSE streams', 'HERALD_SSE_MAX_STREAMS');
  ctx.metrics.onCollect(() => {
    if (delivered > 0) deliveries.inc(delivered);
    delivered = 0;
  });

  return async (req: Request, res: Response) => {
    const q = parseStreamQuery(req.query as Record<string, unknown>, ctx.config, req.headers['last-event-id']);
    if (ctx.stopping) throw new HeraldError('HERALD_ERR_SHUTTING_DOWN', 'server is shutting down: retry on another instance');
    // Errors up to here (bad query, expired cursor) are plain JSON responses with a status:
    // EventSource treats a non-200 answer as final instead of reconnecting in a loop.
    const reader = ctx.access.authenticate(req.headers.authorization, req.query.token);
    // A slot from here until the response ends, however it ends.
    res.once('close', streams.acquire());
    /** Push mode (live, socket has room): the Subscription's onReady writes batches at once. */
    let pushing = false;
    const sub = await subscribe(ctx, 'sse', reader, {
      ...q,
      readKey: req.socket.remoteAddress ?? 'unknown',
      onReady: () => {
        if (pushing) push();
      },
    });
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
    // A stream may be quiet between heartbeats: exempt from the idle-socket timeout.
    res.socket?.setTimeout(0);
    res.write(`retry: 1000\nevent: subscribed\ndata: {"epoch":"${sub.epoch}","head":${Math.max(ctx.hub.head, sub.since)},"since":${sub.since}}\n\n`);

    let ended!: () => void;
    const done = new Promise<void>((resolve) => (ended = resolve));
    /** Ends the stream; `position` defaults to the Subscription's. */
    const end = (reason?: HeraldError, position = sub.position) => {
      if (state === 'closed') return;
      state = 'closed';
      pushing = false;
      clearInterval(heartbeat);
      clearInterval(checkpoints);
      unregister();
      sub.close();
      aborter.abort();
      ended();
      if (reason && !res.writableEnded) {
        const body = { ...reason.toWire().error, position };
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

    /** One write per batch, the batch's text shared with every stream it goes to. */
    const write = (events: readonly Event[]) => {
      res.write(sseBatch(events));
      lastSent = events[events.length - 1]!.id;
      delivered += events.length;
      if (events !== lastLagBatch) {
        lastLagBatch = events;
        lag.observe((Date.now() - events[0]!.atMs) / 1000);
      }
    };

    const fail = (err: unknown, position?: number) => {
      if (closed()) return;
      const e = publicError(err);
      if (e.code === 'HERALD_ERR_SLOW_CONSUMER') {
        ctx.metrics.slowConsumerCloses.labels('sse').inc();
        // The error event queues behind the backlog; a stalled reader never takes it, so
        // drop the socket (and its buffered bytes) after one more timeout.
        setTimeout(() => res.destroy(), ctx.config.slowConsumerTimeoutMs).unref();
      } else if (e.code === 'HERALD_ERR_INTERNAL') ctx.logger.error({ err }, 'sse stream failed');
      end(e, position);
    };

    /**
     * Pull mode: catch-up reads while the stream is replaying, and the wait for a full socket
     * to drain. Once the stream is live and the socket has room it hands over to push mode.
     */
    async function pull(): Promise<void> {
      pushing = false;
      try {
        while (!closed()) {
          // Over the byte budget: stop pulling (the Subscription falls back to catch-up reads)
          // until the socket drains, or close the stream if it does not drain in time.
          if (overBudget()) {
            await waitForRoom({
              queued: () => res.writableLength,
              budget: ctx.config.maxClientQueueBytes,
              stream: res,
              timeoutMs: ctx.config.slowConsumerTimeoutMs,
              gone: closed,
              resumeHint: 'reconnect with Last-Event-ID',
            });
            continue;
          }
          if (sub.state === 'live') {
            pushing = true;
            return push();
          }
          const events = await sub.next({ signal: aborter.signal });
          if (!closed() && events.length > 0) write(events);
        }
      } catch (err) {
        fail(err);
      }
    }

    /**
     * Push mode: the Subscription's onReady hook calls this inside the Hub's publish, and the
     * batch is written in the same tick, with no promise or wake-up per stream per batch. A
     * full socket or a fallback to catch-up reads goes back to pull mode.
     */
    function push(): void {
      try {
        for (;;) {
          const events = sub.takeReady();
          if (events === null) return void pull();
          if (events.length === 0) return;
          write(events);
          if (overBudget()) return void pull();
        }
      } catch (err) {
        // Runs inside the Hub's publish: a failure here must end this stream, not the fan-out.
        // The batch it was writing may be taken and not written: report what was sent.
        fail(err, lastSent);
      }
    }

    void pull();
    await done;
  };
}
