/**
 * The wire protocol: every route, query parameter, header and frame shape, parsed with zod.
 * Part of the public surface (DESIGN.md "Wire contract"); change with care.
 */
import { z } from 'zod';
import type { Config } from '../config.ts';
import { HeraldError } from '../errors.ts';
import type { Since } from '../events/subscription.ts';
import { TopicFilter } from '../events/topic.ts';

export const ROUTES = {
  head: '/v1/head',
  events: '/v1/events',
  stream: '/v1/events/stream',
  ws: '/v1/ws',
  healthz: '/healthz',
  readyz: '/readyz',
  metrics: '/metrics',
} as const;

/** Largest position accepted: ids are JS numbers (see db/pool.ts). */
export const MAX_POSITION = Number.MAX_SAFE_INTEGER;
const POSITION_RE = /^(0|[1-9][0-9]{0,15})$/;

/** Parses a position: a non-negative decimal integer, or `now` where allowed. */
export function parseSince(raw: unknown, field = 'since', allowNow = true): Since {
  if (raw === undefined || raw === '') return 'now';
  if (allowNow && raw === 'now') return 'now';
  if (typeof raw === 'number' && Number.isSafeInteger(raw) && raw >= 0) return raw;
  if (typeof raw === 'string' && POSITION_RE.test(raw) && Number(raw) <= MAX_POSITION) return Number(raw);
  throw new HeraldError(
    'HERALD_ERR_BAD_REQUEST',
    `${field} must be ${allowNow ? '"now" or ' : ''}an event id (an integer from 0 to ${MAX_POSITION}); got ${JSON.stringify(raw)?.slice(0, 40)}`,
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

const epochSchema = z.string().regex(/^[0-9a-f-]{36}$/, 'epoch must be a UUID');

function intIn(raw: string | undefined, field: string, min: number, max: number, dflt: number): number {
  if (raw === undefined) return dflt;
  const n = /^\d{1,10}$/.test(raw) ? Number(raw) : Number.NaN;
  if (!(n >= min && n <= max))
    throw new HeraldError('HERALD_ERR_BAD_REQUEST', `${field} must be an integer from ${min} to ${max}; got ${JSON.stringify(raw.slice(0, 40))}`);
  return n;
}

function epoch(raw: unknown): string | undefined {
  const s = single(raw, 'epoch');
  if (s === undefined) return undefined;
  const r = epochSchema.safeParse(s);
  if (!r.success) throw new HeraldError('HERALD_ERR_BAD_REQUEST', 'epoch must be the UUID returned by /v1/head');
  return s;
}

export interface StreamQuery {
  since: Since;
  filter: TopicFilter;
  epoch: string | undefined;
}

export interface PollQuery extends StreamQuery {
  limit: number;
  waitMs: number;
}

type Query = Record<string, unknown>;

export function parseStreamQuery(q: Query, config: Pick<Config, 'maxFilterEntries'>, lastEventId?: string | string[]): StreamQuery {
  // Last-Event-ID (set by EventSource on reconnect) wins over `since`.
  const resume = Array.isArray(lastEventId) ? lastEventId[0] : lastEventId;
  const since = resume !== undefined && resume !== '' ? parseSince(resume, 'Last-Event-ID', false) : parseSince(single(q.since, 'since'));
  return { since, filter: topics(q.topic, config.maxFilterEntries), epoch: epoch(q.epoch) };
}

export function parsePollQuery(q: Query, config: Config): PollQuery {
  const base = parseStreamQuery(q, config);
  const limit = intIn(single(q.limit, 'limit'), 'limit', 1, config.pollMaxLimit, config.pollDefaultLimit);
  const waitRaw = single(q.wait, 'wait');
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

/** Body of `POST /v1/events`: one event, or `{events:[…]}`. Topics are checked by EventLog. */
export const MAX_EVENTS_PER_POST = 1000;
const newEvent = z.object({ topic: z.string(), type: z.string(), data: z.unknown().optional() }).strict();
export const publishBody = z.union([z.object({ events: z.array(newEvent).min(1).max(MAX_EVENTS_PER_POST) }).strict(), newEvent]);

/** Messages a WebSocket client sends. */
export const wsClientMessage = z.discriminatedUnion('op', [
  z.object({
    op: z.literal('subscribe'),
    topics: z.array(z.string()).min(1),
    since: z.union([z.number(), z.string()]).optional(),
    epoch: z
      .string()
      .regex(/^[0-9a-f-]{36}$/, 'epoch must be the UUID returned by /v1/head')
      .optional(),
  }),
  z.object({ op: z.literal('unsubscribe'), topics: z.array(z.string()).min(1) }),
  z.object({ op: z.literal('ping') }),
]);
export type WsClientMessage = z.infer<typeof wsClientMessage>;

/** Messages the server sends (besides `event` frames, which Event.wsFrame builds once). */
export type WsServerMessage =
  | { op: 'subscribed'; epoch: string; head: number; since: number; topics: string[] }
  | { op: 'checkpoint'; id: number }
  | { op: 'pong' }
  | ({ op: 'error'; code: string; message: string } & Record<string, unknown>);

/** WebSocket close codes Herald uses (docs/errors.md). */
export const WS_CLOSE = {
  // Every Herald-initiated close carries `{"position":N,"message":…}` in its reason.
  /** Server shutting down. */
  GOING_AWAY: 1001,
  /** Policy: subscribe flood. */
  POLICY: 1008,
  /** A client message over wsMaxPayloadBytes (sent by ws itself). */
  TOO_BIG: 1009,
  /** Did not drain within slowConsumerTimeoutMs. */
  SLOW_CONSUMER: 4008,
} as const;
