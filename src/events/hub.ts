/**
 * Hub: in-process fan-out. The Listener fans out each batch of new events once; the Hub
 * hands every member the events that match its filter. Members are indexed by exact topic,
 * so an event reaches its recipients without testing every member. It also keeps the last
 * batches it fanned out, within a byte budget, in its CatchUpWindow: catch-ups from recent
 * positions are read from there instead of the table.
 */
import { CatchUpWindow, type CatchUpWindowOptions } from './catch-up-window.ts';
import type { Event } from './event.ts';
import type { TopicFilter } from './topic.ts';

/** What the Hub delivers to: a filter and a synchronous deliver() (a Subscription, in practice). */
export interface HubMember {
  readonly filter: TopicFilter;
  /**
   * Called synchronously with the matching events of one batch fanned out, in id order. The
   * array may be shared with other members and is never modified once fanned out: a member
   * may keep it (Subscriptions buffer it by reference), but must not modify it.
   */
  deliver(events: readonly Event[]): void;
}

/** In-process fan-out: each batch the Listener hands over goes to the members whose filter matches. */
export class Hub {
  /** Recent batches, for catch-up without a query (off unless given a byte budget). */
  readonly window: CatchUpWindow;
  private _head = 0;
  private readonly everything = new Set<HubMember>();
  private readonly byTopic = new Map<string, Set<HubMember>>();
  private readonly byPrefix = new Set<HubMember>();

  constructor(window: Partial<CatchUpWindowOptions> = {}) {
    this.window = new CatchUpWindow({ maxBytes: 0, retentionMaxAgeMs: 0, retentionMaxEvents: 0, ...window });
  }

  /** The highest id fanned out so far (the Listener's head). */
  get head(): number {
    return this._head;
  }

  /**
   * Where fan-out starts (the Listener sets it from the log's head at start): the window
   * starts over there, since it cannot know what came before.
   */
  set head(id: number) {
    this._head = id;
    this.window.reset(id);
  }

  /** How many members are registered (a member with several exact topics counts once per topic). */
  get size(): number {
    let n = this.everything.size + this.byPrefix.size;
    for (const set of this.byTopic.values()) n += set.size;
    return n;
  }

  /** Registers `member` for the batches fanned out from now on. */
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

  /** Unregisters `member`; it receives nothing fanned out after this returns. */
  remove(member: HubMember): void {
    const f = member.filter;
    this.everything.delete(member);
    this.byPrefix.delete(member);
    for (const topic of f.exact) {
      const set = this.byTopic.get(topic);
      if (set?.delete(member) && set.size === 0) this.byTopic.delete(topic);
    }
  }

  /**
   * Fans a batch (strictly increasing ids, all > head) out to the members. Members that take
   * every event, or exactly one topic, share one read-only array per batch or per topic;
   * only members with several entries or prefixes get a list built for them.
   */
  fanOut(events: readonly Event[]): void {
    if (events.length === 0) return;
    const batch = events;
    let byTopic: Map<string, Event[]> | null = null;
    if (this.byTopic.size > 0) {
      byTopic = new Map();
      for (const e of batch) {
        const list = byTopic.get(e.topic);
        if (list) list.push(e);
        else byTopic.set(e.topic, [e]);
      }
    }
    // Members with several filter entries get a list of their own, built before anyone is
    // delivered to (a delivery may write to a socket, and must see the batch complete).
    const perMember = new Map<HubMember, Event[]>();
    const give = (m: HubMember, e: Event) => {
      const list = perMember.get(m);
      if (list) list.push(e);
      else perMember.set(m, [e]);
    };
    if (byTopic) {
      for (const [topic, list] of byTopic) {
        const members = this.byTopic.get(topic);
        if (members) for (const m of members) if (!isSingleTopic(m)) for (const e of list) give(m, e);
      }
    }
    if (this.byPrefix.size > 0) {
      for (const e of batch) for (const m of this.byPrefix) if (m.filter.matches(e.topic)) give(m, e);
    }
    // Lists merged from several topics and prefixes: restore id order, and deliver once an
    // event that matched twice (`job:1` and `job:*`).
    const merged: [HubMember, Event[]][] = [];
    for (const [m, list] of perMember) {
      if (m.filter.exact.size + m.filter.prefixes.length > 1) {
        list.sort((a, b) => a.id - b.id);
        merged.push([m, list.filter((e, i) => i === 0 || list[i - 1] !== e)]);
      } else merged.push([m, list]);
    }
    // Advance before delivering: a member reading `head` inside deliver sees this batch, and
    // a catch-up read from the window (even one started inside deliver) finds it there.
    this.window.append(batch);
    this._head = batch[batch.length - 1]!.id;
    // The head has moved, so the batch is never fanned out again: every member must get it,
    // whatever another member's deliver throws. The first failure is rethrown at the end.
    let failure: { err: unknown } | null = null;
    const deliver = (m: HubMember, list: readonly Event[]) => {
      try {
        m.deliver(list);
      } catch (err) {
        failure ??= { err };
      }
    };
    // Members taking every event, or exactly one topic, share one read-only array.
    for (const m of this.everything) deliver(m, batch);
    if (byTopic) {
      for (const [topic, list] of byTopic) {
        const members = this.byTopic.get(topic);
        if (members) for (const m of members) if (isSingleTopic(m)) deliver(m, list);
      }
    }
    for (const [m, list] of merged) deliver(m, list);
    if (failure) throw (failure as { err: unknown }).err;
  }
}

function isSingleTopic(m: HubMember): boolean {
  return m.filter.exact.size === 1 && m.filter.prefixes.length === 0;
}
