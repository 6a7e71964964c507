/**
 * `POST /v1/events`: the Publisher for producers that do not talk to Postgres. Needs a
 * publisher token; appends in one transaction and answers `201 {ids}` once committed.
 * Each event's `data` reaches PostgreSQL as the JSON text the producer sent, so jsonb reads
 * the numbers itself and keeps every digit, as `herald.emit()` does. Parsed and serialized
 * again in JavaScript, 12345678901234567890 became 12345678901234567000 and 1e400 null.
 */
import express, { type NextFunction, type Request, type RequestHandler, type Response } from 'express';
import type { HeraldContext } from '../context.ts';
import { HeraldError } from '../errors.ts';
import type { NewEventJson } from '../events/log.ts';
import { requireToken, TokenSet } from '../http/auth.ts';
import { bodyText, JSON_MAX_DEPTH, type JsonSpan, parseJson } from './json-input.ts';
import { publishBody } from './protocol.ts';

// Levels of the body around an event's `data`: `{"events":[{"data":…}]}`.
const ENVELOPE_LEVELS = 3;

/**
 * Checks a publish body (json-input.ts, then its shape, then each `data` against
 * JSON_MAX_DEPTH and `maxDataBytes`, then all of them against `maxTotalBytes`) and cuts each
 * event's `data` out of it as sent.
 */
export function readPublishBody(text: string, { maxDataBytes, maxTotalBytes }: { maxDataBytes: number; maxTotalBytes: number }): NewEventJson[] {
  // Where each `data` lies. The last `data` key and the last `events` key win, as they do
  // in what JSON.parse returns.
  let single: JsonSpan | undefined;
  let batch: (JsonSpan | undefined)[] = [];
  let current: (JsonSpan | undefined)[] = [];
  const raw = parseJson(text, {
    what: 'body',
    maxDepth: JSON_MAX_DEPTH + ENVELOPE_LEVELS,
    visitDepth: ENVELOPE_LEVELS,
    visit: (path, span) => {
      if (path.length === 3 && path[0] === 'events' && path[2] === 'data') current[path[1] as number] = span;
      else if (path.length === 1 && path[0] === 'events') {
        batch = current;
        current = [];
      } else if (path.length === 1 && path[0] === 'data') single = span;
    },
  });
  const parsed = publishBody.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new HeraldError(
      'HERALD_ERR_BAD_REQUEST',
      `body must be {topic, type, data} or {events: [{topic, type, data}, …]}: ${issue?.path.join('.') || 'body'}: ${issue?.message ?? 'invalid'}`,
    );
  }
  const isBatch = 'events' in parsed.data;
  const events = 'events' in parsed.data ? parsed.data.events : [parsed.data];
  let totalBytes = 0;
  const out = events.map((e, i) => {
    const span = isBatch ? batch[i] : single;
    const field = isBatch ? `events[${i}].data` : 'data';
    if (span && span.levels > JSON_MAX_DEPTH) {
      throw new HeraldError(
        'HERALD_ERR_BAD_REQUEST',
        `${field} nests ${span.levels} levels of arrays and objects; at most ${JSON_MAX_DEPTH} are allowed: flatten it`,
      );
    }
    if (span && span.bytes > maxDataBytes) {
      throw new HeraldError('HERALD_ERR_PAYLOAD_TOO_LARGE', `${field} is ${span.bytes} bytes; the limit is ${maxDataBytes}`);
    }
    totalBytes += span?.bytes ?? 0;
    return { topic: e.topic, type: e.type, dataJson: span ? text.slice(span.start, span.end) : 'null' };
  });
  // Numbers are stored written out, so a small body can hold far more: `1e131071` is 8 bytes
  // sent and 131,072 read back, by every reader of the event.
  if (totalBytes > maxTotalBytes) {
    throw new HeraldError('HERALD_ERR_PAYLOAD_TOO_LARGE', `the events' data is ${totalBytes} bytes with numbers written out; the limit is ${maxTotalBytes}`);
  }
  return out;
}

/** The route's handlers: token and media type are checked before the body is read. */
export function createPublishHandlers(ctx: HeraldContext): RequestHandler[] {
  const tokens = new TokenSet(ctx.config.publishTokens);
  const gate = (req: Request, _res: Response, next: NextFunction) => {
    if (tokens.size === 0) {
      throw new HeraldError('HERALD_ERR_FORBIDDEN', 'publishing over HTTP is disabled: set HERALD_PUBLISH_TOKENS to enable it');
    }
    requireToken(tokens, req.headers.authorization, 'POST /v1/events');
    if (!req.is('application/json')) {
      throw new HeraldError('HERALD_ERR_UNSUPPORTED_MEDIA_TYPE', 'send the body as application/json');
    }
    next();
  };
  // Raw bytes (inflated per Content-Encoding), not express.json: the text is what gets stored.
  const body = express.raw({ type: () => true, limit: ctx.config.maxBodyBytes });
  const handle = async (req: Request, res: Response) => {
    const events = readPublishBody(bodyText(req), { maxDataBytes: ctx.config.maxEventDataBytes, maxTotalBytes: ctx.config.maxBodyBytes });
    const ids = await ctx.log.emitManyJson(events);
    ctx.metrics.eventsAppended.inc(ids.length);
    res.status(201).json({ ids });
  };
  return [gate, body, handle];
}
