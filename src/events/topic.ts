/**
 * Topics and topic filters. A topic is `segment:segment…` of `[a-z0-9._-]` (at most 256
 * bytes); a filter entry with a trailing `*` is a prefix pattern (`job:*`, and `*` alone
 * matches everything).
 */
import { HeraldError } from '../errors.ts';

/** Longest topic, in bytes (herald.valid_topic() checks the same). */
export const TOPIC_MAX_BYTES = 256;
const TOPIC_RE = /^[a-z0-9._-]+(:[a-z0-9._-]+)*$/;
// A pattern's prefix may end in ':' (`job:*`) or be empty (`*`).
const PREFIX_RE = /^([a-z0-9._-]+(:[a-z0-9._-]+)*:?)?$/;

/** True when `topic` is a concrete topic: `segment:segment…` of [a-z0-9._-], at most TOPIC_MAX_BYTES. */
export function isValidTopic(topic: string): boolean {
  return topic.length <= TOPIC_MAX_BYTES && TOPIC_RE.test(topic);
}

/** True when `topic` lies under one of `privatePrefixes` (HERALD_PRIVATE_TOPIC_PREFIXES): readable only under a grant. */
export function isPrivateTopic(topic: string, privatePrefixes: readonly string[]): boolean {
  return privatePrefixes.some((p) => topic.startsWith(p));
}

/** Throws bad_request unless `topic` is a valid concrete topic. */
export function assertTopic(topic: unknown, field = 'topic'): string {
  if (typeof topic !== 'string' || !isValidTopic(topic)) {
    throw new HeraldError(
      'HERALD_ERR_BAD_REQUEST',
      `${field} ${JSON.stringify(topic)} is not a topic: use segments of [a-z0-9._-] joined by ':' (at most ${TOPIC_MAX_BYTES} bytes)`,
    );
  }
  return topic;
}

/** Which topics a subscriber wants. `all` is true for no filter or a bare `*`. */
export class TopicFilter {
  readonly exact: ReadonlySet<string>;
  readonly prefixes: readonly string[];
  readonly all: boolean;

  private constructor(exact: Set<string>, prefixes: string[], all: boolean) {
    this.exact = exact;
    this.prefixes = prefixes;
    this.all = all;
  }

  /** The filter that matches every topic. */
  static readonly ALL = new TopicFilter(new Set(), [], true);

  /**
   * The filter that matches no topic: a pattern narrowed to nothing its reader may read
   * (gateway/access.ts). Not what parse([]) gives (that is ALL): no client spells it.
   */
  static readonly NONE = new TopicFilter(new Set(), [], false);

  /** Parses filter entries; an empty list means every topic. Throws bad_request on a bad entry. */
  static parse(entries: readonly string[]): TopicFilter {
    if (entries.length === 0) return TopicFilter.ALL;
    const exact = new Set<string>();
    const prefixes = new Set<string>();
    for (const entry of entries) {
      if (typeof entry === 'string' && entry.endsWith('*')) {
        const prefix = entry.slice(0, -1);
        if (prefix.length > TOPIC_MAX_BYTES || !PREFIX_RE.test(prefix)) {
          throw new HeraldError('HERALD_ERR_BAD_REQUEST', `topic pattern ${JSON.stringify(entry)} is not valid: a topic prefix followed by '*'`);
        }
        if (prefix === '') return TopicFilter.ALL;
        prefixes.add(prefix);
      } else {
        exact.add(assertTopic(entry));
      }
    }
    return new TopicFilter(exact, [...prefixes], false);
  }

  /** True when `topic` is one of the exact topics or starts with one of the prefixes. */
  matches(topic: string): boolean {
    if (this.all || this.exact.has(topic)) return true;
    for (const p of this.prefixes) if (topic.startsWith(p)) return true;
    return false;
  }

  /** The entries, as a client wrote them (`job:*`). */
  entries(): string[] {
    return this.all ? ['*'] : [...this.exact, ...this.prefixes.map((p) => `${p}*`)];
  }

  /** A filter with `other`'s entries added. */
  union(other: TopicFilter): TopicFilter {
    if (this.all || other.all) return TopicFilter.ALL;
    const entries = [...this.entries(), ...other.entries()];
    return entries.length === 0 ? TopicFilter.NONE : TopicFilter.parse(entries);
  }

  /** A filter with `remove`'s entries taken out (exact entries and patterns by spelling). */
  without(remove: TopicFilter): TopicFilter | null {
    const gone = new Set(remove.entries());
    const left = this.entries().filter((e) => !gone.has(e));
    return left.length === 0 ? null : TopicFilter.parse(left);
  }
}
