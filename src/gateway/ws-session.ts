/**
 * One WebSocket connection: one ordered stream at a time. `subscribe` (re)starts the
 * stream at `since` with new topics, `unsubscribe` narrows it from the current position,
 * `ping` is answered with `pong`. Events go out in batches, each one socket write of
 * prepared frames (ws-frames.ts): pushed inside the Hub's publish while the stream is live
 * (push mode), pulled from the Subscription while it catches up (pull mode). Past the byte
 * budget the session stops writing until the socket drains (the Subscription meanwhile
 * falls back to table reads), and a client that does not drain in time is closed with 4008
 * and its cursor.
 */
import { WebSocket } from 'ws';
import { subscribe, type HeraldContext } from '../context.ts';
import { HeraldError, publicError } from '../errors.ts';
import type { Event } from '../events/event.ts';
import type { Subscription } from '../events/subscription.ts';
import type { TopicFilter } from '../events/topic.ts';
import type { Reader } from './access.ts';
import { waitForRoom } from './backpressure.ts';
import { JSON_MAX_DEPTH, parseJson } from './json-input.ts';
import { preparedFrames, socketOf } from './ws-frames.ts';
import { parseFilter, parseSince, WS_CLOSE, wsClientMessage, type WsServerMessage } from './protocol.ts';
import { TokenBucket } from '../token-bucket.ts';

export type WsSessionState = 'open' | 'closing' | 'closed';

export class WsSession {
  private _state: WsSessionState = 'open';
  private sub: Subscription | null = null;
  /** Push mode (live, socket has room): the Subscription's onReady writes batches at once. */
  private pushing = false;
  /** The stream a subscribe (or unsubscribe) is opening, until its Subscription is open. */
  private opening: { generation: number; filter: TopicFilter; since: number | 'now'; epoch: string | undefined } | null = null;
  /** Bumped by every subscribe/unsubscribe: a slower, older one must not win. */
  private generation = 0;
  /** Highest id this client has been told about (event or checkpoint). */
  private sentPosition = 0;
  /** Position to report when no stream is open (after an error or unsubscribe-all). */
  private idlePosition = 0;
  private readonly subscribeRate: TokenBucket;
  /** Cleared on each ping, set by the pong: a peer that misses one round is dropped. */
  alive = true;
  private readonly unregister: () => void;

  constructor(
    private readonly ctx: HeraldContext,
    private readonly ws: WebSocket,
    private readonly reader: Reader,
  ) {
    this.subscribeRate = new TokenBucket(ctx.config.wsSubscribeBurst, ctx.config.wsSubscribePerS);
    this.unregister = ctx.sessions.add({ close: (reason) => this.close(reason.closeCode, reason.message) });
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
    return (this.sub?.queuedBytes ?? 0) + this.ws.bufferedAmount;
  }

  /** The cursor this client can resume from. */
  get position(): number {
    return this.sub ? this.sub.position : this.idlePosition;
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
    const sub = this.sub;
    if (!sub || this._state !== 'open') return;
    const position = sub.position;
    if (position > this.sentPosition && this.ws.bufferedAmount < this.ctx.config.maxClientQueueBytes) {
      this.sentPosition = position;
      this.send({ op: 'checkpoint', id: position });
    }
  }

  /** Ends the connection with `code`; the reason carries the resume cursor. */
  close(code: number, message: string): void {
    if (this._state !== 'open') return;
    this._state = 'closing';
    const position = this.position;
    this.stopStream();
    // The reason is limited to 123 bytes: the cursor first, then as much message as fits.
    const reason = JSON.stringify({ position, message: message.slice(0, 80) });
    this.ws.close(code, Buffer.byteLength(reason) <= 123 ? reason : JSON.stringify({ position }));
  }

  private wsOnClose(): void {
    this._state = 'closed';
    this.stopStream();
    this.unregister();
  }

