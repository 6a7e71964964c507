/**
 * Users and their bearer tokens. A token is 32 random bytes (base64url, prefixed `hrld_` so
 * secret scanners can spot leaks), shown once at creation, and stored only as its SHA-256.
 * Lookup is by hash; the stored hash is then compared with timingSafeEqual.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import type pg from 'pg';
import { HeraldError } from '../errors.ts';
import { bearerToken, hashToken } from '../http/auth.ts';

export interface User {
  name: string;
  trustee: boolean;
}

const USER_RE = /^[a-z0-9][a-z0-9_-]{0,63}$/;
const TOKEN_PREFIX = 'hrld_';

export function assertUserName(name: unknown): string {
  if (typeof name !== 'string' || !USER_RE.test(name)) {
    throw new HeraldError('HERALD_ERR_BAD_REQUEST', `user name ${JSON.stringify(name)?.slice(0, 80)} must match ${USER_RE.source}`);
  }
  return name;
}


export class TokenStore {
  constructor(private readonly pool: pg.Pool) {}

  /** Creates (or updates) the user and a new token for it; returns the token, the only time it is visible. */
  async create(userName: string, trustee: boolean): Promise<string> {
    assertUserName(userName);
    const token = TOKEN_PREFIX + randomBytes(32).toString('base64url');
    await this.pool.query(
      `with u as (
         insert into herald.users (name, trustee) values ($1, $2)
         on conflict (name) do update set trustee = herald.users.trustee or excluded.trustee
         returning name)
       insert into herald.tokens (user_name, hash) select name, $3 from u`,
      [userName, trustee, hashToken(token)],
    );
    return token;
  }

  /** The user behind `Authorization: Bearer …`, or null when there is no header. Throws 401 on a bad token. */
  async authenticate(authorization: string | undefined): Promise<User | null> {
    const token = bearerToken(authorization);
    if (token === undefined) return null;
    const hash = hashToken(token);
    const { rows } = await this.pool.query<{ hash: Buffer; name: string; trustee: boolean }>(
      `update herald.tokens t set last_used_at = now()
       from herald.users u
       where t.hash = $1 and t.revoked_at is null and u.name = t.user_name
       returning t.hash, u.name, u.trustee`,
      [hash],
    );
    const row = rows[0];
    if (!row || !timingSafeEqual(row.hash, hash)) throw new HeraldError('HERALD_ERR_UNAUTHORIZED', 'the bearer token is not valid');
    return { name: row.name, trustee: row.trustee };
  }

  async userExists(name: string): Promise<boolean> {
    const { rowCount } = await this.pool.query('select 1 from herald.users where name = $1', [name]);
    return rowCount === 1;
  }
}

/** Throws 401 unless a user is present. */
export function requireUser(user: User | null): User {
  if (!user) throw new HeraldError('HERALD_ERR_UNAUTHORIZED', 'this operation needs a bearer token: send Authorization: Bearer <token> (`herald token create --user NAME`)');
  return user;
}
