/** The Hub's catch-up window on its own: what it holds, what it lets go of, what it answers. */
import { describe, expect, it } from 'vitest';
import { CatchUpWindow, type CatchUpWindowOptions, EVENT_OVERHEAD_BYTES } from '../../src/events/catch-up-window.ts';
import { Event } from '../../src/events/event.ts';
import { Hub } from '../../src/events/hub.ts';
import { TopicFilter } from '../../src/events/topic.ts';

const T0 = Date.parse('2026-11-22T00:00:00.000Z');
const ev = (id: number, topic = 'w:a', atMs = T0 + id) => new Event({ id, topic, type: 't', data: 'null', at: new Date(atMs).toISOString() });
const batch = (from: number, n: number, topic?: (id: number) => string) => Array.from({ length: n }, (_, i) => ev(from + i, topic?.(from + i)));
const ALL = TopicFilter.ALL;
const ids = (r: { events: readonly Event[] } | null) => r?.events.map((e) => e.id) ?? null;
const HEAD = { epoch: 'e1', head: 0, oldest: 1 };

function windowAt(head: number, opts: Partial<CatchUpWindowOptions> = {}): CatchUpWindow {
  const w = new CatchUpWindow({ maxBytes: 1 << 20, retentionMaxAgeMs: 0, retentionMaxEvents: 0, ...opts });
  w.reset(head);
  w.observe(HEAD);
  return w;
}

