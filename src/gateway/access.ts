/**
 * Who may read and who may write which topics: one place every transport and the publish
 * route ask (docs/auth.md).
 *
 * - Subjects. A request's token (`Authorization: Bearer …`, or `?token=` on the read routes,
 *   or a WebSocket `auth` message) is a static read token (HERALD_READ_TOKENS: a read grant
 *   of `*`), a static publish token (HERALD_PUBLISH_TOKENS: a publish grant of `*` outside
 *   the reserved namespaces), or a JWT (jwt.ts) with its grants in its claims
 *   (`herald.subscribe`, `herald.publish`); no token is the anonymous subject. A token that
 *   is none of these is 401: a typo must not silently downgrade to anonymous.
 * - Reads. Topics outside HERALD_PRIVATE_TOPIC_PREFIXES are public. A private topic is
 *   readable under a grant covering it, or when the operator's SQL function allows it
 *   (authz-function.ts). An exact topic that is not readable is 403; a pattern is narrowed to
 *   what the subject may read (anonymous `*` is every public topic): in the filter itself
 *   where a filter can say it (a private pattern becomes the grants inside it), and else by a
 *   ReadGate on every batch, which the stream policy applies on every transport.
 * - Writes. The reserved namespaces (grants.ts) are Herald's own; a publisher writes only
 *   within its grant, and `*` does not reach into a reserved namespace.
 */
import type { Config } from '../config.ts';
import { HeraldError } from '../errors.ts';
import type { Event } from '../events/event.ts';
import { isPrivateTopic, isValidTopic, TopicFilter } from '../events/topic.ts';
import { bearerToken, TokenSet } from '../http/auth.ts';
import type { Logger } from '../logger.ts';
import { AuthzFunction, type AuthzQueries, TopicDecisions } from './authz-function.ts';
import { Grants, reservedNamespaceOf } from './grants.ts';
import { JWT_LEEWAY_S, JwtVerifier, looksLikeJwt } from './jwt.ts';

/** How a subject proved who it is. */
export type SubjectKind = 'anonymous' | 'read-token' | 'publish-token' | 'jwt';

/** Who is asking, and what it is granted. */
export interface Subject {
  readonly kind: SubjectKind;
  /** The JWT's `sub`, or null. */
  readonly sub: string | null;
  /** The JWT's claims ({} for other subjects), as HERALD_AUTHZ_FUNCTION is given them. */
  readonly claims: Readonly<Record<string, unknown>>;
  readonly read: Grants;
  readonly publish: Grants;
  /** When the credentials stop being valid (epoch ms, the JWT's `exp` plus the leeway), or null: never. */
  readonly expiresAtMs: number | null;
}

const subject = (kind: SubjectKind, read: Grants, publish: Grants): Subject => Object.freeze({ kind, sub: null, claims: {}, read, publish, expiresAtMs: null });

/** No token: reads public topics, publishes nothing. (Herald's own readers need no subject: subscribe.ts.) */
const ANONYMOUS = subject('anonymous', Grants.NONE, Grants.NONE);
const READ_TOKEN = subject('read-token', Grants.ALL, Grants.NONE);
const PUBLISH_TOKEN = subject('publish-token', Grants.NONE, Grants.ALL);

/** One connection's reader: its subject, and the function's answers for it on this connection. */
export interface Reader {
  readonly subject: Subject;
  /** Null when no HERALD_AUTHZ_FUNCTION is set. */
  readonly decisions: TopicDecisions | null;
}

/** What a reader's filter becomes: narrowed where a filter can say it, gated where it cannot. */
export interface ReadPlan {
  /** The filter the Subscription reads (catch-up reads stay index reads of it). */
  readonly filter: TopicFilter;
  /** The per-event check the filter could not express, or null when every event it matches is readable. */
  readonly gate: ReadGate | null;
}

const NOTHING: readonly Event[] = Object.freeze([]);

/**
 * The per-event half of narrowing: which events of a batch the reader may read. Public
 * topics, granted topics and exact topics allowed at subscribe pass; other private topics
 * pass on the function's remembered answer, and stop the batch where an answer is missing
 * (the stream policy asks, then goes on: pass() again from there).
 */
