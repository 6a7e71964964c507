/**
 * Head reads shared by the Subscriptions that open at the same time. Each open checks its
 * epoch and position (S6) against a head read that began after the open was asked for, so it
 * gets the answer a read of its own would give: an event committed, or a prune or a restore
 * finished, before the request is seen. Opens that arrive while a read is under way wait for
 * the next one, which all of them share. Thousands of clients reconnecting at once (a rolling
 * restart, a network blip) therefore cost a few queries, not one each; their catch-up then
 * comes from the Hub's window (catch-up-window.ts) without a query at all.
 */
import { TokenBucket } from '../token-bucket.ts';
import type { EventLog, LogHead } from './log.ts';

/**
 * At most 50 head reads a second, in bursts of up to 10, whatever the number of opens: a
 * client that opens streams one after another (a poll loop) never waits for a token, and
 * during a storm an open waits at most 20 ms for the read it shares.
 */
const HEAD_READS_PER_S = 50;
const HEAD_READ_BURST = 10;

class SharedHead {
  private readonly log: EventLog;
  /** The read the next callers will share: not yet started. */
  private next: Promise<LogHead> | null = null;
  private running: Promise<LogHead> | null = null;
  private readonly rate = new TokenBucket(HEAD_READ_BURST, HEAD_READS_PER_S, () => performance.now());

  constructor(log: EventLog) {
    this.log = log;
  }

  read(): Promise<LogHead> {
    this.next ??= this.start();
    return this.next;
  }

  private async start(): Promise<LogHead> {
    // Let callers of this same tick join; and one read at a time.
    await this.running?.catch(() => undefined);
    const waitMs = this.rate.takeOrWaitMs();
    if (waitMs > 0) await new Promise((r) => setTimeout(r, waitMs));
    // From here on the read has begun: a later caller must wait for the one after it.
    this.next = null;
    const read = this.log.readHead();
    this.running = read;
    try {
      return await read;
    } finally {
      if (this.running === read) this.running = null;
    }
  }
}

const shared = new WeakMap<EventLog, SharedHead>();

/** The log's head as of a read that began after this call, shared with concurrent callers. */
export function readSharedHead(log: EventLog): Promise<LogHead> {
  let s = shared.get(log);
  if (!s) shared.set(log, (s = new SharedHead(log)));
  return s.read();
}