  private wsOnMessage(data: Buffer, isBinary: boolean): void {
    if (this._state !== 'open') return;
    if (isBinary) return this.sendError(new HeraldError('HERALD_ERR_BAD_REQUEST', 'send JSON text frames, not binary'));
    let raw: unknown;
    try {
      // Checked first (depth, NUL, surrogates): a deeply nested `op` once overflowed the
      // stack in the error message below, uncaught, and took the process down.
      raw = parseJson(data.toString('utf8'), { what: 'message', maxDepth: JSON_MAX_DEPTH });
    } catch (err) {
      return this.sendError(publicError(err));
    }
    const parsed = wsClientMessage.safeParse(raw);
    if (!parsed.success) {
      const op = (raw as { op?: unknown } | null)?.op;
      const known = op === 'subscribe' || op === 'unsubscribe' || op === 'ping';
      const issue = parsed.error.issues[0];
      return this.sendError(
        new HeraldError(
          'HERALD_ERR_BAD_REQUEST',
          known
            ? `bad ${String(op)} message: ${issue?.path.join('.') || 'message'}: ${issue?.message}`
            : `unknown op ${JSON.stringify(op)?.slice(0, 40)}: use subscribe, unsubscribe or ping`,
        ),
      );
    }
    const msg = parsed.data;
    if (msg.op === 'ping') return this.send({ op: 'pong' });
    if (!this.subscribeRate.tryTake()) {
      this.ctx.metrics.wsPolicyCloses.inc();
      return this.close(WS_CLOSE.POLICY, 'subscribe rate exceeded');
    }
    if (msg.op === 'subscribe') void this.subscribe(msg.topics, msg.since, msg.epoch);
    else void this.unsubscribe(msg.topics);
  }

  private async subscribe(topics: string[], rawSince: unknown, epoch: string | undefined): Promise<void> {
    const generation = ++this.generation;
    this.stopStream();
    try {
      const filter = parseFilter(topics, this.ctx.config.maxFilterEntries);
      const since = parseSince(rawSince === undefined ? 'now' : rawSince);
      await this.start(generation, filter, since, epoch);
    } catch (err) {
      if (generation === this.generation) this.sendError(publicError(err));
    }
  }

  private async unsubscribe(topics: string[]): Promise<void> {
    const generation = ++this.generation;
    try {
      const current = this.sub;
      const remove = parseFilter(topics, this.ctx.config.maxFilterEntries);
      const opening = this.opening;
      if (!current && opening) {
        // A stream still opening (its start() will see the new generation and give up):
        // narrow what it asked for, from where it asked. Nothing has been sent from it.
        this.opening = null;
        const left = opening.filter.without(remove);
        if (left) return await this.start(generation, left, opening.since, opening.epoch);
        const head = await this.ctx.log.readHead();
        const since = opening.since === 'now' ? head.head : opening.since;
        if (generation === this.generation) {
          this.idlePosition = since;
          this.send({ op: 'subscribed', epoch: head.epoch, head: Math.max(this.ctx.hub.head, since), since, topics: [] });
        }
        return;
      }
      if (!current) return;
      const left = current.filter.without(remove);
      const position = current.position;
      this.stopStream();
      this.idlePosition = position;
      if (left) await this.start(generation, left, position, undefined);
      else this.send({ op: 'subscribed', epoch: current.epoch, head: this.ctx.hub.head, since: position, topics: [] });
    } catch (err) {
      if (generation === this.generation) this.sendError(publicError(err));
    }
  }

  private async start(generation: number, filter: TopicFilter, since: number | 'now', epoch: string | undefined): Promise<void> {
    this.opening = { generation, filter, since, epoch };
    let sub: Subscription;
    try {
      sub = await subscribe(this.ctx, 'ws', this.reader, {
        filter,
        since,
        epoch,
        readKey: socketOf(this.ws).remoteAddress ?? 'unknown',
        onReady: () => this.onReady(),
      });
    } finally {
      if (this.opening?.generation === generation) this.opening = null;
    }
    if (generation !== this.generation || this._state !== 'open') {
      sub.close();
      return;
    }
    this.sub = sub;
    this.sentPosition = sub.since;
    this.send({ op: 'subscribed', epoch: sub.epoch, head: Math.max(this.ctx.hub.head, sub.since), since: sub.since, topics: filter.entries() });
    void this.pull(sub);
  }

