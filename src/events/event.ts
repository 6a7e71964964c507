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

export class Event {
  readonly id: number;
  readonly topic: string;
  readonly type: string;
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

  toJSON(): EventJson {
    return { id: this.id, topic: this.topic, type: this.type, data: this.data, at: this.at };
  }
}

const batchBytesCache = new WeakMap<readonly Event[], number>();
let lastBatch: readonly Event[] | null = null;
let lastBatchBytes = 0;

/**
 * Sum of `bytes` over a batch. The Hub hands one shared array to many subscribers, so the
 * sum is kept per array and computed once, not once per subscriber.
 */
export function batchBytes(events: readonly Event[]): number {
  // The Hub hands one array to all its members in a row: the last one answers most calls.
  if (events === lastBatch) return lastBatchBytes;
  let n = batchBytesCache.get(events);
  if (n === undefined) {
    n = 0;
    for (const e of events) n += e.bytes;
    batchBytesCache.set(events, n);
  }
  lastBatch = events;
  lastBatchBytes = n;
  return n;
}
