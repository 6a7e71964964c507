/**
 * The transport contract: what the stream policy (stream-policy.ts) needs from a way of
 * getting events to a client. Each implementation is a sibling file — the WebSocket session
 * (ws-session.ts), Server-Sent Events (sse.ts), polling and long-polling (poll.ts) — and
 * this file imports none of them. A transport knows how to put bytes on its wire; the policy
 * decides what to write and when: catch-up reads, push mode, waiting out a full socket,
 * closing a slow consumer, checkpoints, delivery metrics, and the position a client resumes
 * from however its stream ends.
 */
import type { EventEmitter } from 'node:events';
import type { HeraldError } from '../errors.ts';
import type { Event } from '../events/event.ts';

/** The transports, as they label metrics (`herald_subscribers{transport=…}`) and logs. */
export type TransportName = 'ws' | 'sse' | 'poll';

/** One client's stream, as the stream policy writes to it. */
export interface Transport {
  readonly name: TransportName;
  /**
   * Bytes written to the client and not yet sent (the socket's queue): the policy stops
   * writing past `maxClientQueueBytes` and waits for it to drain. 0 for a transport that
   * queues nothing (a poll answers once).
   */
  readonly queuedBytes: number;
  /** What underlies the stream: emits 'drain' when queued bytes leave and 'close' when the client is gone. */
  readonly socket: EventEmitter;
  /** How a client whose stream ended resumes, for messages (`reconnect with Last-Event-ID`). */
  readonly resumeHint: string;
  /**
   * Writes a batch of events in id order, in one write. Returns false when the transport can
   * no longer write (its connection is closing): the batch was not sent.
   */
  writeBatch(events: readonly Event[]): boolean;
  /** Tells the client that every matching event up to `position` has been written. */
  writeCheckpoint(position: number): void;
  /**
   * Ends the stream at `position` (every matching event up to it has been written), telling
   * the client why when `error` is given; without one the stream simply ends there (a poll's
   * answer). Called at most once per stream.
   */
  end(error: HeraldError | undefined, position: number): void;
  /** Drops the connection without a goodbye: a client that stopped reading would never take one. */
  terminate(): void;
}
