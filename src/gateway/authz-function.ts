/**
 * Per-object authorization: the operator's SQL function (HERALD_AUTHZ_FUNCTION), asked
 * `(subject text, claims jsonb, topic text) → boolean` about a private topic the subject's
 * grants do not cover — at subscribe for an exact topic, at the first event of each topic
 * for a pattern (Arvados' permission check, from the database itself: "job:<id> to whoever
 * submitted it"). Its answers are remembered per connection (TopicDecisions) for
 * HERALD_AUTHZ_CACHE_TTL_MS, denials too; a call that fails is `unavailable` (retryable),
 * never remembered and never read as an allow.
 *
 * Calls run on the catch-up read pool (events/catch-up-reads.ts): they are client-driven
 * database work like catch-up reads, so they get the same statement timeout, fair queue by
 * client address and cancellation, and never take the connections publishers use.
 */
import pg from 'pg';
import { coerceError, HeraldError } from '../errors.ts';
import type { CatchUpReads } from '../events/catch-up-reads.ts';
import type { Logger } from '../logger.ts';

/**
 * Topics one connection remembers at most: a pattern over millions of private topics must
 * not grow a connection's memory without bound. Past it the oldest answer is forgotten (and
 * asked again if its topic comes back).
 */
export const DECISIONS_MAX = 10_000;

/** Where the function runs: the catch-up reads' `run` (its pool, timeout and fair queue). */
export type AuthzQueries = Pick<CatchUpReads, 'run'>;

/** Who is asking, as the function is told: the token's `sub` (null without one) and its claims. */
export interface AuthzSubject {
  readonly sub: string | null;
  readonly claims: Readonly<Record<string, unknown>>;
}

/** The operator's function, one per process. */
export class AuthzFunction {
  private readonly sql: string;

  /** `name` is a checked identifier (config.ts), `schema.name` or `name`, quoted here part by part. */
  constructor(
    name: string,
    private readonly queries: AuthzQueries,
    /** How long a connection keeps an answer, in ms. */
    readonly ttlMs: number,
    private readonly logger: Pick<Logger, 'warn'>,
  ) {
    const fn = name.split('.').map(pg.escapeIdentifier).join('.');
    // One statement for one topic or many (a page of jobs): the function is called once per topic, in order.
    this.sql = `select ${fn}($1::text, $2::jsonb, u.topic) is true as allowed from unnest($3::text[]) with ordinality u(topic, n) order by u.n`;
  }

  /**
   * Asks whether `subject` may read each of `topics`: true or false (null counts as false),
   * in order, in one statement. Throws unavailable when the call fails (timeout, a full
   * queue, an error raised in the function).
   */
  async allows(subject: AuthzSubject, topics: readonly string[], key: string, signal?: AbortSignal): Promise<boolean[]> {
    try {
      const { rows } = await this.queries.run((c) => c.query<{ allowed: boolean }>(this.sql, [subject.sub, JSON.stringify(subject.claims), topics]), {
        key,
        signal,
      });
      return topics.map((_, i) => rows[i]?.allowed === true);
    } catch (err) {
      const e = coerceError(err);
      if (e.code === 'HERALD_ERR_UNAVAILABLE') throw e;
      const what = topics.length === 1 ? JSON.stringify(topics[0]) : `${topics.length} topics`;
      this.logger.warn({ err: e.message, topic: topics[0], topics: topics.length }, 'HERALD_AUTHZ_FUNCTION failed');
      throw new HeraldError('HERALD_ERR_UNAVAILABLE', `the authorization check of ${what} failed: retry shortly`, { retryAfterS: 1 }, { cause: err });
    }
  }
}

/** One connection's answers from the function for one subject, each kept for the function's TTL. */
export class TopicDecisions {
  /** Topic → [allowed, when it was answered (ms)], oldest first. */
  private readonly answers = new Map<string, [boolean, number]>();

  constructor(
    private readonly fn: AuthzFunction,
    private readonly subject: AuthzSubject,
    /** The client's address: its calls share the read pool fairly with other addresses'. */
    private readonly key: string,
    private readonly now: () => number = Date.now,
  ) {}

  /** The remembered answer for `topic`, or undefined when there is none or it is older than the TTL. */
  cached(topic: string, nowMs = this.now()): boolean | undefined {
    const answer = this.answers.get(topic);
    if (answer === undefined) return undefined;
    if (nowMs - answer[1] < this.fn.ttlMs) return answer[0];
    this.answers.delete(topic);
    return undefined;
  }

  /** The answer for `topic`: remembered, or asked (and remembered, allow or deny). Throws unavailable (not remembered). */
  async decide(topic: string, signal?: AbortSignal): Promise<boolean> {
    return (await this.decideAll([topic], signal))[0]!;
  }

  /** The answers for `topics`, in order: those not remembered are asked in one call (and remembered). Throws unavailable. */
  async decideAll(topics: readonly string[], signal?: AbortSignal): Promise<boolean[]> {
    const now = this.now();
    const answers = topics.map((t) => this.cached(t, now));
    const unknown = [...new Set(topics.filter((_, i) => answers[i] === undefined))];
    if (unknown.length === 0) return answers as boolean[];
    const asked = await this.fn.allows(this.subject, unknown, this.key, signal);
    const at = this.now();
    const got = new Map<string, boolean>();
    unknown.forEach((t, i) => {
      got.set(t, asked[i]!);
      if (this.answers.size >= DECISIONS_MAX) this.answers.delete(this.answers.keys().next().value!);
      this.answers.set(t, [asked[i]!, at]);
    });
    return topics.map((t, i) => answers[i] ?? got.get(t)!);
  }
}
