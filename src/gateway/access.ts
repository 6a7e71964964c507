/**
 * Who may read which topics. Topics are public unless they fall under a configured private
 * prefix (`HERALD_PRIVATE_TOPIC_PREFIXES`, e.g. `private:`); those need a read token
 * (`Authorization: Bearer …` or `?token=`). A pattern that could match a private topic
 * (`*`, `priv*`, `private:*`) needs the token too. Every transport asks the same question here.
 */
import type { Config } from '../config.ts';
import { HeraldError } from '../errors.ts';
import type { TopicFilter } from '../events/topic.ts';
import { bearerToken, TokenSet } from '../http/auth.ts';

export interface Reader {
  /** True when the client presented a valid read token. */
  readonly trusted: boolean;
}

export class TopicAccess {
  private readonly prefixes: readonly string[];
  private readonly tokens: TokenSet;

  constructor(config: Pick<Config, 'privateTopicPrefixes' | 'readTokens'>) {
    this.prefixes = config.privateTopicPrefixes;
    this.tokens = new TokenSet(config.readTokens);
  }

  /**
   * The reader behind a request: no token is an anonymous reader; a token that is not a
   * read token is 401 (a typo should not silently downgrade to public access).
   */
  authenticate(authorization: string | undefined, queryToken: unknown): Reader {
    const token = bearerToken(authorization) ?? (typeof queryToken === 'string' && queryToken !== '' ? queryToken : undefined);
    if (token === undefined) return { trusted: false };
    if (!this.tokens.matches(token)) throw new HeraldError('HERALD_ERR_UNAUTHORIZED', 'the token is not a valid read token');
    return { trusted: true };
  }

  /** Throws forbidden if `filter` reaches a private topic and the reader is not trusted. */
  authorize(filter: TopicFilter, reader: Reader): void {
    if (reader.trusted || this.prefixes.length === 0) return;
    const blocked = filter.all
      ? '*'
      : ([...filter.exact].find((t) => this.isPrivate(t)) ??
        filter.prefixes.find((q) => this.prefixes.some((p) => q.startsWith(p) || p.startsWith(q)))?.concat('*'));
    if (blocked !== undefined) {
      throw new HeraldError(
        'HERALD_ERR_FORBIDDEN',
        `${JSON.stringify(blocked)} reaches private topics (${this.prefixes.map((p) => `${p}*`).join(', ')}): send a read token, or narrow the filter`,
      );
    }
  }

  private isPrivate(topic: string): boolean {
    return this.prefixes.some((p) => topic.startsWith(p));
  }
}
