/**
 * Cross-origin access for browser apps served from another origin (HERALD_CORS_ORIGINS): the
 * CORS headers and preflight answers of the routes the gateway names, and the Origin check of
 * a WebSocket upgrade, which browsers send cross-origin without asking (no CORS applies to
 * WebSockets). With no origin configured nothing here adds a header or refuses a socket.
 *
 * Herald's credentials are bearer tokens (`Authorization` or `?token=`), never cookies, so
 * responses do not send `Access-Control-Allow-Credentials`: a page sends the token itself.
 */
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import { type NextFunction, type Request, type Response, Router } from 'express';
import { HEADERS } from 'herald-client/protocol';
import { HeraldError } from '../errors.ts';

/** The entry of HERALD_CORS_ORIGINS that allows every origin. */
const ANY_ORIGIN = '*';

/**
 * Request headers a cross-origin client may send: the token, a JSON body, EventSource's resume
 * header and publish's idempotency key. Listed by name: a `*` would not cover Authorization.
 */
const ALLOWED_HEADERS = 'Authorization, Content-Type, Last-Event-ID, Idempotency-Key';

/** Response headers a cross-origin script may read beyond the safelisted ones: when to retry a 503. */
const EXPOSED_HEADERS = HEADERS.retryAfter;

/**
 * How long a browser may reuse a preflight answer, in seconds. 2 h is Chromium's cap (Firefox
 * allows 24 h). Removing an origin takes effect at once anyway: the answers themselves stop
 * carrying Access-Control-Allow-Origin.
 */
const PREFLIGHT_MAX_AGE_S = 7200;

/** True if `origin` (an `Origin` header) is one of `origins` (normalized by config.ts) or they hold `*`. */
function allows(origins: readonly string[], origin: string): boolean {
  return origins.includes(ANY_ORIGIN) || origins.includes(origin);
}

/**
 * The CORS headers of one answer (not a preflight) on a route CORS covers: `Vary: Origin`
 * whenever `origins` is set, and for an allowed origin that origin echoed in
 * Access-Control-Allow-Origin (set before the answer, so errors carry it too and a page can
 * read them) and Retry-After exposed. On Node's own request and response, so a route served
 * before the Express app (the publish fast path) sets them too. A request from an origin not
 * listed is served without them: browsers then keep the answer from the page, so refusing it
 * here would change nothing for them.
 */
export function setCorsHeaders(origins: readonly string[], req: IncomingMessage, res: ServerResponse): void {
  if (origins.length === 0) return;
  // Every answer here depends on Origin: caches must not hand one origin's to another. Set
  // first, before any route could add to Vary.
  res.setHeader('vary', 'Origin');
  const origin = req.headers.origin;
  if (origin !== undefined && allows(origins, origin)) {
    res.setHeader('access-control-allow-origin', origin);
    res.setHeader('access-control-expose-headers', EXPOSED_HEADERS);
  }
}

/**
 * CORS for `routes` (path → the methods it serves) when `origins` is not empty; a router that
 * does nothing otherwise. Mounted before the routes: a preflight (`OPTIONS` with
 * `Access-Control-Request-Method`) from an allowed origin is answered 204 with the methods,
 * headers and max-age, from another origin 403 `forbidden`; any other request gets
 * setCorsHeaders().
 */
export function createCors(origins: readonly string[], routes: Readonly<Record<string, readonly string[]>>): Router {
  const router = Router();
  if (origins.length === 0) return router;
  for (const [path, methods] of Object.entries(routes)) {
    const allowMethods = methods.join(', ');
    // `all` matches the path as the routes do (case, trailing slash), and nothing below it.
    router.all(path, (req: Request, res: Response, next: NextFunction) => {
      setCorsHeaders(origins, req, res);
      const origin = req.headers.origin;
      if (origin === undefined || req.method !== 'OPTIONS' || req.headers['access-control-request-method'] === undefined) return next();
      if (!allows(origins, origin)) throw new HeraldError('HERALD_ERR_FORBIDDEN', `origin ${origin} may not call ${req.path}: add it to HERALD_CORS_ORIGINS`);
      // Exposing headers means something only on the answer itself.
      res.removeHeader('access-control-expose-headers');
      res.set({
        'access-control-allow-methods': allowMethods,
        'access-control-allow-headers': ALLOWED_HEADERS,
        'access-control-max-age': String(PREFLIGHT_MAX_AGE_S),
      });
      res.status(204).end();
    });
  }
  return router;
}

/**
 * Throws 403 `forbidden` for a WebSocket upgrade from a browser origin that `origins` does not
 * list, to be called before the upgrade. Allowed: any origin when `origins` is empty (the
 * behaviour before the setting existed: tokens are never cookies, so a foreign page gets
 * nothing it could not fetch itself), a request without `Origin` (not a browser), and a page
 * of Herald's own origin (its `Origin` names the host the request was sent to: the job pages).
 */
export function checkWebSocketOrigin(origins: readonly string[], headers: Pick<IncomingHttpHeaders, 'origin' | 'host'>): void {
  const { origin, host } = headers;
  if (origins.length === 0 || origin === undefined || allows(origins, origin)) return;
  // The scheme is left out: behind a TLS-terminating proxy the page is https, this hop http.
  if (host !== undefined && URL.canParse(origin) && new URL(origin).host === host.toLowerCase()) return;
  throw new HeraldError('HERALD_ERR_FORBIDDEN', `WebSocket connections from origin ${origin} are not allowed: add it to HERALD_CORS_ORIGINS`);
}
