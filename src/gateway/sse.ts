/**
 * `GET /v1/events/stream`: Server-Sent Events, one implementation of the transport contract
 * (transport.ts). Each event is a message whose `id:` is the event id, so a browser's
 * EventSource resumes by itself with `Last-Event-ID`. Filtered streams also get `checkpoint`
 * messages (with an `id:` too) so their resume point moves past events they did not want.
 * Comment heartbeats keep proxies from cutting idle streams. What is written when — catch-up
 * pages, live batches pushed from the Hub's publish, the wait for a full socket, the
 * slow-consumer end — is the stream policy's (stream-policy.ts); this file writes SSE text.
 */
import type { Request, Response } from 'express';
import { HEADERS, QUERY, SSE_EVENTS, type SseSubscribed } from 'herald-client/protocol';
import type { Config } from '../config.ts';
import { type Event, perBatch } from '../events/event.ts';
import { parseStreamQuery } from './protocol.ts';
import { StreamCap } from './sessions.ts';
import { DeliveryTally, openStream, refuseWhenStopping, type StreamDeps } from './stream-policy.ts';
import type { Transport } from './transport.ts';
import { clientKey } from '../events/catch-up-reads.ts';

/** What the SSE route needs: the stream policy's dependencies and its own settings. */
export interface SseDeps extends StreamDeps {
  readonly config: StreamDeps['config'] & Pick<Config, 'maxFilterEntries' | 'sseMaxStreams' | 'sseHeartbeatMs' | 'checkpointIntervalMs'>;
}

/** One event as an SSE message: its id as `id:`, its JSON as `data:`. */
export function formatSseEvent(e: Event): string {
  return `id: ${e.id}\ndata: ${e.body}\n\n`;
}

/**
 * A batch as SSE text, built once per array: live subscribers of a topic are handed the
 * Hub's one shared array, so every stream writes the same string without re-formatting it.
 */
export const sseBatch = perBatch((events) => events.map(formatSseEvent).join(''));

/** One SSE response as a Transport; `onEnd` releases what the handler holds for it. */
function sseTransport(res: Response, onEnd: () => void): Transport {
  return {
    name: 'sse',
    get queuedBytes() {
      return res.writableLength;
    },
    socket: res,
    resumeHint: 'reconnect with Last-Event-ID',
    writeBatch(events) {
      if (res.writableEnded) return false;
      // One write per batch, the batch's text shared with every stream it goes to.
      res.write(sseBatch(events));
      return true;
    },
    writeCheckpoint(position) {
      res.write(`event: ${SSE_EVENTS.checkpoint}\nid: ${position}\ndata: {"id":${position}}\n\n`);
    },
    end(error, position) {
      onEnd();
      // No `id:`: EventSource resumes from its last event or checkpoint id, also correct.
      if (error && !res.writableEnded) res.write(`event: ${SSE_EVENTS.error}\ndata: ${JSON.stringify({ ...error.toWire().error, position })}\n\n`);
      res.end();
    },
    terminate() {
      res.destroy();
    },
  };
}

/** The `/v1/events/stream` handler: checks, then one stream until the client leaves or the stream ends. */
export function createSseHandler(deps: SseDeps) {
  const tally = new DeliveryTally(deps.metrics, 'sse');
  const streams = new StreamCap(deps.config.sseMaxStreams, 'SSE streams', 'HERALD_SSE_MAX_STREAMS');

  return async (req: Request, res: Response) => {
    // Errors until the stream opens (bad query, shutdown, token, expired cursor) are plain
    // JSON answers with a status: EventSource treats a non-200 answer as final instead of
    // reconnecting in a loop.
    const q = parseStreamQuery(req.query as Record<string, unknown>, deps.config, req.headers[HEADERS.lastEventId]);
    refuseWhenStopping(deps, 'retry on another instance');
    const subject = await deps.access.authenticate(req.headers.authorization, req.query[QUERY.token]);
    const readKey = clientKey(req.socket);
    // A slot from here until the response ends, however it ends.
    res.once('close', streams.acquire());

    let heartbeat: ReturnType<typeof setInterval> | undefined;
    let checkpoints: ReturnType<typeof setInterval> | undefined;
    let unregister: () => void = () => undefined;
    let ended!: () => void;
    const done = new Promise<void>((resolve) => (ended = resolve));
    const release = () => {
      clearInterval(heartbeat);
      clearInterval(checkpoints);
      unregister();
      ended();
    };
    const stream = await openStream(deps, sseTransport(res, release), tally, deps.access.reader(subject, readKey), { ...q, readKey });
    // The client left while the stream was opening: nobody to write to.
    if (req.socket.destroyed) return stream.stop();

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
    const subscribed: SseSubscribed = { epoch: stream.epoch, head: Math.max(deps.hub.head, stream.since), since: stream.since };
    res.write(`retry: 1000\nevent: ${SSE_EVENTS.subscribed}\ndata: ${JSON.stringify(subscribed)}\n\n`);

    heartbeat = setInterval(() => {
      if (!stream.overBudget) res.write(': heartbeat\n\n');
    }, deps.config.sseHeartbeatMs);
    checkpoints = setInterval(() => stream.checkpoint(), deps.config.checkpointIntervalMs);
    unregister = deps.sessions.add({ close: (reason) => stream.end(reason) });
    res.on('close', () => {
      stream.stop();
      release();
    });
    stream.start();
    await done;
  };
}
