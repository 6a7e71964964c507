/**
 * Bearer tokens and the one constant-time compare. Configured tokens are kept only as SHA-256
 * hashes; a presented token is hashed and compared to every stored hash (matchesAny: no early
 * exit), so neither the token nor which entry matched leaks through timing.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { HeraldError } from '../errors.ts';

/** SHA-256 of a token: the only form in which tokens are kept (config and database alike). */
export const hashToken = (token: string) => createHash('sha256').update(token, 'utf8').digest();

/**
 * True if `given` equals any of `candidates`, compared in constant time against every one (no
 * early exit), so timing reveals neither the value nor which entry matched. A length mismatch
 * is false rather than timingSafeEqual's throw: lengths are fixed by the hash or HMAC and
 * tell nothing. Every secret comparison in Herald (read and publish tokens, user tokens,
 * webhook signatures) goes through here.
 */
export function matchesAny(candidates: readonly Buffer[], given: Buffer): boolean {
  let ok = false;
  for (const candidate of candidates) ok = (candidate.length === given.length && timingSafeEqual(candidate, given)) || ok;
  return ok;
}

/** A fixed set of accepted tokens (read or publish tokens from the configuration), held as hashes. */
export class TokenSet {
  private readonly hashes: Buffer[];

  constructor(tokens: readonly string[]) {
    this.hashes = tokens.map(hashToken);
  }

  /** How many tokens the set holds (0: the feature they gate is off). */
  get size(): number {
    return this.hashes.length;
  }

  /** True if `token` is one of the set. */
  matches(token: string): boolean {
    return matchesAny(this.hashes, hashToken(token));
  }
}

/** The token from `Authorization: Bearer …`, or undefined. */
export function bearerToken(header: string | undefined): string | undefined {
  if (!header) return undefined;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
  return m?.[1];
}

/** Throws 401 unless the request carries one of `tokens`. */
export function requireToken(tokens: TokenSet, header: string | undefined, what: string): void {
  const token = bearerToken(header);
  if (token === undefined) throw new HeraldError('HERALD_ERR_UNAUTHORIZED', `${what} needs a bearer token: send Authorization: Bearer <token>`);
  if (!tokens.matches(token)) throw new HeraldError('HERALD_ERR_UNAUTHORIZED', `the bearer token is not valid for ${what}`);
}