describe('CatchUpWindow', () => {
  it('holds every event after the start head and answers any position from there to the head, shaped like a table read', () => {
    const w = windowAt(100);
    w.append(batch(101, 3));
    w.append(batch(104, 2));
    expect([w.floor, w.head, w.size]).toEqual([100, 105, 2]);
    expect(ids(w.read(100, ALL, 10))).toEqual([101, 102, 103, 104, 105]);
    expect(w.read(100, ALL, 10)!.covered).toBe(105);
    // Cut at the limit: covered is the last id, as for a full table page.
    expect(w.read(101, ALL, 3)).toMatchObject({ covered: 104 });
    expect(ids(w.read(101, ALL, 3))).toEqual([102, 103, 104]);
    // At the head: nothing, covered = head. Below the start or past the head: not held.
    expect(w.read(105, ALL, 10)).toEqual({ events: [], covered: 105 });
    expect(w.read(99, ALL, 10)).toBeNull();
    expect(w.read(106, ALL, 10)).toBeNull();
  });

  it('a filtered read returns only matching events and covers up to the head (positions move past the rest)', () => {
    const w = windowAt(0);
    w.append(batch(1, 10, (id) => (id % 3 === 0 ? 'w:want' : id % 5 === 0 ? 'x:5' : 'w:other')));
    const f = TopicFilter.parse(['w:want', 'x:*']);
    expect(ids(w.read(0, f, 100))).toEqual([3, 5, 6, 9, 10]);
    expect(w.read(0, f, 100)!.covered).toBe(10);
    expect(w.read(0, f, 2)).toMatchObject({ covered: 5 });
    expect(ids(w.read(9, TopicFilter.parse(['nope:x']), 100))).toEqual([]);
  });

  it("hands over a whole published batch as the Hub's own array, and a copy otherwise", () => {
    const w = windowAt(0);
    const a = batch(1, 3);
    const b = batch(4, 3, () => 'w:b');
    w.append(a);
    w.append(b);
    expect(w.read(0, TopicFilter.parse(['w:a']), 10)!.events).toBe(a);
    expect(w.read(3, ALL, 10)!.events).toBe(b);
    expect(w.read(1, ALL, 10)!.events).not.toBe(a);
    expect(w.read(0, ALL, 10)!.events).toHaveLength(6);
  });

  it('answers the same question with the same array until the window changes (a reconnect storm builds its frames once)', () => {
    const w = windowAt(0);
    w.append(batch(1, 3));
    w.append(batch(4, 3));
    const first = w.read(2, TopicFilter.parse(['w:a']), 10)!;
    // Another subscriber's filter object, same entries.
    expect(w.read(2, TopicFilter.parse(['w:a']), 10)).toBe(first);
    expect(w.read(2, TopicFilter.parse(['w:a']), 2)).not.toBe(first);
    expect(w.read(2, TopicFilter.parse(['w:*']), 10)).not.toBe(first);
    w.append(batch(7, 1));
    const after = w.read(2, TopicFilter.parse(['w:a']), 10)!;
    expect(after).not.toBe(first);
    expect(ids(after)).toEqual([3, 4, 5, 6, 7]);
  });

  it('keeps within its byte budget by letting the oldest batches go; the floor moves to the last id let go', () => {
    const one = ev(1).bytes + EVENT_OVERHEAD_BYTES;
    const w = windowAt(0, { maxBytes: one * 5 });
    w.append(batch(1, 2));
    w.append(batch(3, 2));
    w.append(batch(5, 2));
    expect(w.bytes).toBeLessThanOrEqual(one * 5);
    expect([w.floor, w.size]).toEqual([2, 2]);
    expect(w.read(1, ALL, 10)).toBeNull();
    expect(ids(w.read(2, ALL, 10))).toEqual([3, 4, 5, 6]);
    // A batch larger than the whole budget goes at once: the window is empty at the head.
    w.append(batch(7, 6));
    expect([w.floor, w.head, w.size, w.bytes]).toEqual([12, 12, 0, 0]);
    expect(w.read(12, ALL, 10)).toEqual({ events: [], covered: 12 });
  });

  it('lets go of what retention may remove: half the retention age and count, and below a reported horizon', () => {
    let now = T0 + 1000;
    const byAge = windowAt(0, { retentionMaxAgeMs: 1000, now: () => now });
    byAge.append(batch(1, 2));
    byAge.append(batch(601, 2));
    byAge.append(batch(801, 2));
    // Events are at T0 + id; at T0 + 1000, half the age (500 ms) reaches up to T0 + 500.
    expect(ids(byAge.read(600, ALL, 10))).toEqual([601, 602, 801, 802]);
    expect(byAge.read(0, ALL, 10)).toBeNull();
    expect(byAge.floor).toBe(2);
    now = T0 + 1000 + 200;
    expect(byAge.read(600, ALL, 10)).toBeNull();
    expect(byAge.floor).toBe(602);

    const byCount = windowAt(0, { retentionMaxEvents: 10 });
    for (let i = 0; i < 5; i++) byCount.append(batch(1 + i * 4, 4));
    // Head 20, half of 10 is 5: ids up to 15 go, and the batch 13–16 keeps its last event.
    expect(byCount.floor).toBe(0);
    expect(byCount.read(0, ALL, 100)).toBeNull();
    expect(byCount.floor).toBe(15);
    expect(ids(byCount.read(15, ALL, 100))).toEqual([16, 17, 18, 19, 20]);
    expect(byCount.bytes).toBe(batch(16, 5).reduce((n, e) => n + e.bytes + EVENT_OVERHEAD_BYTES, 0));

    const reported = windowAt(0);
    reported.append(batch(1, 10));
    reported.observe({ epoch: 'e1', head: 10, oldest: 5 });
    expect(reported.read(3, ALL, 100)).toBeNull();
    expect(ids(reported.read(4, ALL, 100))).toEqual([5, 6, 7, 8, 9, 10]);
    // A horizon past everything held: the window answers nothing until the head passes it.
    reported.observe({ epoch: 'e1', head: 30, oldest: 21 });
    expect(reported.read(10, ALL, 100)).toBeNull();
  });

  it('answers nothing when off, before the Listener has started it, before it knows the epoch, or once a head read reports another epoch', () => {
    const off = new CatchUpWindow({ maxBytes: 0, retentionMaxAgeMs: 0, retentionMaxEvents: 0 });
    off.reset(0);
    off.observe(HEAD);
    off.append(batch(1, 3));
    expect([off.size, off.head, off.read(3, ALL, 10)]).toEqual([0, 3, null]);

    const unstarted = new CatchUpWindow({ maxBytes: 1 << 20, retentionMaxAgeMs: 0, retentionMaxEvents: 0 });
    unstarted.observe(HEAD);
    // Head 0 is not the log's head until the Listener sets it (and it moves it without publishing).
    expect(unstarted.read(0, ALL, 10)).toBeNull();

    const unknown = new CatchUpWindow({ maxBytes: 1 << 20, retentionMaxAgeMs: 0, retentionMaxEvents: 0 });
    unknown.reset(0);
    unknown.append(batch(1, 3));
    expect(unknown.read(0, ALL, 10)).toBeNull();
    unknown.observe(HEAD);
    expect(ids(unknown.read(0, ALL, 10))).toEqual([1, 2, 3]);

    unknown.observe({ epoch: 'e2', head: 3, oldest: 1 });
    unknown.append(batch(4, 1));
    expect([unknown.read(3, ALL, 10), unknown.size]).toEqual([null, 0]);
  });

  it("is the Hub's: each published batch goes in before any member sees it; setting the head starts it over", () => {
    const hub = new Hub({ maxBytes: 1 << 20 });
    hub.head = 10;
    hub.window.observe(HEAD);
    const seen: (number[] | null)[] = [];
    const member = { filter: ALL, deliver: () => seen.push(ids(hub.window.read(10, ALL, 10))) };
    hub.add(member);
    hub.fanOut(batch(11, 2));
    expect(seen).toEqual([[11, 12]]);
    hub.head = 50;
    expect([hub.window.floor, hub.window.size]).toEqual([50, 0]);
    hub.remove(member);
  });
});
