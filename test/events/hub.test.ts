import { describe, expect, it } from 'vitest';
import { Event } from '../../src/events/event.ts';
import { Hub, type HubMember } from '../../src/events/hub.ts';
import { TopicFilter } from '../../src/events/topic.ts';

const ev = (id: number, topic: string) => new Event({ id, topic, type: 't', data: 'null', at: '2026-11-22T00:00:00.000Z' });

function member(entries: string[]): HubMember & { got: number[] } {
  const got: number[] = [];
  return { filter: TopicFilter.parse(entries), got, deliver: (events) => got.push(...events.map((e) => e.id)) };
}

describe('Hub', () => {
  it('delivers each matching event once and in id order, whatever mix of exact topics and prefixes matches it', () => {
    const hub = new Hub();
    const both = member(['dup:1', 'dup:*']);
    const two = member(['a:1', 'b:1']);
    const one = member(['a:1']);
    const all = member(['*']);
    const pre = member(['a:*']);
    for (const m of [both, two, one, all, pre]) hub.add(m);
    hub.fanOut([ev(1, 'dup:1'), ev(2, 'dup:2'), ev(3, 'dup:1'), ev(4, 'b:1'), ev(5, 'a:1'), ev(6, 'b:1'), ev(7, 'a:2')]);
    expect(both.got).toEqual([1, 2, 3]);
    expect(two.got).toEqual([4, 5, 6]);
    expect(one.got).toEqual([5]);
    expect(all.got).toEqual([1, 2, 3, 4, 5, 6, 7]);
    expect(pre.got).toEqual([5, 7]);
    expect(hub.head).toBe(7);
    for (const m of [both, two, one, all, pre]) hub.remove(m);
    expect(hub.size).toBe(0);
  });

  it('a member that throws does not cost the others the batch: every member gets it, then publish rethrows', () => {
    const hub = new Hub();
    const before = member(['*']);
    const broken: HubMember = {
      filter: TopicFilter.parse(['x:1']),
      deliver: () => {
        throw new Error('subscriber bug');
      },
    };
    const after = member(['x:1']);
    const prefixed = member(['x:*', 'y:1']);
    for (const m of [before, broken, after, prefixed]) hub.add(m);
    expect(() => hub.fanOut([ev(10, 'x:1'), ev(11, 'y:1')])).toThrow('subscriber bug');
    expect(before.got).toEqual([10, 11]);
    expect(after.got).toEqual([10]);
    expect(prefixed.got).toEqual([10, 11]);
    expect(hub.head).toBe(11);
  });
});
