/**
 * One WebSocket connection, the WebSocket implementation of the transport contract
 * (transport.ts): one ordered stream at a time. `subscribe` (re)starts the stream at `since`
 * with new topics, `unsubscribe` narrows it from the current position, `auth` replaces the
 * connection's credentials (a running stream goes on under the new grants from its
 * position), `ping` is answered with `pong`. Events go out in batches, each one socket write of prepared frames
 * (ws-frames.ts); what is written when — catch-up pages, live batches pushed from the Hub's
 * publish, the wait for a full socket, the slow-consumer end, checkpoints — is the stream
 * policy's (stream-policy.ts).
 *
 * How an error ends things is its code's to say (`closes`, from the wire module's table):
 * a stream's error (cursor_expired, unavailable, …) is an `error` message with the stream's
 * position and the connection stays open; a connection's error (slow_consumer, rate_limited,
 * shutting_down) closes it with the code's close code and the position in the reason.
 */
import { CLOSE_REASON_MAX_BYTES, type CloseReason, type WsClientMessage, type WsServerMessage } from 'herald-client/protocol';
import { WebSocket } from 'ws';
import type { Config } from '../config.ts';
import { HeraldError, publicError } from '../errors.ts';
import type { Event } from '../events/event.ts';
import type { TopicFilter } from '../events/topic.ts';
import type { Metrics } from '../http/metrics.ts';
import { TokenBucket } from '../token-bucket.ts';
import type { Reader, Subject, TopicAccess } from './access.ts';
import { JSON_MAX_DEPTH, parseJson } from '../http/json-input.ts';
import { parseFilter, parseSince, parseWsClientMessage } from './protocol.ts';
import { type DeliveryTally, openStream, type Stream, type StreamDeps } from './stream-policy.ts';
import type { Transport } from './transport.ts';
import { preparedFrames, socketOf } from './ws-frames.ts';
import { clientKey } from '../events/catch-up-reads.ts';

/** What a WebSocket session needs: the stream policy's dependencies, its own settings and counters. */
export interface WsSessionDeps extends StreamDeps {
  readonly config: StreamDeps['config'] & Pick<Config, 'maxFilterEntries' | 'wsSubscribeBurst' | 'wsSubscribePerS'>;
  readonly metrics: StreamDeps['metrics'] & Pick<Metrics, 'wsPolicyCloses' | 'wsTally'>;
  readonly access: StreamDeps['access'] & Pick<TopicAccess, 'readerOf'>;
}

/**
 * Where a connection is: `open` (messages are read and answered), `closing` (Herald sent its
 * close frame: nothing more is written), `closed` (the socket is gone).
 */
export type WsSessionState = 'open' | 'closing' | 'closed';

/** The moves a session's state may make; anything else is refused by transition(). */
const TRANSITIONS: Readonly<Record<WsSessionState, readonly WsSessionState[]>> = {
  open: ['closing', 'closed'],
  closing: ['closed'],
  closed: [],
};

/** One WebSocket connection and the stream it carries. */
export class WsSession {
  private _state: WsSessionState = 'open';
  private stream: Stream | null = null;
  /** The stream a subscribe (or unsubscribe) is opening, until its Stream is open. */
  private opening: { generation: number; filter: TopicFilter; since: number | 'now'; epoch: string | undefined } | null = null;
  /** Bumped by every subscribe/unsubscribe: a slower, older one must not win. */
  private generation = 0;
  /** Position to report when no stream is open (after an error or unsubscribe-all). */
  private idlePosition = 0;
  private readonly subscribeRate: TokenBucket;
  /** Cleared on each ping, set by the pong: a peer that misses one round is dropped. */
  alive = true;
  private readonly unregister: () => void;
  /** This connection as the stream policy writes to it, for every stream it carries in turn. */
  private readonly transport: Transport;
  /** Who reads: from the upgrade's token, then from each `auth`. */
  private reader: Reader;
  /** An `auth` being checked: subscribes and unsubscribes that follow it wait for it. */
  private authing: Promise<void> | null = null;
  private readonly readKey: string;

