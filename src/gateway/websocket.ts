/**
 * `GET /v1/ws`: the WebSocket transport. Handles the upgrade (path, origin, limits, token),
 * then hands each connection to a WsSession. One timer pings every connection (dropping
 * peers that missed the previous pong) and one sends checkpoints, rather than a timer per
 * connection.
 */
import http from 'node:http';
import type { Duplex } from 'node:stream';
import { QUERY, ROUTES } from 'herald-client/protocol';
import { WebSocketServer } from 'ws';
import type { Config } from '../config.ts';
import { HeraldError, publicError } from '../errors.ts';
import { checkWebSocketOrigin } from '../http/cors.ts';
import type { Metrics } from '../http/metrics.ts';
import { DeliveryTally, refuseWhenStopping } from './stream-policy.ts';
import { WsSession, type WsSessionDeps } from './ws-session.ts';

/** What the WebSocket endpoint needs: the sessions' dependencies, its limits and timers, its gauges. */
export interface WebSocketDeps extends WsSessionDeps {
  readonly config: WsSessionDeps['config'] &
    Pick<Config, 'wsMaxPayloadBytes' | 'wsMaxConnections' | 'wsPingIntervalMs' | 'checkpointIntervalMs' | 'corsOrigins'>;
  readonly metrics: WsSessionDeps['metrics'] & Pick<Metrics, 'wsConnections' | 'wsQueuedBytes' | 'wsQueuedBytesMax'>;
}

/** What this process holds for its WebSocket clients. */
export interface QueueStats {
  connections: number;
  /** Sum over connections of buffered-but-unsent bytes. */
  queuedBytes: number;
  /** The largest single connection's queued bytes. */
  maxQueuedBytes: number;
}

/** The WebSocket endpoint of one process. */
export interface WebSocketGateway {
  readonly size: number;
  stats(): QueueStats;
  /** Waits for every connection to close (after sessions.closeAll), cutting them after graceMs. */
  close(graceMs: number): Promise<void>;
}

/** Answers a refused upgrade with a plain HTTP error and closes the socket. */
function refuse(socket: Duplex, err: HeraldError): void {
  const body = JSON.stringify(err.toWire());
  const reason = http.STATUS_CODES[err.httpStatus] ?? 'Error';
  socket.end(
    `HTTP/1.1 ${err.httpStatus} ${reason}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
  );
}

/** Serves `/v1/ws` on `server`'s upgrades until close(). */
export function attachWebSocket(deps: WebSocketDeps, server: http.Server): WebSocketGateway {
  const tally = new DeliveryTally(deps.metrics, 'ws');
  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: deps.config.wsMaxPayloadBytes,
    // Frames are built once and shared; per-connection compression would rebuild each one.
    perMessageDeflate: false,
    clientTracking: false,
  });
  const sessions = new Set<WsSession>();

  const upgrade = async (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
    try {
      const url = new URL(req.url ?? '/', 'http://localhost');
      if (url.pathname !== ROUTES.ws) throw new HeraldError('HERALD_ERR_NOT_FOUND', `no WebSocket endpoint at ${url.pathname}; use ${ROUTES.ws}`);
      checkWebSocketOrigin(deps.config.corsOrigins, req.headers);
      refuseWhenStopping(deps, 'connect to another instance');
      if (sessions.size >= deps.config.wsMaxConnections) {
        throw new HeraldError(
          'HERALD_ERR_TOO_MANY_CONNECTIONS',
          `this instance holds its maximum of ${deps.config.wsMaxConnections} connections: retry later or elsewhere`,
        );
      }
      // An expired JWT is let in: every subscribe answers token_expired as an `error` message,
      // which a browser can read (a refused upgrade is only a 1006 there), and `auth` with a
      // fresh token goes on from there. A token that is not valid at all is refused here.
      const subject = await deps.access.authenticate(req.headers.authorization, url.searchParams.get(QUERY.token) ?? undefined, { allowExpired: true });
      // The client left while its token was checked (a JWKS fetch): nothing to upgrade.
      if (socket.destroyed) return;
      refuseWhenStopping(deps, 'connect to another instance');
      wss.handleUpgrade(req, socket, head, (ws) => {
        const session = new WsSession(deps, ws, subject, tally);
        sessions.add(session);
        deps.metrics.wsConnections.inc();
        ws.on('close', () => {
          sessions.delete(session);
          deps.metrics.wsConnections.dec();
        });
      });
    } catch (err) {
      refuse(socket, publicError(err));
    }
  };
  server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', () => socket.destroy());
    void upgrade(req, socket, head);
  });

  const heartbeat = setInterval(() => {
    for (const s of sessions) s.heartbeat();
  }, deps.config.wsPingIntervalMs);
  const checkpoints = setInterval(() => {
    for (const s of sessions) s.checkpoint();
  }, deps.config.checkpointIntervalMs);

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
  deps.metrics.onCollect(() => {
    const st = stats();
    deps.metrics.wsQueuedBytes.set(st.queuedBytes);
    deps.metrics.wsQueuedBytesMax.set(st.maxQueuedBytes);
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