export class ReadGate {
  /** The answer decide() just got, used by the next pass() whatever the TTL says. */
  private fresh: { topic: string; allowed: boolean } | null = null;

  /** Built by TopicAccess.authorizeRead. */
  constructor(
    private readonly isPrivate: (topic: string) => boolean,
    private readonly grants: Grants,
    /** Private exact topics the function allowed at subscribe. */
    private readonly allowed: ReadonlySet<string>,
    private readonly decisions: TopicDecisions | null,
  ) {}

  /**
   * Splits a batch in id order: `visible`, the readable events before the first whose topic
   * awaits an answer, and `rest`, the events from that one on ([] when none). `visible` is
   * the batch itself when every event passes (no copy on the live path).
   */
  pass(events: readonly Event[]): { visible: readonly Event[]; rest: readonly Event[] } {
    const now = Date.now();
    let kept: Event[] | null = null;
    try {
      for (let i = 0; i < events.length; i++) {
        const e = events[i]!;
        const verdict = this.verdict(e.topic, now);
        if (verdict === undefined) return { visible: kept ?? events.slice(0, i), rest: events.slice(i) };
        if (verdict) kept?.push(e);
        else kept ??= events.slice(0, i);
      }
      return { visible: kept ?? events, rest: NOTHING };
    } finally {
      this.fresh = null;
    }
  }

  /** Asks the function about `topic` (the first of a pass()'s `rest`). Throws unavailable. */
  async decide(topic: string, signal?: AbortSignal): Promise<void> {
    const allowed = await this.decisions!.decide(topic, signal);
    this.fresh = { topic, allowed };
  }

  private verdict(topic: string, now: number): boolean | undefined {
    if (!this.isPrivate(topic) || this.grants.covers(topic) || this.allowed.has(topic)) return true;
    if (this.decisions === null) return false;
    return this.decisions.cached(topic, now) ?? (this.fresh?.topic === topic ? this.fresh.allowed : undefined);
  }
}

/** Where TopicAccess asks HERALD_AUTHZ_FUNCTION, and where it reports the function failing. */
export interface AccessDeps {
  /** The catch-up reads' runner (the function's calls share its pool, timeout and fair queue). */
  readonly queries?: AuthzQueries | undefined;
  readonly logger?: Pick<Logger, 'warn'> | undefined;
}

type AccessSettings = Pick<
  Config,
  'privateTopicPrefixes' | 'readTokens' | 'publishTokens' | 'jwtSecrets' | 'jwtJwksUrl' | 'jwtAudience' | 'jwtIssuer' | 'authzFunction' | 'authzCacheTtlMs'
>;

/** The access rules of this process: authenticates subjects, plans reads, authorizes publishes. */
export class TopicAccess {
  private readonly prefixes: readonly string[];
  private readonly readTokens: TokenSet;
  private readonly publishTokens: TokenSet;
  private readonly jwt: JwtVerifier | null;
  private readonly fn: AuthzFunction | null;

  /** Takes the rules from the configuration; `deps.queries` is required when HERALD_AUTHZ_FUNCTION is set. */
  constructor(config: AccessSettings, deps: AccessDeps = {}) {
    this.prefixes = config.privateTopicPrefixes;
    this.readTokens = new TokenSet(config.readTokens);
    this.publishTokens = new TokenSet(config.publishTokens);
    this.jwt = JwtVerifier.create(config);
    if (config.authzFunction !== undefined && deps.queries === undefined) {
      throw new HeraldError('HERALD_ERR_CONFIG', 'HERALD_AUTHZ_FUNCTION is set but no database runner was given to TopicAccess');
    }
    this.fn =
      config.authzFunction !== undefined && deps.queries !== undefined
        ? new AuthzFunction(config.authzFunction, deps.queries, config.authzCacheTtlMs, deps.logger ?? { warn: () => undefined })
        : null;
  }

  /** True when `topic` lies under a private prefix. */
  isPrivate(topic: string): boolean {
    return isPrivateTopic(topic, this.prefixes);
  }

