/**
 * Hub: in-process fan-out. The Listener publishes each batch of new events once; the Hub
 * hands every member the events that match its filter. Members are indexed by exact topic,
 * so an event reaches its recipients without testing every member.
 */
import type { Event } from './event.ts';
import type { TopicFilter } from './topic.ts';

export interface HubMember {
  readonly filter: TopicFilter;
  /** Called synchronously with the matching events of one published batch, in id order. */
  deliver(events: Event[]): void;
}

export class Hub {
  /** The highest id published so far (the Listener's head). */
  head = 0;
  private readonly everything = new Set<HubMember>();
  private readonly byTopic = new Map<string, Set<HubMember>>();
  private readonly byPrefix = new Set<HubMember>();

  get size(): number {
    let n = this.everything.size + this.byPrefix.size;
    for (const set of this.byTopic.values()) n += set.size;
    return n;
  }

  add(member: HubMember): void {
    const f = member.filter;
    if (f.all) {
      this.everything.add(member);
      return;
    }
    for (const topic of f.exact) {
      let set = this.byTopic.get(topic);
      if (!set) this.byTopic.set(topic, (set = new Set()));
      set.add(member);
    }
    if (f.prefixes.length > 0) this.byPrefix.add(member);
  }

  remove(member: HubMember): void {
    const f = member.filter;
    this.everything.delete(member);
    this.byPrefix.delete(member);
    for (const topic of f.exact) {
      const set = this.byTopic.get(topic);
      if (set?.delete(member) && set.size === 0) this.byTopic.delete(topic);
    }
  }

  /** Fans a batch (strictly increasing ids, all > head) out to the members. */
  publish(events: readonly Event[]): void {
    if (events.length === 0) return;
    const perMember = new Map<HubMember, Event[]>();
    const give = (m: HubMember, e: Event) => {
      const list = perMember.get(m);
      if (list) {
        // A member with both `job:1` and `job:*` must get the event once.
        if (list[list.length - 1] !== e) list.push(e);
      } else perMember.set(m, [e]);
    };
    for (const e of events) {
      for (const m of this.everything) give(m, e);
      const exact = this.byTopic.get(e.topic);
      if (exact) for (const m of exact) give(m, e);
      for (const m of this.byPrefix) if (m.filter.matches(e.topic)) give(m, e);
    }
    // Advance before delivering: a member reading `head` inside deliver sees this batch.
    this.head = events[events.length - 1]!.id;
    for (const [m, list] of perMember) m.deliver(list);
  }
}
