/**
 * The stream policy, the same on every transport (transport.ts is the contract each one
 * implements): how a client's Subscription becomes writes.
 *
 * - Opening: the access check, the filter narrowed to what the reader may read, and the
 *   subscriber gauge (subscribe.ts), then a Stream.
 * - Narrowing, per event: what the filter could not narrow (anonymous `*` beside private
 *   topics, patterns the authorization function opens topic by topic) is checked batch by
 *   batch by the reader's ReadGate (access.ts), here, for every transport: an event outside
 *   the reader's grants is never written. A topic awaiting the function's answer holds the
 *   stream (in pull mode) until it comes; the position stays before the held events.
 * - Expiry: a stream under a token with an `exp` ends at that moment (a timer, not a check
 *   per event) with token_expired and its position.
 * - Pull mode: catch-up reads while the Subscription replays, one batch (a page) per write.
 * - Push mode, the live fast path: the Subscription's onReady hook runs inside the Hub's
 *   publish and the batch is written in the same tick — no promise, no wake-up per client
 *   per batch. Only one of the two modes runs at a time, so batches leave in id order.
 * - Backpressure: past `maxClientQueueBytes` queued on the transport, nothing more is
 *   written (the Subscription meanwhile buffers, then falls back to table reads) until it
 *   drains; a client that does not drain within `slowConsumerTimeoutMs` is ended with
 *   slow_consumer and its position, and dropped after one more timeout.
 * - Checkpoints: the position, when it has moved past what the client was told.
 * - Ends: every way a stream ends tells the client the position it can resume from.
 * - Delivery metrics: one tally per transport, off the per-write path.
 * - Polls: one read bounded by `limit`, one write, one end (pollOnce): a poll has no
 *   backpressure and no slow consumer, because nothing is held between requests.
 */
import type { Config } from '../config.ts';
import { HeraldError, publicError } from '../errors.ts';
import type { Event } from '../events/event.ts';
import type { NextOptions, Subscription } from '../events/subscription.ts';
import type { TopicFilter } from '../events/topic.ts';
import type { Metrics } from '../http/metrics.ts';
import type { Logger } from '../logger.ts';
import { type ReadGate, type Reader, type TopicAccess, tokenExpired } from './access.ts';
import { waitForRoom } from './backpressure.ts';
import type { Sessions } from './sessions.ts';
import { type ReaderSubscription, type SubscribeDeps, type SubscribeOptions, subscribeReader } from './subscribe.ts';
import type { Transport, TransportName } from './transport.ts';

/** setTimeout's longest delay (2^31 − 1 ms, about 24.8 days); a longer one fires at once. */
const TIMER_MAX_MS = 2 ** 31 - 1;

/**
 * What every transport and the policy need from the gateway: the log and Hub to subscribe
 * to, the limits, the metrics, the access rule, the open sessions (ended with their position
 * at shutdown), and whether shutdown has begun. Each transport adds its own settings.
 */
export interface StreamDeps extends SubscribeDeps {
  readonly config: SubscribeDeps['config'] & Pick<Config, 'maxClientQueueBytes' | 'slowConsumerTimeoutMs'>;
  readonly logger: Pick<Logger, 'error'>;
  readonly metrics: SubscribeDeps['metrics'] & Pick<Metrics, 'slowConsumerCloses' | 'deliveries' | 'deliveryLag' | 'onCollect'>;
  readonly access: Pick<TopicAccess, 'authorizeRead' | 'authenticate' | 'reader'>;
  readonly sessions: Sessions;
  /** True once shutdown has begun: new streams are refused. */
  readonly stopping: boolean;
}

/** Refuses a new stream once shutdown has begun (503 shutting_down); `retry` says what to do instead. */
export function refuseWhenStopping(deps: Pick<StreamDeps, 'stopping'>, retry: string): void {
  if (deps.stopping) throw new HeraldError('HERALD_ERR_SHUTTING_DOWN', `server is shutting down: ${retry}`);
}

