/**
 * CatchUpReads: where client-driven table reads (a Subscription's catch-up pages) run. They
 * get a pool of their own, so however many clients read, the Listener's reads and every
 * publish keep the main pool (issue 12: twelve abandoned reads once held the whole pool for
 * 4½ minutes, and publishes, `/readyz` and live delivery all stopped). On top of the pool:
 *
 * - a statement timeout on every read (the pool's `statement_timeout`), answered with the
 *   retryable `unavailable`;
 * - cancellation: a read whose signal aborts (its client went away or re-subscribed) is
 *   taken out of the queue, or, running, cancelled in PostgreSQL with a CancelRequest;
 * - fair queueing: waiting reads are served round-robin by client key (the client's
 *   address), one key holds at most half of the connections, and the queue is bounded
 *   (`unavailable` with `retryAfterS` when full);
 * - a share of read time per key: each read's duration is charged to its key's token
 *   bucket, and a key that has used more than `shareMsPerS` ms a second waits, its reads
 *   held in its queue, until the bucket is out of debt. The connection bound alone confines
 *   connections, not database CPU: one address sending the worst reads it may kept a read
 *   in flight at all times, a whole core of a 2-core database (BENCHMARKS.md, Under
 *   attack). Other keys are not held: their turns come as before.
 */
