/**
 * Followers that behave like real clients: they resume from their cursor after any failure
 * (503 while Postgres restarts, a dropped stream) and collect every event id they receive.
 */
import { openSse, type SseClient } from './sse.ts';

export interface Follower {
  ids: number[];
  /** Resolves once `count` events have arrived (rejects on timeout). */
  reach(count: number, timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

function makeFollower(run: (state: { stopped: boolean; ids: number[] }) => Promise<void>): Follower {
  const state = { stopped: false, ids: [] as number[] };
  const loop = run(state);
  return {
    ids: state.ids,
    async reach(count, timeoutMs = 30_000) {
      const deadline = Date.now() + timeoutMs;
      while (state.ids.length < count) {
        if (Date.now() > deadline) throw new Error(`follower has ${state.ids.length} of ${count} events`);
        await pause(10);
      }
    },
    async stop() {
      state.stopped = true;
      await loop;
    },
  };
}

/** Long-polls `GET /v1/events?since=next&wait=…` in a loop. */
export function followPoll(baseUrl: () => string, since: number, query = '', waitS = 2): Follower {
  return makeFollower(async (state) => {
    let next = since;
    while (!state.stopped) {
      try {
        const res = await fetch(`${baseUrl()}/v1/events?since=${next}&wait=${waitS}&limit=50${query}`, { signal: AbortSignal.timeout((waitS + 5) * 1000) });
        if (res.status !== 200) {
          await res.body?.cancel();
          await pause(50);
          continue;
        }
        const body = (await res.json()) as { events: { id: number }[]; next: number };
        for (const e of body.events) state.ids.push(e.id);
        next = body.next;
      } catch {
        await pause(50);
      }
    }
  });
}

/** Follows the SSE stream, reconnecting with Last-Event-ID like EventSource does. */
export function followSse(baseUrl: () => string, since: number, query = ''): Follower {
  return makeFollower(async (state) => {
    let last: string = String(since);
    while (!state.stopped) {
      let c: SseClient;
      try {
        c = await openSse(`${baseUrl()}/v1/events/stream?since=${since}${query}`, { 'last-event-id': last });
      } catch {
        await pause(50);
        continue;
      }
      if (c.status !== 200) {
        c.destroy();
        await pause(50);
        continue;
      }
      let seen = 0;
      let ended = false;
      void c.ended.then(() => (ended = true));
      const take = () => {
        for (; seen < c.messages.length; seen++) {
          const m = c.messages[seen]!;
          if (m.id !== undefined) last = m.id;
          if (m.event === 'message') state.ids.push(JSON.parse(m.data).id);
        }
      };
      while (!state.stopped && !ended) {
        take();
        await pause(5);
      }
      take();
      c.destroy();
    }
  });
}