/**
 * Delivery metrics of one transport, shared by all its streams. The write path runs once
 * per client per batch, where a prom-client inc() costs as much as the write it counts: it
 * tallies in a plain number, folded into herald_deliveries_total at each scrape; and a batch
 * written to many streams (the Hub shares one array among every subscriber of a topic) gets
 * one herald_delivery_lag_seconds sample, at its first write, not one per client.
 */
export class DeliveryTally {
  private delivered = 0;
  private lastLagBatch: readonly Event[] | null = null;
  private readonly lag: { observe(seconds: number): void };

  /** Registers the fold into the counters with the scrape. */
  constructor(metrics: Pick<Metrics, 'deliveries' | 'deliveryLag' | 'onCollect'>, transport: TransportName) {
    const deliveries = metrics.deliveries.labels(transport);
    this.lag = metrics.deliveryLag.labels(transport);
    metrics.onCollect(() => {
      if (this.delivered > 0) deliveries.inc(this.delivered);
      this.delivered = 0;
    });
  }

  /** Counts a batch written to one client. */
  record(events: readonly Event[]): void {
    this.delivered += events.length;
    if (events !== this.lastLagBatch) {
      this.lastLagBatch = events;
      this.lag.observe((Date.now() - events[0]!.atMs) / 1000);
    }
  }
}

/** An unexpected failure of a stream or a poll as the client sees it, logged when it is a bug. */
function failureOf(deps: Pick<StreamDeps, 'logger'>, transport: Transport, err: unknown): HeraldError {
  const e = publicError(err);
  if (e.code === 'HERALD_ERR_INTERNAL') deps.logger.error({ err, transport: transport.name }, 'stream failed');
  return e;
}

/**
 * Where a Stream is: `idle` from open until start() (the transport acknowledges the
 * subscription first), then `pulling` (catch-up reads, or waiting for room) or `pushing`
 * (live: batches written from the Hub's publish), and `ended`, for good.
 */
export type StreamState = 'idle' | 'pulling' | 'pushing' | 'ended';

/** What a Stream reads beyond its Subscription: the reader's gate, the filter as asked, the token's expiry. */
export interface StreamAccess {
  /** The per-event check (null: every event of the Subscription is readable). */
  readonly gate: ReadGate | null;
  /** The filter as the client asked for it (the Subscription reads it narrowed). */
  readonly requested: TopicFilter;
  /** When the reader's token expires (epoch ms), or null. */
  readonly expiresAtMs: number | null;
}

/** One Subscription written to one Transport under the policy above. */
export class Stream {
  private _state: StreamState = 'idle';
  /** Highest position the client has been told: `since`, then each batch's last id and each checkpoint. */
  private sent: number;
  /**
   * Events taken from the Subscription and not yet written, from the first whose topic
   * awaits the authorization function's answer: the position stays before them.
   */
  private held: readonly Event[] | null = null;
  private expiry: ReturnType<typeof setTimeout> | undefined;

  /** Use openStream(): it wires the Subscription's onReady hook to this Stream. */
  constructor(
    private readonly deps: StreamDeps,
    private readonly sub: Subscription,
    private readonly transport: Transport,
    private readonly tally: DeliveryTally,
    private readonly access: StreamAccess,
  ) {
    this.sent = sub.since;
  }

  get state(): StreamState {
    return this._state;
  }

  /** The position the stream started after (`now` resolved to the database's head). */
  get since(): number {
    return this.sub.since;
  }

  /** The epoch of the log this stream reads. */
  get epoch(): string {
    return this.sub.epoch;
  }

  /** What the stream reads, as the client asked (unsubscribe takes entries out of it by spelling). */
  get filter(): TopicFilter {
    return this.access.requested;
  }

  /** The position the client can resume from: every matching event up to it has been written or skipped. */
  get position(): number {
    const held = this.held;
    return held ? Math.min(this.sub.position, held[0]!.id - 1) : this.sub.position;
  }

  /** Bytes held for this client: the Subscription's buffer plus the transport's unsent bytes. */
  get queuedBytes(): number {
    return this.sub.queuedBytes + this.transport.queuedBytes;
  }

  /** True while the transport holds more than its budget: nothing but heartbeats may be added. */
  get overBudget(): boolean {
    return this.transport.queuedBytes > this.deps.config.maxClientQueueBytes;
  }

