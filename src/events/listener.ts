/**
 * Listener: the one LISTEN connection of the process. A NOTIFY on `herald_events` is only a
 * doorbell: on every ring, on every (re)connect, and on a short safety poll, the Listener
 * reads `id > head` from the pool in batches, once for all subscribers, and fans out each
 * batch to the Hub. Losing the connection (or Postgres restarting) therefore loses nothing:
 * the next read picks up exactly where `head` was.
 */
import { EventEmitter } from 'node:events';
import type pg from 'pg';
import pgListen, { type Options as PgListenOptions, type Subscriber } from 'pg-listen';
import { backoffMs } from '../backoff.ts';
import { coerceError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import type { Event } from './event.ts';
import type { Hub } from './hub.ts';
import type { EventLog } from './log.ts';

/** The NOTIFY channel herald.ring() rings (sql/001_events.sql); its payload is always empty. */
export const CHANNEL = 'herald_events';

// pg-listen is CommonJS with `exports.default`; under Node's ESM loader the default import
// is the whole `module.exports`.
const createSubscriber = (pgListen as unknown as { default: (config: pg.ClientConfig, options: PgListenOptions) => Subscriber }).default;

/** The Listener's lifecycle: idle → connecting → listening ⇄ reconnecting → closed. */
export type ListenerState = 'idle' | 'connecting' | 'listening' | 'reconnecting' | 'closed';

/** Lifecycle events, `noun:verb`. */
export interface ListenerEvents {
  /** Every state change, with the new state. */
  'listener:state': [state: ListenerState];
  /** A ring arrived (the read it starts follows). */
  'listener:notification': [];
  /** A batch was read and handed to the Hub; `fanoutMs` is how long the hand-off took. */
  'listener:read': [count: number, head: number, fanoutMs: number];
  /** A read or the LISTEN connection failed; the Listener retries by itself. */
  'listener:error': [err: Error];
}

/** What a Listener needs: where to LISTEN, the log to read, the Hub to hand batches to, and its timings. */
export interface ListenerOptions {
  databaseUrl: string;
  log: EventLog;
  hub: Hub;
  logger: Logger;
  /** Interval of the read that runs even without a notification, in ms (catches a lost NOTIFY). */
  safetyPollMs: number;
  /** Most events read per query; a full batch is followed at once by another read. */
  batchSize: number;
  /** Cap of the reconnect backoff, in ms. */
  reconnectMaxMs: number;
}

/** The process's one LISTEN connection: reads `id > head` on every ring and hands each batch to the Hub. */
export class Listener extends EventEmitter<ListenerEvents> {
  private _state: ListenerState = 'idle';
  private subscriber: Subscriber | null = null;
  private readonly opts: ListenerOptions;
  private safetyTimer: NodeJS.Timeout | null = null;
  private reconnectTimer: NodeJS.Timeout | null = null;
  private connectAttempts = 0;
  private everConnected = false;
  private reading: Promise<void> | null = null;
  private readAgain = false;
  /** Times the LISTEN connection was re-established. */
  reconnects = 0;

  constructor(opts: ListenerOptions) {
    super();
    this.opts = opts;
  }

  /** Where the lifecycle is now. */
  get state(): ListenerState {
    return this._state;
  }

  // A method, not an inline comparison: TypeScript would keep the narrowed state across awaits.
  private isClosed(): boolean {
    return this._state === 'closed';
  }

  /** The highest id read from the log and fanned out. */
  get head(): number {
    return this.opts.hub.head;
  }

  /** Reads the current head, then connects (retrying forever in the background). */
  async start(): Promise<void> {
    if (this._state !== 'idle') return;
    const { head } = await this.opts.log.readHead();
    this.opts.hub.head = head;
    this.safetyTimer = setInterval(() => this.poke(), this.opts.safetyPollMs);
    await this.connect();
  }

  /**
   * Reads everything after `head` and fans it out. Calls that arrive during a read fold
   * into one more read after it, so a burst of notifications costs one or two queries.
   */
  poke(): Promise<void> {
    if (this.isClosed()) return Promise.resolve();
    if (this.reading) {
      this.readAgain = true;
      return this.reading;
    }
    this.reading = this.drain().finally(() => {
      this.reading = null;
    });
    return this.reading;
  }

  /** Stops listening and polling and waits for a read in progress; idempotent. */
  async close(): Promise<void> {
    if (this.isClosed()) return;
    this.setState('closed');
    if (this.safetyTimer) clearInterval(this.safetyTimer);
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.safetyTimer = this.reconnectTimer = null;
    await this.dropSubscriber();
    await this.reading?.catch(() => undefined);
  }

  private async drain(): Promise<void> {
    do {
      this.readAgain = false;
      let batch: Event[];
      try {
        batch = await this.opts.log.readAfter(this.opts.hub.head, this.opts.batchSize);
      } catch (err) {
        // The pool is down too (Postgres restarting): the safety poll tries again.
        const e = coerceError(err);
        this.emit('listener:error', e);
        this.opts.logger.warn({ err: e.message }, 'listener read failed; retrying on the next poll');
        return;
      }
      if (this.isClosed()) return;
      if (batch.length > 0) {
        const t0 = performance.now();
        try {
          this.opts.hub.fanOut(batch);
        } catch (err) {
          // A subscriber's bug: every other subscriber still got the batch (Hub.fanOut).
          this.emit('listener:error', coerceError(err));
          this.opts.logger.error({ err }, 'a subscriber failed while taking a batch');
        }
        this.emit('listener:read', batch.length, this.opts.hub.head, performance.now() - t0);
      }
      if (batch.length === this.opts.batchSize) this.readAgain = true;
    } while (this.readAgain && !this.isClosed());
  }

  private async connect(): Promise<void> {
    if (this.isClosed()) return;
    this.setState(this.connectAttempts === 0 ? 'connecting' : 'reconnecting');
    const subscriber = createSubscriber(
      { connectionString: this.opts.databaseUrl, application_name: 'herald-listener' },
      {
        // The payload is an empty doorbell, not JSON.
        parse: (s: string) => s,
        // pg-listen gives up after 3 s by default; a Postgres restart can take longer.
        retryLimit: Number.POSITIVE_INFINITY,
        retryTimeout: 0,
        retryInterval: (attempt: number) => backoffMs(attempt, this.opts.reconnectMaxMs),
        // Catches a half-open socket that would otherwise look connected and silent.
        paranoidChecking: 10_000,
      },
    );
    this.subscriber = subscriber;
    subscriber.notifications.on(CHANNEL, () => {
      this.emit('listener:notification');
      void this.poke();
    });
    subscriber.events.on('connected', () => this.subscriberOnConnected(subscriber));
    subscriber.events.on('reconnect', () => {
      if (this.subscriber === subscriber) this.setState('reconnecting');
    });
    // pg-listen stops retrying after a failed re-LISTEN; start over with a fresh subscriber.
    subscriber.events.on('error', (err: Error) => this.subscriberOnError(subscriber, err));
    try {
      await subscriber.connect();
    } catch (err) {
      this.subscriberOnError(subscriber, coerceError(err));
    }
  }

  private subscriberOnConnected(subscriber: Subscriber): void {
    if (this.subscriber !== subscriber || this.isClosed()) return;
    if (this.everConnected) this.reconnects++;
    this.everConnected = true;
    this.connectAttempts = 0;
    // pg-listen emits `connected` after re-LISTEN on reconnect, but on the first connect
    // before our LISTEN: wait for it so no ring is missed between the two.
    void Promise.resolve(subscriber.getSubscribedChannels().includes(CHANNEL) ? undefined : subscriber.listenTo(CHANNEL))
      .then(() => {
        if (this.subscriber !== subscriber || this.isClosed()) return;
        this.setState('listening');
        // Whatever committed while we were not listening.
        void this.poke();
      })
      .catch((err: Error) => this.subscriberOnError(subscriber, err));
  }

  private subscriberOnError(subscriber: Subscriber, err: Error): void {
    if (this.subscriber !== subscriber || this.isClosed()) return;
    this.emit('listener:error', err);
    this.opts.logger.warn({ err: err.message }, 'LISTEN connection failed; reconnecting');
    void this.dropSubscriber();
    this.connectAttempts++;
    this.setState('reconnecting');
    this.reconnectTimer = setTimeout(
      () => {
        this.reconnectTimer = null;
        void this.connect();
      },
      backoffMs(this.connectAttempts, this.opts.reconnectMaxMs),
    );
  }

  private async dropSubscriber(): Promise<void> {
    const s = this.subscriber;
    this.subscriber = null;
    if (!s) return;
    for (const name of ['connected', 'reconnect', 'error', 'notification'] as const) s.events.removeAllListeners(name);
    s.notifications.removeAllListeners(CHANNEL);
    // A late error from the dying client must not become an unhandled 'error' event.
    s.events.on('error', () => undefined);
    await s.close().catch(() => undefined);
  }

  private setState(to: ListenerState): void {
    if (this._state === to || this.isClosed()) return;
    this._state = to;
    this.emit('listener:state', to);
  }
}