  /**
   * The subject behind a read request: no token (or an empty `token=`) is anonymous. With
   * `allowExpired` (a WebSocket upgrade: the connection may `auth` again) an expired JWT is
   * returned as it is, and every subscribe under it answers token_expired; otherwise it is
   * 401 token_expired here.
   */
  async authenticate(authorization: string | undefined, queryToken: unknown, { allowExpired = false } = {}): Promise<Subject> {
    const token = bearerToken(authorization) ?? (typeof queryToken === 'string' && queryToken !== '' ? queryToken : undefined);
    if (token === undefined) return ANONYMOUS;
    return this.readerOf(token, allowExpired);
  }

  /** The subject of a token a reader sent (a WebSocket `auth` message, a read request). */
  async readerOf(token: string, allowExpired = false): Promise<Subject> {
    if (this.readTokens.matches(token)) return READ_TOKEN;
    if (this.jwt !== null && looksLikeJwt(token)) return this.jwtSubject(this.jwt, token, allowExpired);
    throw new HeraldError('HERALD_ERR_UNAUTHORIZED', this.jwt ? 'the token is neither a read token nor a JWT' : 'the token is not a valid read token');
  }

  /** One connection's reader for `subject`: the function's answers are kept per connection and subject. */
  reader(subject: Subject, readKey: string): Reader {
    return { subject, decisions: this.fn && new TopicDecisions(this.fn, subject, readKey) };
  }

  /**
   * What `reader` reads of `filter`: token_expired once its credentials have expired; 403 for
   * an exact private topic it may not read (asking the function, which may fail with
   * unavailable); otherwise the filter narrowed to what it may read, and the gate for the
   * rest (see ReadGate). Every transport's every subscribe comes here, so re-subscribes and
   * narrowing (unsubscribe) are planned afresh.
   */
  async authorizeRead(filter: TopicFilter, { subject, decisions }: Reader, signal?: AbortSignal): Promise<ReadPlan> {
    assertCurrent(subject);
    if (this.prefixes.length === 0 || subject.read.all) return { filter, gate: null };
    const allowed = new Set<string>();
    for (const topic of filter.exact) {
      if (!this.isPrivate(topic) || subject.read.covers(topic)) continue;
      if (decisions !== null && (await decisions.decide(topic, signal))) allowed.add(topic);
      else throw this.forbidden(topic, subject);
    }
    const entries = [...filter.exact];
    let narrowed = false;
    let gated = false;
    for (const q of filter.all ? [''] : filter.prefixes) {
      const reaches = this.prefixes.some((p) => p.startsWith(q) || q.startsWith(p));
      if (!reaches || subject.read.coversPrefix(q)) entries.push(`${q}*`);
      else if (decisions === null && this.prefixes.some((p) => q.startsWith(p))) {
        // Wholly private, and only grants can open it: the grants inside it are the pattern.
        entries.push(...subject.read.within(q));
        narrowed = true;
      } else {
        // Public and private topics together (`*`, `priv*`), or private ones the function
        // may open: read as asked, each event checked.
        entries.push(`${q}*`);
        gated = true;
      }
    }
    return {
      filter: !narrowed ? filter : entries.length === 0 ? TopicFilter.NONE : TopicFilter.parse(entries),
      gate: gated ? new ReadGate((t) => this.isPrivate(t), subject.read, allowed, decisions) : null,
    };
  }

  /**
   * Which of the exact `topics` `reader` may read, in order: public, granted, or allowed by
   * the function (asked once for all the rest). For reads that are not streams, such as a
   * product's own records of a topic (the job routes: `job:<id>`). Throws token_expired once
   * the credentials have expired, unavailable when the function fails.
   */
  async readable(topics: readonly string[], { subject, decisions }: Reader, signal?: AbortSignal): Promise<boolean[]> {
    assertCurrent(subject);
    const open = topics.map((t) => subject.read.all || !this.isPrivate(t) || subject.read.covers(t));
    const ask = topics.filter((_, i) => !open[i]);
    if (ask.length === 0 || decisions === null) return open;
    const answers = await decisions.decideAll(ask, signal);
    let k = 0;
    return open.map((ok) => ok || answers[k++]!);
  }

