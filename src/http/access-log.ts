/**
 * The access log: one line per HTTP request (pino-http) with method, path, status and
 * duration, written when the response ends (for SSE and long-polls, when the stream ends).
 * Probes (`/healthz`, `/readyz`, `/metrics`) log at debug so a scraper every few seconds does
 * not bury the requests people look for. Headers are never logged, so `Authorization` cannot
 * leak; secrets in the query (`?token=` for EventSource, which cannot set headers) are
 * replaced with `[redacted]`. WebSocket upgrades do not pass through the app and are not here.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { pinoHttp } from 'pino-http';
import { ROUTES } from '../gateway/protocol.ts';
import type { Logger } from '../logger.ts';

const PROBES: ReadonlySet<string> = new Set([ROUTES.healthz, ROUTES.readyz, ROUTES.metrics]);

// `token` is the protocol's read token; the rest are names that other clients, proxies and
// signed URLs use for credentials. Matched on the decoded name, case-insensitively.
const SECRET_PARAM = /token|secret|passw|pwd|signature|credential|^sig$|^key$|api[-_]?key|^auth(orization)?$/i;

/** `url` with the value of every secret-bearing query parameter replaced; the rest is kept byte for byte. */
export function redactUrl(url: string): string {
  const q = url.indexOf('?');
  if (q < 0) return url;
  const params = url
    .slice(q + 1)
    .split('&')
    .map((part) => {
      const eq = part.indexOf('=');
      if (eq < 0) return part;
      const raw = part.slice(0, eq);
      let name = raw;
      try {
        name = decodeURIComponent(raw.replace(/\+/g, ' '));
      } catch {
        // A malformed escape: match on the raw name.
      }
      return SECRET_PARAM.test(name) ? `${raw}=[redacted]` : part;
    });
  return `${url.slice(0, q)}?${params.join('&')}`;
}

/** Express mounts routers by rewriting req.url; originalUrl is what the client sent. */
const requestUrl = (req: IncomingMessage) => (req as IncomingMessage & { originalUrl?: string }).originalUrl ?? req.url ?? '';
const pathOf = (req: IncomingMessage) => requestUrl(req).split('?', 1)[0]!;

/** The access-log middleware, logging through `logger`. */
export function createAccessLog(logger: Logger) {
  const fields = (req: IncomingMessage, res: ServerResponse, durationMs: number) => ({
    method: req.method,
    path: redactUrl(requestUrl(req)),
    status: res.statusCode,
    durationMs,
  });
  return pinoHttp({
    logger,
    // Only the fields above: no request or response objects, so no headers.
    quietReqLogger: true,
    quietResLogger: true,
    wrapSerializers: false,
    customLogLevel: (req) => (PROBES.has(pathOf(req)) ? 'debug' : 'info'),
    customSuccessObject: (req, res, val: { responseTime: number }) => fields(req, res, val.responseTime),
    customSuccessMessage: () => 'request',
    // 5xx answers and aborted responses take this path; the error handler has logged the cause.
    customErrorObject: (req, res, _err, val: { responseTime: number }) => fields(req, res, val.responseTime),
    customErrorMessage: () => 'request',
  });
}