  /** Starts writing (after the transport has acknowledged the subscription), and the expiry timer. */
  start(): void {
    if (this._state !== 'idle') return;
    if (this.access.expiresAtMs !== null) this.armExpiry(this.access.expiresAtMs);
    void this.pull();
  }

  /** Called by the transport's checkpoint timer: writes the position if it moved past what was sent. */
  checkpoint(): void {
    if (this._state === 'idle' || this._state === 'ended') return;
    const position = this.position;
    if (position > this.sent && !this.overBudget) {
      this.sent = position;
      this.transport.writeCheckpoint(position);
    }
  }

  /**
   * Ends the stream and has the transport tell the client why and where to resume:
   * `position` defaults to the stream's, read before it closes (live, that is the Hub's
   * head, past events the filter did not want; before any held event).
   */
  end(error?: HeraldError, position = this.position): void {
    if (!this.transition('ended')) return;
    this.sub.close();
    this.transport.end(error, position);
  }

  /** Ends the stream without a word to the client (it left, or replaced the stream). */
  stop(): void {
    if (this.transition('ended')) this.sub.close();
  }

  /** The Subscription's onReady hook (also called while pulling, or before start(): then it waits). */
  onReady(): void {
    if (this._state === 'pushing') this.push();
  }

  /** The one place the state changes; nothing leaves `ended` (and the expiry timer goes with it). */
  private transition(to: StreamState): boolean {
    if (this._state === 'ended') return false;
    this._state = to;
    if (to === 'ended') clearTimeout(this.expiry);
    return true;
  }

  /** Ends the stream with token_expired at `atMs`, in steps of at most TIMER_MAX_MS. */
  private armExpiry(atMs: number): void {
    const left = atMs - Date.now();
    if (left <= 0) return this.end(tokenExpired(atMs));
    this.expiry = setTimeout(() => this.armExpiry(atMs), Math.min(left, TIMER_MAX_MS));
  }

  // A method, not an inline comparison: TypeScript would keep the narrowed state across awaits.
  private isEnded(): boolean {
    return this._state === 'ended';
  }

  /**
   * Pull mode: catch-up reads while the Subscription replays, and the wait for a full
   * transport to drain. Once the stream is live and the transport has room it hands over to
   * push mode.
   */
  private async pull(): Promise<void> {
    if (!this.transition('pulling')) return;
    const { maxClientQueueBytes, slowConsumerTimeoutMs } = this.deps.config;
    try {
      while (!this.isEnded()) {
        if (this.held && !this.overBudget) {
          // The first held event's topic awaits the function's answer: ask, then go on.
          const held = this.held;
          await this.access.gate!.decide(held[0]!.topic);
          if (this.isEnded()) return;
          this.held = null;
          this.deliver(held);
          continue;
        }
        if (this.overBudget) {
          // Stop pulling: the Subscription's own bound makes it fall back to table reads.
          await waitForRoom({
            queued: () => this.transport.queuedBytes,
            budget: maxClientQueueBytes,
            stream: this.transport.socket,
            timeoutMs: slowConsumerTimeoutMs,
            gone: () => this.isEnded(),
            resumeHint: this.transport.resumeHint,
          });
          continue;
        }
        if (this.sub.state === 'live') return this.push();
        const events = await this.sub.next();
        if (!this.isEnded() && events.length > 0) this.deliver(events);
      }
    } catch (err) {
      this.fail(err);
    }
  }

  /**
   * Push mode: runs from onReady inside the Hub's publish and writes what is ready in the
   * same tick. A full transport or a fallback to catch-up reads goes back to pull mode.
   */
  private push(): void {
    if (!this.transition('pushing')) return;
    try {
      for (;;) {
        const events = this.sub.takeReady();
        if (events === null) return void this.pull();
        if (events.length === 0) return;
        if (!this.deliver(events) || this.overBudget) return void this.pull();
      }
    } catch (err) {
      // Runs inside the Hub's publish: a failure here must end this stream, not the fan-out.
      // The batch it was writing may be taken and not written: resume from what was sent.
      this.fail(err, this.sent);
    }
  }

