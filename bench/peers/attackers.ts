/**
 * The attack of issue 12, in its own process: `worst` clients each sending the worst catch-up
 * read the API allows (since=0, HERALD_MAX_FILTER_ENTRIES broad prefix patterns, the largest
 * limit) and abandoning it after `abandonMs`, over and over, plus `loopers` clients looping
 * non-matching since=0 polls, for `durationMs`. Answers with the count of answers by status.
 */
import { serve } from './ipc.ts';

async function attack(msg: Record<string, unknown>): Promise<Record<string, number>> {
  const { url, worst, loopers, durationMs, abandonMs, patterns } = msg as {
    url: string;
    worst: number;
    loopers: number;
    durationMs: number;
    abandonMs: number;
    patterns: string[];
  };
  const end = Date.now() + durationMs;
  const counts: Record<string, number> = {};
  const count = (k: string) => (counts[k] = (counts[k] ?? 0) + 1);
  const worstQuery = `${url}/v1/events?since=0&limit=1000&${patterns.map((p) => `topic=${encodeURIComponent(p)}`).join('&')}`;
  const worstClient = async () => {
    while (Date.now() < end) {
      const res = await fetch(worstQuery, { signal: AbortSignal.timeout(abandonMs) }).catch(() => null);
      if (res === null) count('worst: abandoned');
      else {
        count(`worst: ${res.status}`);
        await res.body?.cancel();
        // Refused (503 Retry-After): an attacker does not wait.
      }
    }
  };
  const looper = async () => {
    while (Date.now() < end) {
      const res = await fetch(`${url}/v1/events?since=0&topic=nope:x`).catch(() => null);
      count(`loop: ${res?.status ?? 'error'}`);
      await res?.body?.cancel();
    }
  };
  await Promise.all([...Array.from({ length: worst }, worstClient), ...Array.from({ length: loopers }, looper)]);
  return counts;
}

serve({ attack });
