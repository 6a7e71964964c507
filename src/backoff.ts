/**
 * The one retry curve for reconnecting to something that went away: capped exponential
 * backoff with "equal jitter". Attempt n (from 0) waits a random time in [½, 1) ×
 * min(capMs, initialMs × 2^n); with the defaults (100 ms, cap 5 s) that is 50–100, 100–200,
 * 200–400, 400–800, 800–1600, 1600–3200, then 2500–5000 ms for every later attempt.
 *
 * Why this shape: the doubling keeps a dead peer from being hammered; the cap bounds the delay
 * once it is back; the random half spreads out processes that failed together (a database
 * restart drops every Herald at once) so they do not retry in lockstep, while the fixed half
 * keeps a floor so a flapping peer is never retried in a tight loop. The Listener and start-up's
 * database wait use it. The client package (which imports nothing from the server) computes
 * the same values with its own initial and cap options; the exporter's retry has no jitter yet.
 */

/** The first delay, before jitter, in ms. */
export const BACKOFF_INITIAL_MS = 100;

/**
 * Delay before retry `attempt` (0 for the first retry), in ms.
 * `random` is injectable for tests; it must return a value in [0, 1).
 */
export function backoffMs(attempt: number, capMs: number, initialMs = BACKOFF_INITIAL_MS, random: () => number = Math.random): number {
  // 2^20 × 100 ms is already ~29 hours: clamping the exponent keeps the product finite.
  const base = Math.min(capMs, initialMs * 2 ** Math.min(Math.max(attempt, 0), 20));
  return Math.round(base * (0.5 + random() / 2));
}
