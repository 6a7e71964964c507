/**
 * `GET /v1/events`: polling and long-polling, one implementation of the transport contract
 * (transport.ts). A poll is a Subscription that lives for one request: it answers with what
 * is available after `since`, or with `wait` holds the request until a matching event
 * commits or the wait runs out. The read, the delivery metrics and the position the answer
 * carries as `next` follow the stream policy (stream-policy.ts, pollOnce); this file builds
 * the JSON answer.
 */
import type { Request, Response } from 'express';
import { QUERY } from 'herald-client/protocol';
import type { Config } from '../config.ts';
import type { Event } from '../events/event.ts';
import type { Subscription } from '../events/subscription.ts';
import { sendError } from '../http/errors.ts';
import { parsePollQuery } from './protocol.ts';
import { StreamCap } from './sessions.ts';
import { DeliveryTally, pollOnce, refuseWhenStopping, type StreamDeps } from './stream-policy.ts';
import { subscribeReader } from './subscribe.ts';
import type { Transport } from './transport.ts';
import { clientKey } from '../events/catch-up-reads.ts';

/** What the poll route needs: the stream policy's dependencies and the poll settings. */
export interface PollDeps extends StreamDeps {
  readonly config: StreamDeps['config'] & Pick<Config, 'maxFilterEntries' | 'pollMaxLimit' | 'pollDefaultLimit' | 'pollMaxWaitS' | 'longPollMax'>;
}

/**
 * One poll's answer as a Transport: the batch is held until the end, which sends it with
 * `next` (the position) in one response. Nothing is ever queued for the client.
 */
function pollTransport(res: Response, sub: Subscription, hub: StreamDeps['hub']): Transport {
  let batch: readonly Event[] = [];
  return {
    name: 'poll',
    queuedBytes: 0,
    socket: res,
    resumeHint: 'poll again from your last next',
    writeBatch(events) {
      batch = events;
      return true;
    },
    // A poll's checkpoint is its answer's `next`.
    writeCheckpoint: () => undefined,
    end(error, position) {
      if (error) return sendError(res, error);
      // Bodies are concatenated from each event's pre-serialized JSON.
      res
        .status(200)
        .type('application/json')
        .send(`{"epoch":"${sub.epoch}","events":[${batch.map((e) => e.body).join(',')}],"next":${position},"head":${Math.max(hub.head, position)}}`);
    },
    terminate() {
      res.destroy();
    },
  };
}

/** The `/v1/events` handler (GET): one poll, or one long-poll with `wait`. */
export function createPollHandler(deps: PollDeps) {
  const tally = new DeliveryTally(deps.metrics, 'poll');
  const longPolls = new StreamCap(deps.config.longPollMax, 'long-polls', 'HERALD_LONGPOLL_MAX');
  return async (req: Request, res: Response) => {
    const q = parsePollQuery(req.query as Record<string, unknown>, deps.config);
    refuseWhenStopping(deps, 'retry on another instance');
    const subject = await deps.access.authenticate(req.headers.authorization, req.query[QUERY.token]);
    const readKey = clientKey(req.socket);
    if (q.waitMs > 0) {
      // A slot until the response ends; the wait may be silent, so no idle-socket timeout.
      res.once('close', longPolls.acquire());
      req.socket.setTimeout(0);
    }
    const { waitMs: askedMs, limit, ...opts } = q;
    // A long-poll under a token that expires sooner answers at the expiry: the next poll is
    // then refused with token_expired, its `next` the position to resume from.
    const waitMs = subject.expiresAtMs === null ? askedMs : Math.min(askedMs, Math.max(0, subject.expiresAtMs - Date.now()));
    // The authorization function's answers last this request: a poll is a connection of its own.
    const reading = await subscribeReader(deps, 'poll', deps.access.reader(subject, readKey), { ...opts, readKey });
    const { sub } = reading;
    const aborter = new AbortController();
    const timer = waitMs > 0 ? setTimeout(() => aborter.abort(), waitMs) : null;
    if (waitMs === 0) aborter.abort();
    // The client went away, or shutdown: stop waiting and answer with what we have. Gone, it
    // wants nothing: close the Subscription too, which cancels a table read in flight.
    const onClose = () => {
      aborter.abort();
      if (!res.writableFinished) sub.close();
    };
    res.on('close', onClose);
    const unregister = deps.sessions.add({ close: () => aborter.abort() });
    try {
      await pollOnce(deps, reading, pollTransport(res, sub, deps.hub), tally, { limit, signal: aborter.signal });
    } finally {
      if (timer) clearTimeout(timer);
      res.off('close', onClose);
      unregister();
      sub.close();
    }
  };
}
