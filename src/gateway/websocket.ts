/**
 * `GET /v1/ws`: the WebSocket transport. Handles the upgrade (path, limits, read token),
 * then hands each connection to a WsSession. One timer pings every connection (dropping
 * peers that missed the previous pong) and one sends checkpoints, rather than a timer per
 * connection.
 */
import type http from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer } from 'ws';
import type { HeraldContext } from '../context.ts';
import { HeraldError, publicError } from '../errors.ts';
import { ROUTES } from './protocol.ts';
import { WsSession } from './ws-session.ts';

export interface QueueStats {
  connections: number;
  /** Sum over connections of buffered-but-unsent bytes. */
  queuedBytes: number;
  /** The largest single connection's queued bytes. */
  maxQueuedBytes: number;
}

export interface WebSocketGateway {
  readonly size: number;
  stats(): QueueStats;
  /** Waits for every connection to close (after sessions.closeAll), cutting them after graceMs. */
  close(graceMs: number): Promise<void>;
}

/** Answers a refused upgrade with a plain HTTP error and closes the socket. */
function refuse(socket: Duplex, err: HeraldError): void {
  const body = JSON.stringify(err.toWire());
  const reason = { 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found', 503: 'Service Unavailable' }[err.httpStatus] ?? 'Bad Request';
  socket.end(
    `HTTP/1.1 ${err.httpStatus} ${reason}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
  );
}

export function attachWebSocket(ctx: HeraldContext, server: http.Server): WebSocketGateway {
  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: ctx.config.wsMaxPayloadBytes,
    // Frames are built once and shared; per-connection compression would rebuild each one.
    perMessageDeflate: false,
    clientTracking: false,
  });
  const sessions = new Set<WsSession>();

  server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', () => socket.destroy());
    try {
      const url = new URL(req.url ?? '/', 'http://localhost');
      if (url.pathname !== ROUTES.ws) throw new HeraldError('HERALD_ERR_NOT_FOUND', `no WebSocket endpoint at ${url.pathname}; use ${ROUTES.ws}`);
      if (ctx.stopping) throw new HeraldError('HERALD_ERR_SHUTTING_DOWN', 'server is shutting down: connect to another instance');
      if (sessions.size >= ctx.config.wsMaxConnections) {
        throw new HeraldError(
          'HERALD_ERR_TOO_MANY_CONNECTIONS',
          `this instance holds its maximum of ${ctx.config.wsMaxConnections} connections: retry later or elsewhere`,
        );
      }
      const reader = ctx.access.authenticate(req.headers.authorization, url.searchParams.get('token') ?? undefined);
      wss.handleUpgrade(req, socket, head, (ws) => {
        const session = new WsSession(ctx, ws, reader);
        sessions.add(session);
        ctx.metrics.wsConnections.inc();
        ws.on('close', () => {
          sessions.delete(session);
          ctx.metrics.wsConnections.dec();
        });
      });
    } catch (err) {
      refuse(socket, publicError(err));
    }
  });

  const heartbeat = setInterval(() => {
    for (const s of sessions) s.heartbeat();
  }, ctx.config.wsPingIntervalMs);
  const checkpoints = setInterval(() => {
    for (const s of sessions) s.checkpoint();
  }, ctx.config.checkpointIntervalMs);

  const stats = (): QueueStats => {
    let queuedBytes = 0;
    let maxQueuedBytes = 0;
    for (const s of sessions) {
      const q = s.queuedBytes;
      queuedBytes += q;
      if (q > maxQueuedBytes) maxQueuedBytes = q;
    }
    return { connections: sessions.size, queuedBytes, maxQueuedBytes };
  };
  ctx.metrics.onCollect(() => {
    const st = stats();
    ctx.metrics.wsQueuedBytes.set(st.queuedBytes);
    ctx.metrics.wsQueuedBytesMax.set(st.maxQueuedBytes);
  });

  return {
    get size() {
      return sessions.size;
    },
    stats,
    async close(graceMs: number) {
      clearInterval(heartbeat);
      clearInterval(checkpoints);
      const deadline = Date.now() + graceMs;
      while (sessions.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      for (const s of sessions) s.terminate();
      wss.close();
    },
  };
}