  /** Takes over an upgraded connection: registers it for shutdown and starts reading its messages. */
  constructor(
    private readonly deps: WsSessionDeps,
    private readonly ws: WebSocket,
    subject: Subject,
    /** The WebSocket transport's delivery tally, shared by every session. */
    private readonly tally: DeliveryTally,
  ) {
    this.readKey = clientKey(socketOf(ws));
    this.reader = deps.access.reader(subject, this.readKey);
    this.subscribeRate = new TokenBucket(deps.config.wsSubscribeBurst, deps.config.wsSubscribePerS);
    this.transport = {
      name: 'ws',
      get queuedBytes() {
        return ws.bufferedAmount;
      },
      socket: socketOf(ws),
      resumeHint: 'resume from the position in the close reason',
      writeBatch: (events) => this.writeBatch(events),
      writeCheckpoint: (position) => this.send({ op: 'checkpoint', id: position }),
      end: (error, position) => this.streamEnded(error, position),
      terminate: () => ws.terminate(),
    };
    this.unregister = deps.sessions.add({ close: (reason) => this.close(reason) });
    ws.on('message', (data, isBinary) => this.wsOnMessage(data as Buffer, isBinary));
    ws.on('pong', () => (this.alive = true));
    ws.on('close', () => this.wsOnClose());
    // ws reports protocol violations (oversize frames: 1009) here and then closes.
    ws.on('error', () => undefined);
  }

  get state(): WsSessionState {
    return this._state;
  }

  /** Bytes held for this client: its Subscription's buffer plus the socket's unsent bytes. */
  get queuedBytes(): number {
    return this.stream ? this.stream.queuedBytes : this.ws.bufferedAmount;
  }

  /** The position this client can resume from. */
  get position(): number {
    return this.stream ? this.stream.position : this.idlePosition;
  }

  /** Called by the server's ping timer: drop a peer that did not answer the last ping. */
  heartbeat(): void {
    if (!this.alive) return this.terminate();
    this.alive = false;
    this.ws.ping();
  }

  /** Drops the connection without a closing handshake (dead peer, end of shutdown grace). */
  terminate(): void {
    this.stopStream();
    this.ws.terminate();
  }

  /** Called by the server's checkpoint timer. */
  checkpoint(): void {
    if (this._state === 'open') this.stream?.checkpoint();
  }

  /** Ends the connection with `reason`'s close code; the reason carries the resume position. */
  close(reason: HeraldError): void {
    this.closeAt(reason, this.position);
  }

  /** The one place the state changes: false (and nothing happens) for a move not allowed. */
  private transition(to: WsSessionState): boolean {
    if (!TRANSITIONS[this._state].includes(to)) return false;
    this._state = to;
    return true;
  }

  private closeAt(reason: HeraldError, position: number): void {
    if (!this.transition('closing')) return;
    this.stopStream();
    // The reason is limited to 123 bytes: the position first, then as much message as fits.
    const full: CloseReason = { position, message: reason.message.slice(0, 80) };
    const text = JSON.stringify(full);
    this.ws.close(reason.closeCode, Buffer.byteLength(text) <= CLOSE_REASON_MAX_BYTES ? text : JSON.stringify({ position }));
  }

  private wsOnClose(): void {
    this.transition('closed');
    this.stopStream();
    this.unregister();
  }

  private wsOnMessage(data: Buffer, isBinary: boolean): void {
    if (this._state !== 'open') return;
    let msg: WsClientMessage;
    try {
      if (isBinary) throw new HeraldError('HERALD_ERR_BAD_REQUEST', 'send JSON text frames, not binary');
      // Checked first (depth, NUL, surrogates): a deeply nested `op` once overflowed the
      // stack in the error message, uncaught, and took the process down.
      msg = parseWsClientMessage(parseJson(data.toString('utf8'), { what: 'message', maxDepth: JSON_MAX_DEPTH }));
    } catch (err) {
      return this.sendError(publicError(err));
    }
    if (msg.op === 'ping') return this.send({ op: 'pong' });
    if (!this.subscribeRate.tryTake()) {
      this.deps.metrics.wsPolicyCloses.inc();
      return this.close(new HeraldError('HERALD_ERR_RATE_LIMITED', 'subscribe rate exceeded'));
    }
    if (msg.op === 'subscribe') void this.subscribe(msg.topics, msg.since, msg.epoch);
    else if (msg.op === 'unsubscribe') void this.unsubscribe(msg.topics);
    else void this.auth(msg.token);
  }

  /**
   * Takes new credentials: answered `authed` (then a running or opening stream restarts from
   * its position under the new grants), or an error that leaves the old ones in place.
   */
  private async auth(token: string): Promise<void> {
    const previous = this.authing;
    const done = (async () => {
      // One auth after another, in the order sent.
      await previous;
      let subject: Subject;
      try {
        subject = await this.deps.access.readerOf(token);
      } catch (err) {
        return this.sendError(publicError(err));
      }
      if (this._state !== 'open') return;
      this.reader = this.deps.access.reader(subject, this.readKey);
      this.send({ op: 'authed', expiresAt: subject.expiresAtMs });
      await this.restart();
    })();
    this.authing = done;
    await done;
    if (this.authing === done) this.authing = null;
  }