import net from 'node:net';
import type pg from 'pg';
import { coerceError, HeraldError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import { TokenBucket } from '../token-bucket.ts';

/** What CatchUpReads is given: its pool and its limits. */
export interface CatchUpReadsOptions {
  /** The read pool: `max` connections with the statement timeout set (db/pool.ts). */
  pool: pg.Pool;
  /** Reads in flight at once; the pool's size. */
  max: number;
  /** Reads allowed to wait for a connection. */
  queueMax: number;
  /** The pool's statement timeout, for the message a timed-out client gets. */
  timeoutMs: number;
  /**
   * Read time each key may use, in ms per second (HERALD_READ_SHARE_MS_PER_S; default and 0:
   * no limit). A key's bucket holds one second's share: a burst of reads that long runs at
   * once, and one read longer than that puts the key in debt rather than being stopped.
   * Herald's own reads (INTERNAL_READ_KEY) are not charged.
   */
  shareMsPerS?: number;
  logger: Logger;
}

/**
 * The key of Herald's own readers (the job workers' and the exporter's Subscriptions): a
 * handful, never refused by a full queue, so an attack cannot stop jobs or exports.
 */
export const INTERNAL_READ_KEY = 'internal';

/**
 * The key a client's reads (and the authorization function's calls) are queued and charged
 * under: the address of its connection. One function, so every transport and route counts a
 * client the same way.
 */
export function clientKey(socket: { readonly remoteAddress?: string | undefined }): string {
  return socket.remoteAddress ?? 'unknown';
}

/** Whose read it is, and what cancels it. */
export interface ReadOptions {
  /** Whose read this is: reads are shared round-robin between keys (default INTERNAL_READ_KEY). */
  key?: string;
  /** Aborting it cancels the read, queued or running. */
  signal?: AbortSignal | undefined;
}

interface Waiter {
  key: string;
  run: () => void;
}

/** A key's read time: its bucket (ms of reads) and when it is next allowed to start one. */
interface Share {
  bucket: TokenBucket;
  /** performance.now() at which the bucket is out of debt. */
  readyAtMs: number;
  /** performance.now() by which the bucket is full again: then forgetting it changes nothing. */
  fullAtMs: number;
}

/** How often shares that are full again, and so no longer needed, are forgotten. */
const SHARE_SWEEP_MS = 10_000;

// SQLSTATE of a statement stopped by statement_timeout or by a cancel request.
const QUERY_CANCELED = '57014';
// What a client waits before retrying a read refused or stopped here: one second, in which
// the queue drains a few hundred reads.
const RETRY_AFTER_S = 1;

/** Runs client-driven reads on their own pool, fairly between client keys (see the file's header). */
export class CatchUpReads {
  private readonly opts: CatchUpReadsOptions;
  /** One key may hold at most this many connections, so others always find a free lane. */
  private readonly perKeyMax: number;
  private active = 0;
  private readonly activeByKey = new Map<string, number>();
  /** Waiting reads by key; Map order is the round-robin order (a served key moves to the back). */
  private readonly waiting = new Map<string, Waiter[]>();
  private queued = 0;
  /** Keys that have read lately, with their share of read time (none when shareMsPerS is 0). */
  private readonly shares = new Map<string, Share>();
  private sweptAtMs = performance.now();
  /** Wakes the queue when the first held key's bucket is out of debt. */
  private wakeTimer: NodeJS.Timeout | null = null;
  private wakeAtMs = Number.POSITIVE_INFINITY;

  constructor(opts: CatchUpReadsOptions) {
    this.opts = opts;
    this.perKeyMax = Math.max(1, Math.floor(opts.max / 2));
    // A read is confined to its backend: parallel workers would let one read take every
    // core, which the pool's size is there to prevent. Set on each new connection before
    // its first read (pg runs a client's queries in order).
    opts.pool.on('connect', (client) => {
      client.query('set max_parallel_workers_per_gather = 0').catch(() => undefined);
    });
  }

  /** Reads running now. */
  get inFlight(): number {
    return this.active;
  }

  /** Reads waiting for a connection, or for their key's share. */
  get waitingCount(): number {
    return this.queued;
  }

  /** How long `key` must wait before its next read may start, in ms (0: now). */
  heldMs(key: string): number {
    const share = this.shares.get(key);
    return share ? Math.max(0, share.readyAtMs - performance.now()) : 0;
  }

  /**
   * Runs `fn` on a read connection once this key's turn comes. Rejects with `unavailable`
   * when the queue is full or the statement times out, and with the signal's reason when it
   * aborts (the query is cancelled in PostgreSQL).
   */
  run<T>(fn: (client: pg.PoolClient) => Promise<T>, { key = INTERNAL_READ_KEY, signal }: ReadOptions = {}): Promise<T> {
    signal?.throwIfAborted();
    if (this.queued >= this.opts.queueMax && key !== INTERNAL_READ_KEY && !this.canStart(key)) {
      return Promise.reject(
        new HeraldError('HERALD_ERR_UNAVAILABLE', `catch-up reads are saturated (${this.queued} waiting): retry after ${RETRY_AFTER_S} s`, {
          retryAfterS: RETRY_AFTER_S,
        }),
      );
    }
    return new Promise<T>((resolve, reject) => {
      const waiter: Waiter = { key, run: () => void this.start(key, fn, signal).then(resolve, reject) };
      const onAbort = () => {
        // Still queued: leave the queue. Running: start() cancels the query itself.
        if (this.dequeue(waiter)) reject(signal!.reason);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      const run = waiter.run;
      waiter.run = () => {
        signal?.removeEventListener('abort', onAbort);
        run();
      };
      if (this.canStart(key)) waiter.run();
      else {
        this.enqueue(waiter);
        // Held by its share, with a connection free: nothing else would start it.
        this.pump();
      }
    });
  }

  private canStart(key: string): boolean {
    return this.active < this.opts.max && (this.activeByKey.get(key) ?? 0) < this.perKeyMax && !this.waiting.has(key) && this.heldMs(key) === 0;
  }

  private enqueue(w: Waiter): void {
    const q = this.waiting.get(w.key);
    if (q) q.push(w);
    else this.waiting.set(w.key, [w]);
    this.queued++;
  }

  private dequeue(w: Waiter): boolean {
    const q = this.waiting.get(w.key);
    const i = q ? q.indexOf(w) : -1;
    if (!q || i < 0) return false;
    q.splice(i, 1);
    if (q.length === 0) this.waiting.delete(w.key);
    this.queued--;
    if (this.queued === 0) this.clearWake();
    return true;
  }

  /**
   * Starts waiting reads while connections are free: the first key (in round-robin order)
   * under its share of connections and not held by its share of read time. When only held
   * keys are left, wakes itself when the first of them may read again.
   */
  private pump(): void {
    let wakeInMs = Number.POSITIVE_INFINITY;
    while (this.active < this.opts.max && this.queued > 0) {
      let picked: Waiter[] | undefined;
      let pickedKey = '';
      for (const [key, q] of this.waiting) {
        if ((this.activeByKey.get(key) ?? 0) >= this.perKeyMax) continue;
        const held = this.heldMs(key);
        if (held > 0) {
          wakeInMs = Math.min(wakeInMs, held);
          continue;
        }
        picked = q;
        pickedKey = key;
        break;
      }
      if (!picked) break;
      const w = picked.shift()!;
      this.waiting.delete(pickedKey);
      // Served: to the back of the round.
      if (picked.length > 0) this.waiting.set(pickedKey, picked);
      this.queued--;
      w.run();
    }
    if (this.queued === 0) this.clearWake();
    else if (wakeInMs < Number.POSITIVE_INFINITY) this.wakeIn(wakeInMs);
  }

  private wakeIn(ms: number): void {
    const at = performance.now() + ms;
    if (this.wakeTimer && this.wakeAtMs <= at) return;
    this.clearWake();
    this.wakeAtMs = at;
    // Unref'd: a queue held by shares must not keep the process alive on its own.
    this.wakeTimer = setTimeout(() => {
      this.wakeTimer = null;
      this.wakeAtMs = Number.POSITIVE_INFINITY;
      this.pump();
    }, Math.ceil(ms));
    this.wakeTimer.unref();
  }

  private clearWake(): void {
    if (this.wakeTimer) clearTimeout(this.wakeTimer);
    this.wakeTimer = null;
    this.wakeAtMs = Number.POSITIVE_INFINITY;
  }

  /** Charges `ms` of read time to `key`'s share; past it, the key's next reads wait. */
  private charge(key: string, ms: number): void {
    const perS = this.opts.shareMsPerS ?? 0;
    if (perS === 0 || key === INTERNAL_READ_KEY) return;
    const now = performance.now();
    let share = this.shares.get(key);
    if (!share) {
      // One second's share, not more: with a burst of a second of reads, an address that
      // paused could take a whole core for that second when it came back (BENCHMARKS.md,
      // Under attack).
      share = { bucket: new TokenBucket(perS, perS, () => performance.now()), readyAtMs: 0, fullAtMs: 0 };
      this.shares.set(key, share);
    }
    share.readyAtMs = now + share.bucket.takeOrWaitMs(ms);
    // Out of debt at readyAtMs, then at most one second to fill up again.
    share.fullAtMs = share.readyAtMs + 1000;
    if (now - this.sweptAtMs >= SHARE_SWEEP_MS) {
      this.sweptAtMs = now;
      for (const [k, s] of this.shares) if (s.fullAtMs <= now) this.shares.delete(k);
    }
  }

  private async start<T>(key: string, fn: (client: pg.PoolClient) => Promise<T>, signal: AbortSignal | undefined): Promise<T> {
    this.active++;
    this.activeByKey.set(key, (this.activeByKey.get(key) ?? 0) + 1);
    let client: pg.PoolClient | undefined;
    let broken: Error | undefined;
    let cancelSent = false;
    const cancel = () => {
      if (!client) return;
      cancelSent = true;
      sendCancel(client);
    };
    let startedAtMs: number | undefined;
    try {
      signal?.throwIfAborted();
      client = await this.opts.pool.connect();
      signal?.throwIfAborted();
      signal?.addEventListener('abort', cancel, { once: true });
      startedAtMs = performance.now();
      return await fn(client);
    } catch (err) {
      if (signal?.aborted) throw signal.reason;
      // A statement error leaves the connection usable; anything else (a dropped socket) does not.
      const code = (err as { code?: unknown } | null)?.code;
      if (!(typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code))) broken = coerceError(err);
      if (code === QUERY_CANCELED) {
        // Below error level: a timed-out read is the client's cost, not Herald's failure.
        this.opts.logger.warn({ key, timeoutMs: this.opts.timeoutMs }, 'catch-up read stopped by its statement timeout');
        throw new HeraldError(
          'HERALD_ERR_UNAVAILABLE',
          `the catch-up read took longer than ${this.opts.timeoutMs} ms and was stopped: retry shortly, or narrow the filter`,
          { retryAfterS: RETRY_AFTER_S },
          { cause: err },
        );
      }
      throw err;
    } finally {
      signal?.removeEventListener('abort', cancel);
      // A CancelRequest travels on its own socket and may land after this read has finished,
      // cancelling whatever the backend runs next: another client's read. A connection a cancel
      // was sent for is never reused.
      client?.release(broken ?? (cancelSent ? new Error('a cancel request was sent on this connection') : undefined));
      // Every read pays for the database time it took, cancelled and timed-out ones too.
      if (startedAtMs !== undefined) this.charge(key, performance.now() - startedAtMs);
      this.active--;
      const n = this.activeByKey.get(key)! - 1;
      if (n === 0) this.activeByKey.delete(key);
      else this.activeByKey.set(key, n);
      this.pump();
    }
  }
}

/**
 * Cancels what `client`'s backend is running: a CancelRequest (protocol message 80877102
 * with the backend's pid and secret key) on a fresh socket, which takes no connection slot
 * and no login. Closing the client's own socket would not do: PostgreSQL notices a gone
 * client only when it next writes, so the query would run to its timeout.
 */
function sendCancel(client: pg.PoolClient): void {
  const { host, port, processID, secretKey } = client as unknown as { host: string; port: number; processID: number | null; secretKey: number | null };
  if (processID === null || secretKey === null) return;
  const message = Buffer.alloc(16);
  message.writeInt32BE(16, 0);
  message.writeInt32BE(80877102, 4);
  message.writeInt32BE(processID, 8);
  message.writeInt32BE(secretKey, 12);
  const socket = host.startsWith('/') ? net.connect(`${host}/.s.PGSQL.${port}`) : net.connect(port, host);
  // Best effort: a cancel that does not arrive leaves the statement timeout to end the read.
  socket.on('error', () => socket.destroy());
  socket.setTimeout(5000, () => socket.destroy());
  socket.end(message);
}
