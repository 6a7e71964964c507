/**
 * The access log: one line per HTTP request with method, path, status and duration, written
 * when the response ends (for SSE and long-polls, when the stream ends). Written here rather
 * than with pino-http, which built two child loggers per request, one bound to the whole
 * IncomingMessage, which pino serialized at once through the redaction paths whether or not
 * the line was ever written: a quarter of Herald's CPU per publish (BENCHMARKS.md, Group
 * append).
 * Probes (`/healthz`, `/readyz`, `/metrics`: the paths the gateway names) log at debug so a scraper every few seconds does
 * not bury the requests people look for. Headers are never logged, so `Authorization` cannot
 * leak; secrets in the query (`?token=` for EventSource, which cannot set headers) are
 * replaced with `[redacted]`. WebSocket upgrades do not pass through the app and are not here.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from '../logger.ts';

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

/** Request ids in the log lines: 1, 2, 3, … per process, wrapping at 2^31 as pino-http's did. */
const REQ_ID_MAX = 0x7fffffff;
// One sequence for the process, whichever access log (the app's, or a route served outside
// it) a request passes through.
let lastReqId = 0;

/** The access-log middleware, logging through `logger`; requests for `quietPaths` (the probes) log at debug. */
export function createAccessLog(logger: Logger, quietPaths: readonly string[] = []) {
  const quiet: ReadonlySet<string> = new Set(quietPaths);
  return (req: IncomingMessage, res: ServerResponse, next: () => void) => {
    const level = quiet.has(pathOf(req)) ? 'debug' : 'info';
    lastReqId = (lastReqId + 1) & REQ_ID_MAX;
    if (!logger.isLevelEnabled(level)) return next();
    const reqId = lastReqId;
    const start = Date.now();
    // Once, when the answer is complete (finish) or the connection went first (close). Only
    // these fields: no request or response objects, so no headers.
    const done = () => {
      res.off('finish', done);
      res.off('close', done);
      logger[level]({ reqId, method: req.method, path: redactUrl(requestUrl(req)), status: res.statusCode, durationMs: Date.now() - start }, 'request');
    };
    res.on('finish', done);
    res.on('close', done);
    next();
  };
}