  /** Restarts the stream (running or opening) from where it is, under the connection's current reader. */
  private async restart(): Promise<void> {
    const current = this.stream;
    const opening = this.opening;
    if (!current && !opening) return;
    const generation = ++this.generation;
    try {
      if (current) {
        const position = current.position;
        this.stopStream();
        await this.start(generation, current.filter, position, undefined);
      } else if (opening) {
        this.opening = null;
        await this.start(generation, opening.filter, opening.since, opening.epoch);
      }
    } catch (err) {
      if (generation === this.generation) this.sendError(publicError(err));
    }
  }

  private async subscribe(topics: string[], rawSince: unknown, epoch: string | undefined): Promise<void> {
    // After an `auth` sent before it, whose restart would otherwise replace this stream.
    if (this.authing) await this.authing;
    const generation = ++this.generation;
    this.stopStream();
    try {
      const filter = parseFilter(topics, this.deps.config.maxFilterEntries);
      const since = parseSince(rawSince === undefined ? 'now' : rawSince);
      await this.start(generation, filter, since, epoch);
    } catch (err) {
      if (generation === this.generation) this.sendError(publicError(err));
    }
  }

  private async unsubscribe(topics: string[]): Promise<void> {
    if (this.authing) await this.authing;
    const generation = ++this.generation;
    try {
      const current = this.stream;
      const remove = parseFilter(topics, this.deps.config.maxFilterEntries);
      const opening = this.opening;
      if (!current && opening) {
        // A stream still opening (its start() will see the new generation and give up):
        // narrow what it asked for, from where it asked. Nothing has been sent from it.
        this.opening = null;
        const left = opening.filter.without(remove);
        if (left) return await this.start(generation, left, opening.since, opening.epoch);
        const head = await this.deps.log.readHead();
        const since = opening.since === 'now' ? head.head : opening.since;
        if (generation === this.generation) {
          this.idlePosition = since;
          this.send({ op: 'subscribed', epoch: head.epoch, head: Math.max(this.deps.hub.head, since), since, topics: [] });
        }
        return;
      }
      if (!current) return;
      const left = current.filter.without(remove);
      const position = current.position;
      this.stopStream();
      this.idlePosition = position;
      if (left) await this.start(generation, left, position, undefined);
      else this.send({ op: 'subscribed', epoch: current.epoch, head: this.deps.hub.head, since: position, topics: [] });
    } catch (err) {
      if (generation === this.generation) this.sendError(publicError(err));
    }
  }

  private async start(generation: number, filter: TopicFilter, since: number | 'now', epoch: string | undefined): Promise<void> {
    this.opening = { generation, filter, since, epoch };
    let stream: Stream;
    try {
      stream = await openStream(this.deps, this.transport, this.tally, this.reader, {
        filter,
        since,
        epoch,
        readKey: this.readKey,
      });
    } finally {
      if (this.opening?.generation === generation) this.opening = null;
    }
    if (generation !== this.generation || this._state !== 'open') return stream.stop();
    this.stream = stream;
    this.send({ op: 'subscribed', epoch: stream.epoch, head: Math.max(this.deps.hub.head, stream.since), since: stream.since, topics: filter.entries() });
    stream.start();
  }

  /** Writes a batch as one prepared Buffer, shared with every other recipient of the batch. */
  private writeBatch(events: readonly Event[]): boolean {
    // Closing (our close frame or the peer's is on its way): nothing may follow it.
    if (this.ws.readyState !== WebSocket.OPEN) return false;
    const frames = preparedFrames(events);
    socketOf(this.ws).write(frames);
    this.deps.metrics.wsTally.bytes += frames.length;
    return true;
  }

  /**
   * The policy ended the current stream (it failed, or did not drain): the connection goes
   * on without one, or closes when the error is about the connection (slow_consumer).
   */
  private streamEnded(error: HeraldError | undefined, position: number): void {
    this.stream = null;
    this.idlePosition = position;
    if (!error) return;
    if (error.closes) this.closeAt(error, position);
    else this.sendError(error, { position });
  }

  private stopStream(): void {
    const stream = this.stream;
    this.stream = null;
    if (!stream) return;
    // Remember where the stream got to: a later close reason must not report less.
    this.idlePosition = Math.max(this.idlePosition, stream.position);
    stream.stop();
  }

  private sendError(err: HeraldError, extra: { position?: number } = {}): void {
    this.send({ ...extra, ...err.toWire().error, op: 'error' });
  }

  private send(msg: WsServerMessage): void {
    if (this._state !== 'open') return;
    this.ws.send(JSON.stringify(msg));
  }
}
