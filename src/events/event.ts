/**
 * An Event as read from the log. It is built once by the Listener (or a catch-up read) and
 * shared by every recipient: its JSON body and its WebSocket frame are produced once and
 * the same bytes are written to every client.
 */

/** The wire shape of an event (`GET /v1/events` items, SSE data). */
export interface EventJson {
  id: number;
  topic: string;
  type: string;
  data: unknown;
  at: string;
}

/** A row of herald.events with `data` still as JSON text (never parsed on the fan-out path). */
export interface EventRow {
  id: number;
  topic: string;
  type: string;
  data: string;
  at: Date | string;
}

/** One event of the log, immutable, with its wire encodings computed once and shared. */
export class Event {
  readonly id: number;
  readonly topic: string;
  readonly type: string;
  /** Commit time as ISO 8601 UTC with milliseconds (`2026-12-02T10:00:00.000Z`). */
  readonly at: string;
  /** `data` as JSON text, exactly as Postgres rendered it. */
  readonly dataJson: string;
  /** `{"id":…,"topic":…,"type":…,"data":…,"at":…}`: the body every transport sends. */
  readonly body: string;
  /** UTF-8 size of `body`: what this event costs in a subscriber's buffer. */
  readonly bytes: number;
  private parsedData: unknown;
  private wsFrameBytes: Buffer | undefined;
  private atMsValue: number | undefined;

  constructor(row: EventRow) {
    this.id = row.id;
    this.topic = row.topic;
    this.type = row.type;
    this.at = row.at instanceof Date ? row.at.toISOString() : row.at;
    this.dataJson = row.data;
    // Concatenation instead of JSON.stringify of a parsed object: `data` is already JSON
    // text from Postgres, so it is never parsed or re-encoded on the way out.
    this.body = `{"id":${this.id},"topic":${JSON.stringify(this.topic)},"type":${JSON.stringify(this.type)},"data":${this.dataJson},"at":"${this.at}"}`;
    this.bytes = Buffer.byteLength(this.body);
  }

  /** Commit time in epoch milliseconds (for lag metrics), parsed at most once. */
  get atMs(): number {
    if (this.atMsValue === undefined) this.atMsValue = Date.parse(this.at);
    return this.atMsValue;
  }

  /** Parsed `data`, for internal consumers (job workers, exporter); parsed at most once. */
  get data(): unknown {
    if (this.parsedData === undefined) this.parsedData = JSON.parse(this.dataJson);
    return this.parsedData;
  }

  /** `{"op":"event",…}` for WebSocket clients, encoded once and shared. */
  get wsFrame(): Buffer {
    if (this.wsFrameBytes === undefined) this.wsFrameBytes = Buffer.from(`{"op":"event",${this.body.slice(1)}`);
    return this.wsFrameBytes;
  }

  /** The wire shape, with `data` parsed (for JSON.stringify of a containing object). */
  toJSON(): EventJson {
    return { id: this.id, topic: this.topic, type: this.type, data: this.data, at: this.at };
  }
}

/**
 * Memoizes `compute` per batch array. The Hub hands one array, never modified, to every
 * subscriber of a topic, so whatever is derived from a batch (its byte size, its WebSocket
 * frames, its SSE text) is computed once, not once per subscriber. Recipients of a batch
 * are served one after another, so the last array answers most calls before the WeakMap
 * (which keeps each result only as long as its array lives) is asked.
 */
export function perBatch<T>(compute: (events: readonly Event[]) => T): (events: readonly Event[]) => T {
  const cache = new WeakMap<readonly Event[], T>();
  let lastEvents: readonly Event[] | null = null;
  let lastValue: T;
  return (events) => {
    if (events === lastEvents) return lastValue;
    let value = cache.get(events);
    if (value === undefined) cache.set(events, (value = compute(events)));
    lastEvents = events;
    lastValue = value;
    return value;
  };
}

/** Sum of `bytes` over a batch: what it costs in a subscriber's buffer. */
export const batchBytes = perBatch((events) => {
  let n = 0;
  for (const e of events) n += e.bytes;
  return n;
});
