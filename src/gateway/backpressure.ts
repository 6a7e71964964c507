/**
 * Waiting out a full socket, for the stream policy (stream-policy.ts) on every streaming
 * transport. Resolves once the queued bytes are back under the budget; rejects with
 * slow_consumer after `timeoutMs`.
 *
 * It re-checks the queue on a short interval as well as on 'drain': Node emits 'drain' only
 * after a write returned false, i.e. past the stream's highWaterMark (16 KiB on Node 20,
 * 64 KiB on 22). A budget below that would otherwise wait for an event that never comes and
 * close a client that is reading fine.
 */
import type { EventEmitter } from 'node:events';
import { HeraldError } from '../errors.ts';

const RECHECK_MS = 50;

/** Waits until `queued()` is at most `budget`, or the session is gone; slow_consumer after `timeoutMs`. */
export function waitForRoom(opts: {
  /** Bytes queued for this client right now. */
  queued: () => number;
  budget: number;
  /** Emits 'drain' and 'close'. */
  stream: EventEmitter;
  timeoutMs: number;
  /** True when the session ended meanwhile (then the wait just ends). */
  gone: () => boolean;
  resumeHint: string;
}): Promise<void> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const finish = (err?: HeraldError) => {
      clearInterval(timer);
      opts.stream.off('drain', check);
      opts.stream.off('close', check);
      if (err) reject(err);
      else resolve();
    };
    function check() {
      if (opts.gone() || opts.queued() <= opts.budget) return finish();
      if (Date.now() - started >= opts.timeoutMs) {
        finish(new HeraldError('HERALD_ERR_SLOW_CONSUMER', `did not read for ${opts.timeoutMs} ms; ${opts.resumeHint}`));
      }
    }
    const timer = setInterval(check, RECHECK_MS);
    opts.stream.on('drain', check);
    opts.stream.on('close', check);
    check();
  });
}
