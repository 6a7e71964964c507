/**
 * The open streaming sessions (SSE streams, long-polls, WebSocket connections) of this
 * process, so shutdown can end each one with its resume position.
 */
import { HeraldError } from '../errors.ts';

/** One open stream or connection, as shutdown sees it. */
export interface Session {
  /** Ends the session, telling the client why (and where to resume). */
  close(reason: HeraldError): void;
}

/** The open sessions of this process: each registers itself, and shutdown ends them all. */
export class Sessions {
  private readonly open = new Set<Session>();

  get size(): number {
    return this.open.size;
  }

  /** Registers `s` until the returned function is called (when the session ends by itself). */
  add(s: Session): () => void {
    this.open.add(s);
    return () => this.open.delete(s);
  }

  /** Ends every open session with `reason` (shutdown), each telling its client where to resume. */
  closeAll(reason: HeraldError): void {
    for (const s of [...this.open]) s.close(reason);
    this.open.clear();
  }
}

/**
 * A cap on one kind of stream (SSE streams, long-polls), like wsMaxConnections for
 * WebSockets: each holds a socket, a Subscription and its buffer for as long as it lasts.
 */
export class StreamCap {
  private open = 0;

  /** A cap of `max`, named in the refusal as `what` and raised by `setting`. */
  constructor(
    private readonly max: number,
    /** What is counted and which setting raises it, for the refusal's message. */
    private readonly what: string,
    private readonly setting: string,
  ) {}

  get size(): number {
    return this.open;
  }

  /** Takes a slot, or throws too_many_connections (503, Retry-After); returns its release. */
  acquire(): () => void {
    if (this.open >= this.max) {
      throw new HeraldError(
        'HERALD_ERR_TOO_MANY_CONNECTIONS',
        `this instance holds its maximum of ${this.max} ${this.what} (${this.setting}): retry later or elsewhere`,
        { retryAfterS: 1 },
      );
    }
    this.open++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.open--;
    };
  }
}
