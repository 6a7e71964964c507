/** Assembles the HTTP routes of one Herald process. */
import express, { type NextFunction, type Request, type Response, type Router } from 'express';
import type { HeraldContext } from '../context.ts';
import { HeraldError } from '../errors.ts';
import { createHeadHandler } from '../gateway/head.ts';
import { createPollHandler } from '../gateway/poll.ts';
import { ROUTES } from '../gateway/protocol.ts';
import { createPublishHandlers } from '../gateway/publish.ts';
import { createSseHandler } from '../gateway/sse.ts';
import { createAccessLog } from './access-log.ts';
import { createErrorHandler, notFound } from './errors.ts';
import { createMetricsHandler, createReadyzHandler, healthz } from './health.ts';

export interface AppRouters {
  /** The job API, mounted at /api/v1. */
  api?: Router;
  /** The exported static API served from the bucket (/api/packages, /api/archives). */
  exported?: Router;
  /** POST /_/index-webhook. */
  webhook?: Router;
  /** The web pages. */
  pages?: Router;
}

export function createApp(ctx: HeraldContext, routers: AppRouters = {}): express.Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  // Repeated `topic=` must arrive as an array; `a[b]=` must not build objects.
  app.set('query parser', 'simple');
  app.use(createAccessLog(ctx.logger));
  app.use(bodyDeadline(ctx.config.bodyTimeoutMs));

  app.get(ROUTES.healthz, healthz);
  app.get(ROUTES.readyz, createReadyzHandler(ctx));
  app.get(ROUTES.metrics, createMetricsHandler(ctx));
  app.get(ROUTES.head, createHeadHandler(ctx));
  app.get(ROUTES.stream, createSseHandler(ctx));
  app.get(ROUTES.events, createPollHandler(ctx));
  app.post(ROUTES.events, ...createPublishHandlers(ctx));
  if (routers.api) app.use('/api/v1', routers.api);
  if (routers.exported) app.use(routers.exported);
  if (routers.webhook) app.use(routers.webhook);
  if (routers.pages) app.use(routers.pages);
  app.all(ROUTES.ws, (_req, res) => {
    res.set('upgrade', 'websocket');
    throw new HeraldError('HERALD_ERR_UPGRADE_REQUIRED', `${ROUTES.ws} is a WebSocket endpoint: connect with a WebSocket client`);
  });
  app.all([ROUTES.events, ROUTES.head, ROUTES.stream], (req) => {
    throw new HeraldError('HERALD_ERR_METHOD_NOT_ALLOWED', `${req.method} is not allowed on ${req.path}`);
  });
  app.use(notFound);
  app.use(createErrorHandler(ctx));
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
  return (req: Request, res: Response, next: NextFunction) => {
    const length = req.headers['content-length'];
    const hasBody = req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
    if (!hasBody || req.complete) return next();
    const timer = setTimeout(() => {
      if (req.complete) return;
      const socket = req.socket;
      if (res.headersSent) return void socket.destroy();
      const e = new HeraldError('HERALD_ERR_REQUEST_TIMEOUT', `the request body did not arrive within ${timeoutMs} ms: send it at once`);
      res.status(e.httpStatus).set('connection', 'close').json(e.toWire());
      // The body never ends: close once the answer is out rather than read it.
      res.once('finish', () => socket.destroy());
    }, timeoutMs);
    const done = () => clearTimeout(timer);
    req.once('end', done);
    req.once('close', done);
    next();
  };
}