  /**
   * The subject behind a publish: a static publish token (at once, on the publish route's
   * hot path) or a JWT (a promise: verified asynchronously). Throws 403 when HTTP publishing
   * is off (no publish tokens and no JWT accepted), 401 without a token or with one that is
   * neither; the promise rejects with 401 for a bad JWT, token_expired for an expired one.
   */
  authenticatePublisher(authorization: string | undefined, what: string): Subject | Promise<Subject> {
    if (this.publishTokens.size === 0 && this.jwt === null) {
      throw new HeraldError(
        'HERALD_ERR_FORBIDDEN',
        'publishing over HTTP is disabled: set HERALD_PUBLISH_TOKENS (or HERALD_JWT_SECRETS / HERALD_JWT_JWKS_URL) to enable it',
      );
    }
    const token = bearerToken(authorization);
    if (token === undefined) throw new HeraldError('HERALD_ERR_UNAUTHORIZED', `${what} needs a bearer token: send Authorization: Bearer <token>`);
    if (this.publishTokens.matches(token)) return PUBLISH_TOKEN;
    if (this.jwt !== null && looksLikeJwt(token)) return this.jwtSubject(this.jwt, token, false);
    throw new HeraldError('HERALD_ERR_UNAUTHORIZED', `the bearer token is not valid for ${what}`);
  }

  /**
   * Throws 403 unless `subject` may publish to every one of `topics`: within its publish
   * grant, and into a reserved namespace only when the grant names it (a static publish
   * token never does). The whole publish is refused: none of its events is appended.
   */
  authorizePublish(subject: Subject, topics: readonly string[]): void {
    for (const topic of topics) {
      // A malformed topic (`job:*`) is the log's to refuse, as 400 naming its field.
      if (!isValidTopic(topic) || subject.publish.coversPublish(topic)) continue;
      const ns = reservedNamespaceOf(topic);
      throw new HeraldError(
        'HERALD_ERR_FORBIDDEN',
        ns !== undefined
          ? `${JSON.stringify(topic)} is in ${ns.endsWith(':') ? `${ns}*` : ns}, which only Herald itself writes${subject.kind === 'jwt' ? " unless the token's publish claim names it" : ''}: publish under a topic of your own`
          : `${JSON.stringify(topic)} is outside this token's publish grant (${subject.publish.entries().join(', ') || 'none'})`,
      );
    }
  }

  private async jwtSubject(jwt: JwtVerifier, token: string, allowExpired: boolean): Promise<Subject> {
    const { claims, expired } = await jwt.verify(token);
    const herald = claims.herald ?? {};
    if (typeof herald !== 'object' || herald === null || Array.isArray(herald)) {
      throw new HeraldError('HERALD_ERR_UNAUTHORIZED', "the token's herald claim must be an object: {subscribe: [...], publish: [...]}");
    }
    const grants = herald as { subscribe?: unknown; publish?: unknown };
    const s: Subject = Object.freeze({
      kind: 'jwt',
      sub: typeof claims.sub === 'string' ? claims.sub : null,
      claims,
      read: Grants.parse(grants.subscribe, 'herald.subscribe'),
      publish: Grants.parse(grants.publish, 'herald.publish'),
      expiresAtMs: typeof claims.exp === 'number' ? (claims.exp + JWT_LEEWAY_S) * 1000 : null,
    } satisfies Subject);
    if (expired && !allowExpired) throw tokenExpired(s.expiresAtMs);
    return s;
  }

  private forbidden(topic: string, s: Subject): HeraldError {
    return new HeraldError(
      'HERALD_ERR_FORBIDDEN',
      `${JSON.stringify(topic)} reaches private topics (${this.prefixes.map((p) => `${p}*`).join(', ')}) ${s.kind === 'anonymous' ? 'and no token was sent' : 'this token does not grant'}: send a token whose grants cover it, or subscribe to a pattern (narrowed to what you may read)`,
    );
  }
}

/** Throws token_expired once `s`'s credentials have expired. */
function assertCurrent(s: Subject, nowMs = Date.now()): void {
  if (s.expiresAtMs !== null && nowMs >= s.expiresAtMs) throw tokenExpired(s.expiresAtMs);
}

/** The error a stream or request under credentials that expired at `expiresAtMs` (epoch ms) ends with. */
export function tokenExpired(expiresAtMs: number | null): HeraldError {
  const at = expiresAtMs === null ? '' : ` at ${new Date(expiresAtMs).toISOString()}`;
  return new HeraldError('HERALD_ERR_TOKEN_EXPIRED', `the token expired${at}: get a new one and resume from your position`);
}
