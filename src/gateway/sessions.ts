/**
 * The open streaming sessions (SSE streams, long-polls, WebSocket connections) of this
 * process, so shutdown can end each one with its resume cursor.
 */
import type { HeraldError } from '../errors.ts';

export interface Session {
  /** Ends the session, telling the client why (and where to resume). */
  close(reason: HeraldError): void;
}

export class Sessions {
  private readonly open = new Set<Session>();

  get size(): number {
    return this.open.size;
  }

  add(s: Session): () => void {
    this.open.add(s);
    return () => this.open.delete(s);
  }

  closeAll(reason: HeraldError): void {
    for (const s of [...this.open]) s.close(reason);
    this.open.clear();
  }
}
