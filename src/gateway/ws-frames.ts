/**
 * Prepared WebSocket frames. A server's frames are not masked (RFC 6455 §5.1), so the
 * bytes of a text frame do not depend on the connection: each batch the Hub publishes is
 * framed once — header and payload of every event, joined into one Buffer — and that same
 * Buffer is written to every recipient's socket in one call. This is the "prepared message"
 * of gorilla/websocket and the pre-framed publish of uWebSockets; going through `ws.send`
 * instead would build a header and make two socket writes per event per client.
 */
import type { Socket } from 'node:net';
import type { WebSocket } from 'ws';
import { perBatch } from '../events/event.ts';

const FIN_TEXT = 0x81;

function headerLength(payloadBytes: number): number {
  return payloadBytes < 126 ? 2 : payloadBytes < 65_536 ? 4 : 10;
}

/** Writes a final, unmasked text-frame header for `payloadBytes` at `at`; returns its length. */
function writeHeader(out: Buffer, at: number, payloadBytes: number): number {
  const length = headerLength(payloadBytes);
  out[at] = FIN_TEXT;
  if (length === 2) out[at + 1] = payloadBytes;
  else if (length === 4) {
    out[at + 1] = 126;
    out.writeUInt16BE(payloadBytes, at + 2);
  } else {
    out[at + 1] = 127;
    out.writeUInt32BE(Math.floor(payloadBytes / 2 ** 32), at + 2);
    out.writeUInt32BE(payloadBytes >>> 0, at + 6);
  }
  return length;
}

/**
 * The wire bytes of a batch of event frames, built once per array (the Hub shares one array
 * among every subscriber of a topic) and kept only as long as the array is.
 */
export const preparedFrames = perBatch((events) => {
  let total = 0;
  for (const e of events) {
    const n = e.wsFrame.length;
    total += headerLength(n) + n;
  }
  const out = Buffer.allocUnsafe(total);
  let at = 0;
  for (const e of events) {
    const payload = e.wsFrame;
    at += writeHeader(out, at, payload.length);
    at += payload.copy(out, at);
  }
  return out;
});

/**
 * The TCP socket under a `ws` connection. Prepared frames are written to it directly: `ws`
 * itself queues nothing of its own while it is neither compressing (Herald turns
 * permessage-deflate off) nor reading a Blob (Herald sends none), so writes to the socket
 * and `ws.send` of control messages stay in order, and `ws.bufferedAmount` still counts
 * them (it reads the socket's queue).
 */
export function socketOf(ws: WebSocket): Socket {
  return (ws as unknown as { _socket: Socket })._socket;
}