  /**
   * Writes what the reader may read of a batch (all of it without a gate). False when an
   * event's topic awaits the function's answer: it and the rest are held for pull().
   */
  private deliver(events: readonly Event[]): boolean {
    const gate = this.access.gate;
    if (gate === null) {
      this.write(events);
      return true;
    }
    const { visible, rest } = gate.pass(events);
    if (visible.length > 0) this.write(visible);
    if (rest.length === 0) return true;
    this.held = rest;
    return false;
  }

  /** Writes one batch (one write on the transport) and counts it. */
  private write(events: readonly Event[]): void {
    if (!this.transport.writeBatch(events)) return;
    this.sent = events[events.length - 1]!.id;
    this.tally.record(events);
  }

  /** Ends the stream with what went wrong; a slow consumer is also dropped after a grace period. */
  private fail(err: unknown, position?: number): void {
    if (this.isEnded()) return;
    const e = failureOf(this.deps, this.transport, err);
    if (e.code === 'HERALD_ERR_SLOW_CONSUMER') {
      this.deps.metrics.slowConsumerCloses.labels(this.transport.name).inc();
      // The error (an SSE event, a close frame) queues behind the unsent backlog, and a
      // stalled peer never reads it (ws would wait 30 s for the closing handshake): one more
      // timeout, then drop the connection and the memory with it.
      const grace = setTimeout(() => this.transport.terminate(), this.deps.config.slowConsumerTimeoutMs);
      this.transport.socket.once('close', () => clearTimeout(grace));
    }
    this.end(e, position);
  }
}

/**
 * Opens a Stream for `transport`: checks that `reader` may read the filter, opens its
 * Subscription on the filter narrowed to what it may read (counted in the subscriber gauge
 * until it closes) and ties the Subscription's onReady hook to the Stream. The Stream is
 * idle until start().
 */
export async function openStream(
  deps: StreamDeps,
  transport: Transport,
  tally: DeliveryTally,
  reader: Reader,
  opts: Omit<SubscribeOptions, 'onReady'>,
): Promise<Stream> {
  let stream: Stream | undefined;
  // The Hub may deliver before the Stream exists: onReady is ignored until it pushes.
  const { sub, gate } = await subscribeReader(deps, transport.name, reader, { ...opts, onReady: () => stream?.onReady() });
  stream = new Stream(deps, sub, transport, tally, { gate, requested: opts.filter, expiresAtMs: reader.subject.expiresAtMs });
  return stream;
}

/**
 * A poll under the same policy: one read of at most `limit` events (a long-poll's waits
 * until `signal` aborts for one to arrive), narrowed by the reader's gate (a long-poll whose
 * events were all outside the reader's grants waits on), written as one batch, then the end
 * at the Subscription's position, which the answer carries as `next`; a failed read (or
 * authorization call) ends it with its error. A poll has no backpressure and no slow
 * consumer: its answer is bounded by `limit` (and the replay page), written once, and
 * nothing is held between polls.
 */
export async function pollOnce(
  deps: Pick<StreamDeps, 'logger'>,
  { sub, gate }: ReaderSubscription,
  transport: Transport,
  tally: DeliveryTally,
  opts: NextOptions,
): Promise<void> {
  let events: readonly Event[];
  try {
    events = await readVisible(sub, gate, opts);
  } catch (err) {
    transport.end(failureOf(deps, transport, err), sub.position);
    return;
  }
  if (events.length > 0 && transport.writeBatch(events)) tally.record(events);
  transport.end(undefined, sub.position);
}

/** The Subscription's next events that the gate lets through, asking the function where it must. */
async function readVisible(sub: Subscription, gate: ReadGate | null, opts: NextOptions): Promise<readonly Event[]> {
  for (;;) {
    const events = await sub.next(opts);
    if (gate === null || events.length === 0) return events;
    const out: Event[] = [];
    for (let batch = events; ; ) {
      const { visible, rest } = gate.pass(batch);
      out.push(...visible);
      if (rest.length === 0) break;
      // Not the poll's signal: it only ends a long-poll's wait (a plain poll's is aborted already).
      await gate.decide(rest[0]!.topic);
      batch = rest;
    }
    if (out.length > 0 || opts.signal?.aborted) return out;
  }
}
