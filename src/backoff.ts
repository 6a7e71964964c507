/**
 * The one retry curve for reconnecting to something that went away: capped exponential
 * backoff with "equal jitter". Attempt n (from 0) waits a random time in [½, 1) ×
 * min(capMs, initialMs × 2^n); with the defaults (100 ms, cap 5 s) that is 50–100, 100–200,
 * 200–400, 400–800, 800–1600, 1600–3200, then 2500–5000 ms for every later attempt.
 *
 * Why this shape: the doubling keeps a dead peer from being hammered; the cap bounds the delay
 * once it is back; the random half spreads out processes that failed together (a database
 * restart drops every Herald at once) so they do not retry in lockstep, while the fixed half
 * keeps a floor so a flapping peer is never retried in a tight loop. The Listener, start-up's
 * database wait, the exporter's retry, job retries and the client package's reconnects use it.
 */

// The curve itself lives in the wire module, the one place the client package (which can
// import nothing from the server) and the server can share.
export { BACKOFF_INITIAL_MS, backoffMs } from 'herald-client/protocol';
