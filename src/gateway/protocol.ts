/**
 * The server half of the wire protocol: what clients send, checked. The names and shapes
 * themselves (routes, parameters, headers, messages, error codes) are defined once in the
 * wire module, herald-client/protocol, which the client shares; here they are parsed, with
 * zod where a shape is involved, into the types the transports use. Part of the public
 * surface (docs/protocol.md); change with care.
 */
import { MAX_POSITION, QUERY, SINCE_NOW, WS_CLIENT_OPS, type WsClientMessage } from 'herald-client/protocol';
import { z } from 'zod';
import type { Config } from '../config.ts';
import { formatZodIssue, HeraldError } from '../errors.ts';
import type { Since } from '../events/subscription.ts';
import { TopicFilter } from '../events/topic.ts';

const POSITION_RE = /^(0|[1-9][0-9]{0,15})$/;

/** Parses a position: a non-negative decimal integer, or `now` where allowed. */
export function parseSince(raw: unknown, field: string = QUERY.since, allowNow = true): Since {
  if (raw === undefined || raw === '') return 'now';
  if (allowNow && raw === SINCE_NOW) return 'now';
  if (typeof raw === 'number' && Number.isSafeInteger(raw) && raw >= 0) return raw;
  if (typeof raw === 'string' && POSITION_RE.test(raw) && Number(raw) <= MAX_POSITION) return Number(raw);
  throw new HeraldError(
    'HERALD_ERR_BAD_REQUEST',
    `${field} must be ${allowNow ? `"${SINCE_NOW}" or ` : ''}an event id (an integer from 0 to ${MAX_POSITION}); got ${JSON.stringify(raw)?.slice(0, 40)}`,
  );
}

function single(raw: unknown, field: string): string | undefined {
  if (raw === undefined) return undefined;
  if (typeof raw === 'string') return raw;
  throw new HeraldError('HERALD_ERR_BAD_REQUEST', `${field} must be given once`);
}

/**
 * A client's filter entries as a TopicFilter, on every transport (`topic` parameters, a
 * WebSocket `subscribe`'s `topics`): at most `maxEntries` (HERALD_MAX_FILTER_ENTRIES),
 * counted as sent, before any is parsed. Each entry costs a catch-up read index probes
 * (events/log.ts): 1,000 patterns once cost 53 s of PostgreSQL CPU (issue 12).
 */
export function parseFilter(entries: readonly string[], maxEntries: number): TopicFilter {
  if (entries.length > maxEntries) {
    throw new HeraldError(
      'HERALD_ERR_BAD_REQUEST',
      `too many topic filter entries (${entries.length}): at most ${maxEntries} (HERALD_MAX_FILTER_ENTRIES) per request or subscribe; use a pattern such as \`job:*\` or split the filter`,
      { maxFilterEntries: maxEntries },
    );
  }
  return TopicFilter.parse(entries);
}

function topics(raw: unknown, maxEntries: number): TopicFilter {
  if (raw === undefined) return TopicFilter.ALL;
  const list = Array.isArray(raw) ? raw : [raw];
  if (list.some((t) => typeof t !== 'string')) throw new HeraldError('HERALD_ERR_BAD_REQUEST', 'topic must be a string');
  return parseFilter(list as string[], maxEntries);
}

const EPOCH_MESSAGE = 'epoch must be the UUID returned by /v1/head';
const epochSchema = z.string().regex(/^[0-9a-f-]{36}$/, EPOCH_MESSAGE);

function intIn(raw: string | undefined, field: string, min: number, max: number, dflt: number): number {
  if (raw === undefined) return dflt;
  const n = /^\d{1,10}$/.test(raw) ? Number(raw) : Number.NaN;
  if (!(n >= min && n <= max))
    throw new HeraldError('HERALD_ERR_BAD_REQUEST', `${field} must be an integer from ${min} to ${max}; got ${JSON.stringify(raw.slice(0, 40))}`);
  return n;
}

function epoch(raw: unknown): string | undefined {
  const s = single(raw, QUERY.epoch);
  if (s === undefined) return undefined;
  const r = epochSchema.safeParse(s);
  if (!r.success) throw new HeraldError('HERALD_ERR_BAD_REQUEST', EPOCH_MESSAGE);
  return s;
}

