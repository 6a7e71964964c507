import { describe, expect, it } from 'vitest';
import { TokenBucket } from '../src/token-bucket.ts';

describe('TokenBucket', () => {
  it('gives the burst at once, then earns tokens back at its rate, never above the burst', () => {
    let now = 0;
    const b = new TokenBucket(3, 2, () => now);
    expect([b.tryTake(), b.tryTake(), b.tryTake(), b.tryTake()]).toEqual([true, true, true, false]);
    now = 499;
    expect(b.tryTake()).toBe(false);
    now = 500;
    expect([b.tryTake(), b.tryTake()]).toEqual([true, false]);
    now = 60_000;
    expect([b.tryTake(), b.tryTake(), b.tryTake(), b.tryTake()]).toEqual([true, true, true, false]);
  });

  it('takeOrWaitMs goes into debt and says how long each taker waits', () => {
    let now = 0;
    const b = new TokenBucket(2, 10, () => now);
    expect([b.takeOrWaitMs(), b.takeOrWaitMs(), b.takeOrWaitMs(), b.takeOrWaitMs()]).toEqual([0, 0, 100, 200]);
    now = 200;
    expect(b.takeOrWaitMs()).toBe(100);
  });
});
