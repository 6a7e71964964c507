/**
 * Maps anything thrown in a route to `{error:{code,message,…}}` with the error's status.
 * Never sends a stack trace; logs unexpected errors with their cause.
 */
import type { NextFunction, Request, Response } from 'express';
import type { HeraldContext } from '../context.ts';
import { HeraldError, publicError } from '../errors.ts';

/** body-parser errors carry `type`; translate them to our codes. */
function fromBodyParser(err: unknown, req: Request): HeraldError | undefined {
  const type = (err as { type?: unknown } | null)?.type;
  // A body that does not decode as its Content-Encoding says (not brotli, a truncated gzip):
  // body-parser passes zlib's error on with status 400 and no type.
  const { code, errno } = (err ?? {}) as { code?: unknown; errno?: unknown };
  if (type === undefined && typeof errno === 'number' && typeof code === 'string' && /^(Z_|ERR__|ERR_BROTLI)/.test(code)) {
    const encoding = req.get('content-encoding') ?? '';
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

export function createErrorHandler(ctx: HeraldContext) {
  return (err: unknown, req: Request, res: Response, _next: NextFunction) => {
    const e = fromBodyParser(err, req) ?? publicError(err);
    if (e.code === 'HERALD_ERR_INTERNAL') ctx.logger.error({ err, method: req.method, path: req.path }, 'request failed');
    else ctx.logger.debug({ code: e.code, method: req.method, path: req.path }, e.message);
    if (res.headersSent) {
      res.end();
      return;
    }
    // A 503 is always retryable (a full cap, saturated reads, a database restart): say when.
    if (e.httpStatus === 503) res.set('retry-after', String(retryAfterS(e)));
    res.status(e.httpStatus).json(e.toWire());
  };
}

/** Seconds a client should wait before retrying `e`: its `retryAfterS` detail, else 1. */
export function retryAfterS(e: HeraldError): number {
  const v = e.details.retryAfterS;
  return typeof v === 'number' && v > 0 ? v : 1;
}

export function notFound(req: Request, _res: Response) {
  throw new HeraldError('HERALD_ERR_NOT_FOUND', `no route for ${req.method} ${req.path}`);
}