/** The query of an SSE stream (and the common part of a poll's): where to start, what to read, which log. */
export interface StreamQuery {
  since: Since;
  filter: TopicFilter;
  epoch: string | undefined;
}

/** A poll's query: a stream query plus the most events to return and how long to wait for one. */
export interface PollQuery extends StreamQuery {
  limit: number;
  waitMs: number;
}

type Query = Record<string, unknown>;

/** Parses an SSE query (`since`, `topic`, `epoch`), with `Last-Event-ID` (set by EventSource on reconnect) winning over `since`. */
export function parseStreamQuery(q: Query, config: Pick<Config, 'maxFilterEntries'>, lastEventId?: string | string[]): StreamQuery {
  const resume = Array.isArray(lastEventId) ? lastEventId[0] : lastEventId;
  const since = resume !== undefined && resume !== '' ? parseSince(resume, 'Last-Event-ID', false) : parseSince(single(q[QUERY.since], QUERY.since));
  return { since, filter: topics(q[QUERY.topic], config.maxFilterEntries), epoch: epoch(q[QUERY.epoch]) };
}

/** Parses a poll's query: the stream query, then `limit` and `wait` (checked in that order). */
export function parsePollQuery(q: Query, config: Pick<Config, 'maxFilterEntries' | 'pollMaxLimit' | 'pollDefaultLimit' | 'pollMaxWaitS'>): PollQuery {
  const base = parseStreamQuery(q, config);
  const limit = intIn(single(q[QUERY.limit], QUERY.limit), QUERY.limit, 1, config.pollMaxLimit, config.pollDefaultLimit);
  const waitRaw = single(q[QUERY.wait], QUERY.wait);
  let waitMs = 0;
  if (waitRaw !== undefined) {
    const s = /^\d{1,6}(\.\d{1,3})?$/.test(waitRaw) ? Number(waitRaw) : Number.NaN;
    if (!(s >= 0 && s <= config.pollMaxWaitS)) {
      throw new HeraldError(
        'HERALD_ERR_BAD_REQUEST',
        `wait must be a number of seconds from 0 to ${config.pollMaxWaitS}; got ${JSON.stringify(waitRaw.slice(0, 40))}`,
      );
    }
    waitMs = Math.round(s * 1000);
  }
  return { ...base, limit, waitMs };
}

/** Most events in one `POST /v1/events`. */
export const MAX_EVENTS_PER_POST = 1000;
const newEvent = z.object({ topic: z.string(), type: z.string(), data: z.unknown().optional() }).strict();
/** Body of `POST /v1/events`: one event, or `{events:[…]}`. Topics are checked by EventLog. */
export const publishBody = z.union([z.object({ events: z.array(newEvent).min(1).max(MAX_EVENTS_PER_POST) }).strict(), newEvent]);

/** Messages a WebSocket client sends, as the wire module types them. */
export const wsClientMessage: z.ZodType<WsClientMessage> = z.discriminatedUnion('op', [
  z.object({
    op: z.literal('subscribe'),
    topics: z.array(z.string()).min(1),
    since: z.union([z.number(), z.string()]).optional(),
    epoch: epochSchema.optional(),
  }),
  z.object({ op: z.literal('unsubscribe'), topics: z.array(z.string()).min(1) }),
  z.object({ op: z.literal('ping') }),
  z.object({ op: z.literal('auth'), token: z.string().min(1) }),
]);

/**
 * A WebSocket message from a client: parsed and checked against `wsClientMessage`, or a
 * bad_request that names the op and the field (or, for an unknown op, the ones there are).
 */
export function parseWsClientMessage(raw: unknown): WsClientMessage {
  const parsed = wsClientMessage.safeParse(raw);
  if (parsed.success) return parsed.data;
  const op = (raw as { op?: unknown } | null)?.op;
  const known = (WS_CLIENT_OPS as readonly unknown[]).includes(op);
  throw new HeraldError(
    'HERALD_ERR_BAD_REQUEST',
    known
      ? `bad ${String(op)} message: ${formatZodIssue(parsed.error, 'message')}`
      : `unknown op ${JSON.stringify(op)?.slice(0, 40)}: use ${WS_CLIENT_OPS.slice(0, -1).join(', ')} or ${WS_CLIENT_OPS.at(-1)}`,
  );
}
