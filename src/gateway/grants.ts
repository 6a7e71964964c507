/**
 * Grants: the topics a subject may read or publish, as selectors — an exact topic, `prefix*`
 * or `*`, the syntax of a filter entry — and the reserved namespaces that only Herald's own
 * producers write. A JWT carries its grants in its claims (`herald.subscribe`,
 * `herald.publish`); a static read token is a read grant of `*`, a static publish token a
 * publish grant of `*`. docs/auth.md describes the model.
 */
import { coerceError, HeraldError } from '../errors.ts';
import { TopicFilter } from '../events/topic.ts';

/**
 * Namespaces written only by Herald's own producers (the job engine on `job:<id>` and `jobs`,
 * the registry on `package:<name>` and `index`): a consumer acts on them (the `/jobs/<id>`
 * page renders any `status` event as the job's status), so nobody else may write them. An
 * entry ending in `:` is a prefix; another names a topic and its `name:…` sub-topics.
 */
export const RESERVED_NAMESPACES = ['job:', 'jobs', 'package:', 'index'] as const;

/** The reserved namespace `topic` lies in, or undefined. */
export function reservedNamespaceOf(topic: string): string | undefined {
  return RESERVED_NAMESPACES.find((ns) => (ns.endsWith(':') ? topic.startsWith(ns) : topic === ns || topic.startsWith(`${ns}:`)));
}

/** A set of selectors; the empty set grants nothing (unlike an empty filter, which is every topic). */
export class Grants {
  /** No topic. */
  static readonly NONE = new Grants(null);
  /** Every topic (`*`). */
  static readonly ALL = new Grants(TopicFilter.ALL);

  private constructor(private readonly selectors: TopicFilter | null) {}

  /**
   * Grants from a claim's list of selectors (`what` names the claim in the message). Throws
   * unauthorized for anything else: a token with a malformed grant is refused whole rather
   * than read as granting less.
   */
  static parse(raw: unknown, what: string): Grants {
    if (raw === undefined) return Grants.NONE;
    if (!Array.isArray(raw) || raw.some((s) => typeof s !== 'string')) {
      throw new HeraldError('HERALD_ERR_UNAUTHORIZED', `the token's ${what} claim must be an array of topic selectors (a topic, \`prefix*\` or \`*\`)`);
    }
    if (raw.length === 0) return Grants.NONE;
    try {
      const filter = TopicFilter.parse(raw as string[]);
      return filter.all ? Grants.ALL : new Grants(filter);
    } catch (err) {
      throw new HeraldError('HERALD_ERR_UNAUTHORIZED', `the token's ${what} claim has a bad selector: ${coerceError(err).message}`, {}, { cause: err });
    }
  }

  /** True for a grant of `*`. */
  get all(): boolean {
    return this.selectors?.all ?? false;
  }

  /** The selectors as written (`job:*`), `[]` for none. */
  entries(): string[] {
    return this.selectors?.entries() ?? [];
  }

  /** True when `topic` is granted. */
  covers(topic: string): boolean {
    return this.selectors?.matches(topic) ?? false;
  }

  /** True when every topic starting with `prefix` is granted (`*`, or a granted prefix of it). */
  coversPrefix(prefix: string): boolean {
    const s = this.selectors;
    return s !== null && (s.all || s.prefixes.some((g) => prefix.startsWith(g)));
  }

  /**
   * The selectors that lie under `prefix`, as filter entries: what a pattern on `prefix*`
   * narrows to when only these grants open it.
   */
  within(prefix: string): string[] {
    const s = this.selectors;
    if (s === null || s.all) return [];
    return [...[...s.exact].filter((t) => t.startsWith(prefix)), ...s.prefixes.filter((g) => g.startsWith(prefix)).map((g) => `${g}*`)];
  }

  /**
   * True when `topic` may be published under these grants. A reserved namespace is open only
   * to selectors that name it (`job:*`, `job:42`): `*`, or `j*`, does not reach into one.
   */
  coversPublish(topic: string): boolean {
    const s = this.selectors;
    if (s === null) return false;
    const ns = reservedNamespaceOf(topic);
    if (ns === undefined) return s.matches(topic);
    return s.exact.has(topic) || s.prefixes.some((g) => g.startsWith(ns) && topic.startsWith(g));
  }
}
