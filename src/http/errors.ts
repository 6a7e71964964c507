/**
 * Maps anything thrown in a route to `{error:{code,message,retryable,…}}` with the error's status.
 * Never sends a stack trace; logs unexpected errors with their cause. Written against Node's
 * own request and response (Express's extend them), so a route served outside Express
 * (POST /v1/events, gateway/server.ts) answers its errors the same way.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Request, Response } from 'express';
import { HEADERS } from 'herald-client/protocol';
import { HeraldError, publicError } from '../errors.ts';
import type { Logger } from '../logger.ts';

/** body-parser errors carry `type`; translate them to our codes. */
function fromBodyParser(err: unknown, req: IncomingMessage): HeraldError | undefined {
  const type = (err as { type?: unknown } | null)?.type;
  // A body that does not decode as its Content-Encoding says (not brotli, a truncated gzip):
  // body-parser passes zlib's error on with status 400 and no type.
  const { code, errno } = (err ?? {}) as { code?: unknown; errno?: unknown };
  if (type === undefined && typeof errno === 'number' && typeof code === 'string' && /^(Z_|ERR__|ERR_BROTLI)/.test(code)) {
    const encoding = req.headers['content-encoding'] ?? '';
    return new HeraldError(
      'HERALD_ERR_BAD_REQUEST',
      `request body is not valid ${encoding} data (${code}): send it encoded as its Content-Encoding says, or without one`,
    );
  }
  if (type === 'entity.too.large')
    return new HeraldError('HERALD_ERR_PAYLOAD_TOO_LARGE', `request body is larger than the limit of ${(err as { limit?: number }).limit} bytes`);
  if (type === 'entity.parse.failed') return new HeraldError('HERALD_ERR_BAD_REQUEST', 'request body is not valid JSON');
  if (type === 'encoding.unsupported' || type === 'charset.unsupported')
    return new HeraldError('HERALD_ERR_UNSUPPORTED_MEDIA_TYPE', 'unsupported body encoding or charset');
  if (type === 'request.aborted' || type === 'request.size.invalid' || type === 'stream.encoding.set')
    return new HeraldError('HERALD_ERR_BAD_REQUEST', 'request body could not be read');
  return undefined;
}

/** The app's last handler: any error thrown in a route becomes its status and body. */
export function createErrorHandler(deps: { readonly logger: Pick<Logger, 'error' | 'debug'> }) {
  return (err: unknown, req: IncomingMessage, res: ServerResponse, _next: unknown) => {
    const e = fromBodyParser(err, req) ?? publicError(err);
    // Express mounts routers by rewriting req.url; originalUrl is what the client sent.
    const path = ((req as { originalUrl?: string }).originalUrl ?? req.url ?? '').split('?', 1)[0];
    if (e.code === 'HERALD_ERR_INTERNAL') deps.logger.error({ err, method: req.method, path }, 'request failed');
    else deps.logger.debug({ code: e.code, method: req.method, path }, e.message);
    if (res.headersSent) {
      res.end();
      return;
    }
    sendError(res, e);
  };
}

/**
 * Answers with `e`: its status and `{error:{code,message,retryable,…}}`, and on a 503 (always
 * retryable: a full cap, saturated reads, a database restart) a Retry-After saying when.
 */
export function sendError(res: ServerResponse, e: HeraldError): void {
  const body = JSON.stringify(e.toWire());
  if (e.httpStatus === 503) res.setHeader(HEADERS.retryAfter, String(retryAfterS(e)));
  res.statusCode = e.httpStatus;
  // What Express's res.json() sent.
  res.setHeader('content-type', 'application/json; charset=utf-8');
  res.setHeader('content-length', Buffer.byteLength(body));
  res.end(body);
}

/** Seconds a client should wait before retrying `e`: its `retryAfterS` detail, else 1. */
export function retryAfterS(e: HeraldError): number {
  const v = e.details.retryAfterS;
  return typeof v === 'number' && v > 0 ? v : 1;
}

/** The 404 for any path no route took. */
export function notFound(req: Request, _res: Response) {
  throw new HeraldError('HERALD_ERR_NOT_FOUND', `no route for ${req.method} ${req.path}`);
}
