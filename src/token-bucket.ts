/**
 * A token bucket: at most `burst` tokens, earned back at `perSecond`. The one mechanism behind
 * every rate Herald enforces: WebSocket subscribe floods (ws-session.ts), takedown submissions
 * per client address (http/pages.ts), shared head reads (events/head-reads.ts) and each client
 * address's share of catch-up read time (events/catch-up-reads.ts).
 */
export class TokenBucket {
  private tokens: number;
  private atMs: number;

  constructor(
    private readonly burst: number,
    private readonly perSecond: number,
    /** Clock in ms; injectable for tests. */
    private readonly nowMs: () => number = Date.now,
  ) {
    this.tokens = burst;
    this.atMs = nowMs();
  }

  /** Takes a token if there is one; false (taking nothing) if not. */
  tryTake(): boolean {
    this.refill();
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }

  /**
   * Takes `n` tokens (default 1), going into debt for what is missing, and returns how long
   * until the debt is earned back, in ms (0: at once). For callers that wait their turn
   * rather than being refused, and for costs known only afterwards (catch-up-reads.ts charges
   * each read's duration).
   */
  takeOrWaitMs(n = 1): number {
    this.refill();
    this.tokens -= n;
    return this.tokens >= 0 ? 0 : (-this.tokens * 1000) / this.perSecond;
  }

  private refill(): void {
    const now = this.nowMs();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.atMs) / 1000) * this.perSecond);
    this.atMs = now;
  }
}
