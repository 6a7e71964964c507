/**
 * HTTP plumbing of one Herald process: an Express app with the access log, the body
 * deadline, the routes it is given, the 404 and the error mapping. It knows no route of its
 * own: the gateway (src/gateway/server.ts) hands it its routes and its plug-ins' routers.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import express, { type Router } from 'express';
import { HeraldError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import { createAccessLog } from './access-log.ts';
import { createErrorHandler, notFound, sendError } from './errors.ts';

/** What the app is built from. */
export interface AppOptions {
  readonly logger: Logger;
  /** Every request body must arrive within this (bodyDeadline). */
  readonly bodyTimeoutMs: number;
  /** Paths whose requests the access log writes at debug (health probes, scrapes). */
  readonly quietPaths?: readonly string[];
  /** Mounted at the root in this order, between the body deadline and the 404. */
  readonly routes: readonly Router[];
}

/** Builds the Express app: access log, body deadline, `routes` in order, then 404 and the error mapping. */
export function createApp({ logger, bodyTimeoutMs, quietPaths, routes }: AppOptions): express.Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  // Repeated `topic=` must arrive as an array; `a[b]=` must not build objects.
  app.set('query parser', 'simple');
  app.use(createAccessLog(logger, quietPaths));
  app.use(bodyDeadline(bodyTimeoutMs));
  for (const router of routes) app.use(router);
  app.use(notFound);
  app.use(createErrorHandler({ logger }));
  return app;
}

/**
 * Every request body must arrive within `timeoutMs`, whatever route reads it (or refuses it
 * unread: Node still reads the rest of the body off a kept-alive socket). Past it the client
 * gets 408 if no answer has started, and the connection is closed. Node's requestTimeout
 * cannot do this: it covers the whole request, long-polls included (issue 12: 1,000
 * anonymous POSTs trickling a byte every 10 s were all still open after 150 s).
 */
export function bodyDeadline(timeoutMs: number) {
  // Node's own request and response: POST /v1/events is served outside Express (gateway/server.ts).
  return (req: IncomingMessage, res: ServerResponse, next: () => void) => {
    const length = req.headers['content-length'];
    const hasBody = req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
    if (!hasBody || req.complete) return next();
    const timer = setTimeout(() => {
      if (req.complete) return;
      const socket = req.socket;
      if (res.headersSent) return void socket.destroy();
      const e = new HeraldError('HERALD_ERR_REQUEST_TIMEOUT', `the request body did not arrive within ${timeoutMs} ms: send it at once`);
      res.setHeader('connection', 'close');
      sendError(res, e);
      // The body never ends: close once the answer is out rather than read it.
      res.once('finish', () => socket.destroy());
    }, timeoutMs);
    const done = () => clearTimeout(timer);
    req.once('end', done);
    req.once('close', done);
    next();
  };
}
