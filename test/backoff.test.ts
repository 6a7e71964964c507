import { describe, expect, it } from 'vitest';
import { backoffMs } from '../src/backoff.ts';

const low = () => 0;
const high = () => 0.999_999;

describe('backoffMs', () => {
  it('doubles from the initial delay, with jitter in [½, 1) of the step', () => {
    expect([0, 1, 2, 3].map((a) => backoffMs(a, 60_000, 100, low))).toEqual([50, 100, 200, 400]);
    expect([0, 1, 2, 3].map((a) => backoffMs(a, 60_000, 100, high))).toEqual([100, 200, 400, 800]);
  });

  it('never exceeds the cap, and never drops below half of it once capped', () => {
    for (const attempt of [10, 30, 1000, Number.MAX_SAFE_INTEGER]) {
      expect(backoffMs(attempt, 5000, 100, high)).toBe(5000);
      expect(backoffMs(attempt, 5000, 100, low)).toBe(2500);
    }
  });

  it('spreads retries of processes that failed together', () => {
    const delays = new Set(Array.from({ length: 50 }, () => backoffMs(6, 60_000)));
    expect(delays.size).toBeGreaterThan(10);
    for (const d of delays) {
      expect(d).toBeGreaterThanOrEqual(3200);
      expect(d).toBeLessThanOrEqual(6400);
    }
  });

  it('treats a negative attempt as the first', () => {
    expect(backoffMs(-3, 5000, 100, low)).toBe(50);
  });
});
