/**
 * Bearer tokens. Configured tokens are kept only as SHA-256 hashes; a presented token is
 * hashed and compared to every stored hash with timingSafeEqual (no early exit), so neither
 * the token nor which entry matched leaks through timing.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { HeraldError } from '../errors.ts';

/** SHA-256 of a token: the only form in which tokens are kept (config and database alike). */
export const hashToken = (token: string) => createHash('sha256').update(token, 'utf8').digest();

export class TokenSet {
  private readonly hashes: Buffer[];

  constructor(tokens: readonly string[]) {
    this.hashes = tokens.map(hashToken);
  }

  get size(): number {
    return this.hashes.length;
  }

  matches(token: string): boolean {
    const h = hashToken(token);
    let ok = false;
    for (const stored of this.hashes) ok = timingSafeEqual(stored, h) || ok;
    return ok;
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