  /**
   * Pull mode: table reads while the stream is replaying, and the wait for a full socket to
   * drain. Once the stream is live and the socket has room it hands over to push mode.
   * Only one of the two modes runs at a time, so frames leave in id order.
   */
  private async pull(sub: Subscription): Promise<void> {
    this.pushing = false;
    try {
      for (;;) {
        if (this.sub !== sub || sub.state === 'closed') return;
        if (this.ws.bufferedAmount > this.ctx.config.maxClientQueueBytes) {
          // Stop pulling: the Subscription's own bound makes it fall back to table reads.
          await waitForRoom({
            queued: () => this.ws.bufferedAmount,
            budget: this.ctx.config.maxClientQueueBytes,
            stream: socketOf(this.ws),
            timeoutMs: this.ctx.config.slowConsumerTimeoutMs,
            gone: () => this.sub !== sub || this._state !== 'open',
            resumeHint: 'resume from the position in the close reason',
          });
          continue;
        }
        if (sub.state === 'live') {
          this.pushing = true;
          return this.push(sub);
        }
        const events = await sub.next();
        if (this.sub === sub && events.length > 0) this.sendBatch(events);
      }
    } catch (err) {
      if (this.sub !== sub) return;
      const e = publicError(err);
      if (e.code === 'HERALD_ERR_SLOW_CONSUMER') {
        this.ctx.metrics.slowConsumerCloses.labels('ws').inc();
        this.close(WS_CLOSE.SLOW_CONSUMER, e.message);
        // The close frame waits behind the unsent backlog, and a stalled peer never answers
        // it (ws would wait 30 s): give it one more timeout, then drop the connection and
        // the memory with it.
        const grace = setTimeout(() => this.ws.terminate(), this.ctx.config.slowConsumerTimeoutMs);
        this.ws.once('close', () => clearTimeout(grace));
        return;
      }
      if (e.code === 'HERALD_ERR_INTERNAL') this.ctx.logger.error({ err }, 'websocket stream failed');
      this.idlePosition = sub.position;
      this.stopStream();
      this.sendError(e, { position: this.idlePosition });
    }
  }

  /**
   * Push mode, the live fast path: the Subscription's onReady hook calls this inside the
   * Hub's publish, and the batch is written in the same tick — no promise, no wake-up per
   * client per batch. A full socket or a fallback to table reads goes back to pull mode.
   */
  private push(sub: Subscription): void {
    try {
      for (;;) {
        const events = sub.takeReady();
        if (events === null) return void this.pull(sub);
        if (events.length === 0) return;
        this.sendBatch(events);
        if (this.ws.bufferedAmount > this.ctx.config.maxClientQueueBytes) return void this.pull(sub);
      }
    } catch (err) {
      // Runs inside the Hub's publish: a failure here must end this stream, not the fan-out.
      // The batch it was writing may be taken and not written: resume from what was sent.
      this.ctx.logger.error({ err }, 'websocket stream failed');
      this.stopStream();
      this.idlePosition = this.sentPosition;
      this.sendError(publicError(err), { position: this.idlePosition });
    }
  }

  /** The Subscription's onReady hook (also called while replaying, or before start() has the sub). */
  private onReady(): void {
    if (this.pushing && this.sub) this.push(this.sub);
  }

  /** Writes a batch as one prepared Buffer, shared with every other recipient of the batch. */
  private sendBatch(events: readonly Event[]): void {
    // Closing (our close frame or the peer's is on its way): nothing may follow it.
    if (this.ws.readyState !== WebSocket.OPEN) return;
    const frames = preparedFrames(events);
    socketOf(this.ws).write(frames);
    this.sentPosition = events[events.length - 1]!.id;
    const tally = this.ctx.metrics.wsTally;
    tally.frames += events.length;
    tally.bytes += frames.length;
    this.ctx.metrics.observeWsLag(events);
  }

  private stopStream(): void {
    const sub = this.sub;
    this.sub = null;
    this.pushing = false;
    // Remember where the stream got to: a later close reason must not report less.
    if (sub) this.idlePosition = Math.max(this.idlePosition, sub.position);
    sub?.close();
  }

  private sendError(err: HeraldError, extra: Record<string, unknown> = {}): void {
    const { error } = err.toWire();
    this.send({ ...extra, ...error, op: 'error' } as WsServerMessage);
  }

  private send(msg: WsServerMessage): void {
    if (this._state !== 'open') return;
    this.ws.send(JSON.stringify(msg));
  }
}
