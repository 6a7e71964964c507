/**
 * `POST /v1/events`: the Publisher for producers that do not talk to Postgres. Needs a
 * publisher token or a JWT, and writes only within its grant and never into Herald's
 * reserved namespaces (access.ts, authorizePublish); appends in one transaction, shared with
 * the other appends that arrive meanwhile (the group append, events/appender.ts), and
 * answers `201 {ids}` once committed; `503 unavailable` with Retry-After when too many
 * appends already wait.
 * Each event's `data` reaches PostgreSQL as the JSON text the producer sent, so jsonb reads
 * the numbers itself and keeps every digit, as `herald.emit()` does. Parsed and serialized
 * again in JavaScript, 12345678901234567890 became 12345678901234567000 and 1e400 null.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import express, { type Request, type Response } from 'express';
import type { Config } from '../config.ts';
import { formatZodIssue, HeraldError } from '../errors.ts';
import type { Appender } from '../events/appender.ts';
import type { NewEventJson } from '../events/log.ts';
import type { Metrics } from '../http/metrics.ts';
import { bodyText, JSON_MAX_DEPTH, type JsonSpan, parseJson } from '../http/json-input.ts';
import type { Subject, TopicAccess } from './access.ts';
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
    throw new HeraldError(
      'HERALD_ERR_BAD_REQUEST',
      `body must be {topic, type, data} or {events: [{topic, type, data}, …]}: ${formatZodIssue(parsed.error, 'body')}`,
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

/** What the publish route needs: its settings, the group append, and the counter of appended events. */
export interface PublishDeps {
  readonly config: Pick<Config, 'maxBodyBytes' | 'maxEventDataBytes'>;
  /** Who publishes (a publish token or a JWT), and where it may. */
  readonly access: Pick<TopicAccess, 'authenticatePublisher' | 'authorizePublish'>;
  readonly appender: Pick<Appender, 'emitManyJson'>;
  readonly metrics: Pick<Metrics, 'eventsAppended'>;
}

/** A request handler on Node's own request and response; errors go to `fail`. */
export type PublishHandler = (req: IncomingMessage, res: ServerResponse, fail: (err: unknown) => void) => void;

// The media type `req.is('application/json')` accepted (parameters such as charset follow
// a `;` and are read by bodyText), and its answer for a request without a body: not JSON.
const JSON_MEDIA_TYPE = /^\s*application\/json\s*(?:;|$)/i;
const hasBody = (req: IncomingMessage) => req.headers['transfer-encoding'] !== undefined || !Number.isNaN(Number(req.headers['content-length']));

/**
 * The route, on Node's own request and response rather than as Express handlers: Express's
 * routing cost about 0.13 ms of CPU per request, more than the rest of a publish together,
 * so gateway/server.ts serves this route before the app, with the app's access log, body
 * deadline and error mapping (BENCHMARKS.md, Group append). Token and media type are
 * checked before the body is read.
 */
export function createPublishHandler(deps: PublishDeps): PublishHandler {
  // Raw bytes (inflated per Content-Encoding), not express.json: the text is what gets
  // stored. body-parser reads only Node's own fields of the request.
  const readBody = express.raw({ type: () => true, limit: deps.config.maxBodyBytes });
  const limits = { maxDataBytes: deps.config.maxEventDataBytes, maxTotalBytes: deps.config.maxBodyBytes };
  return (req, res, fail) => {
    let publisher: Subject | Promise<Subject>;
    try {
      publisher = deps.access.authenticatePublisher(req.headers.authorization, 'POST /v1/events');
    } catch (err) {
      return fail(err);
    }
    if (!hasBody(req) || !JSON_MEDIA_TYPE.test(req.headers['content-type'] ?? '')) {
      // A JWT still being verified is answered already: its outcome no longer matters.
      if (publisher instanceof Promise) publisher.catch(() => undefined);
      return fail(new HeraldError('HERALD_ERR_UNSUPPORTED_MEDIA_TYPE', 'send the body as application/json'));
    }
    // A JWT is verified before its body is read, like a publish token.
    if (publisher instanceof Promise) publisher.then((subject) => publishAs(subject, req, res, fail), fail);
    else publishAs(publisher, req, res, fail);
  };

  function publishAs(subject: Subject, req: IncomingMessage, res: ServerResponse, fail: (err: unknown) => void): void {
    readBody(req as Request, res as Response, (err?: unknown) => {
      if (err) return fail(err);
      let events: NewEventJson[];
      try {
        events = readPublishBody(bodyText(req), limits);
        deps.access.authorizePublish(
          subject,
          events.map((e) => e.topic),
        );
      } catch (e) {
        return fail(e);
      }
      deps.appender
        .emitManyJson(events)
        .then((ids) => {
          deps.metrics.eventsAppended.inc(ids.length);
          const body = JSON.stringify({ ids });
          res.writeHead(201, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body) }).end(body);
        })
        .catch(fail);
    });
  }
}
