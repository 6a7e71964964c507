/**
 * `POST /v1/events`: the Publisher for producers that do not talk to Postgres. Needs a
 * publisher token; appends in one transaction and answers `201 {ids}` once committed.
 */
import express, { type NextFunction, type Request, type RequestHandler, type Response } from 'express';
import type { HeraldContext } from '../context.ts';
import { HeraldError } from '../errors.ts';
import { requireToken, TokenSet } from '../http/auth.ts';
import { publishBody } from './protocol.ts';

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
  const body = express.json({ limit: ctx.config.maxBodyBytes, strict: false });
  const handle = async (req: Request, res: Response) => {
    const parsed = publishBody.safeParse(req.body);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new HeraldError(
        'HERALD_ERR_BAD_REQUEST',
        `body must be {topic, type, data} or {events: [{topic, type, data}, …]}: ${issue?.path.join('.') || 'body'}: ${issue?.message ?? 'invalid'}`,
      );
    }
    const events = 'events' in parsed.data ? parsed.data.events : [parsed.data];
    for (const e of events) {
      const size = e.data === undefined ? 0 : Buffer.byteLength(JSON.stringify(e.data));
      if (size > ctx.config.maxEventDataBytes) {
        throw new HeraldError('HERALD_ERR_PAYLOAD_TOO_LARGE', `an event's data is ${size} bytes; the limit is ${ctx.config.maxEventDataBytes}`);
      }
    }
    const ids = await ctx.log.emitMany(events);
    ctx.metrics.eventsAppended.inc(ids.length);
    res.status(201).json({ ids });
  };
  return [gate, body, handle];
}
