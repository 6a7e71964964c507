/**
 * Users and their bearer tokens. A token is 32 random bytes (base64url, prefixed `hrld_` so
 * secret scanners can spot leaks), shown once at creation, and stored only as its SHA-256
 * plus a short display prefix (sql/008_token_prefix.sql) that names it in `herald token
 * list` and `revoke`. Lookup is by hash; the stored hash is then compared in constant time
 * (matchesAny). Every request looks its token up, so a revoked token fails at once.
 */
import { randomBytes } from 'node:crypto';
import type pg from 'pg';
import { HeraldError } from '../errors.ts';
import { bearerToken, hashToken, matchesAny } from '../http/auth.ts';
import { USER_NAME_RE } from './names.ts';

/** A user as jobs and permission checks see it. */
export interface User {
  name: string;
  trustee: boolean;
}

const TOKEN_PREFIX = 'hrld_';
/** Characters of a token kept in clear: `hrld_` and 8 of the 43 random ones (48 of 256 bits). */
const DISPLAY_PREFIX_CHARS = TOKEN_PREFIX.length + 8;
/** A whole token: the marker and 32 bytes in base64url. */
const TOKEN_CHARS = TOKEN_PREFIX.length + 43;
/** The least of a prefix `revoke` accepts, so a short one cannot match every token. */
const MIN_REF_CHARS = TOKEN_PREFIX.length + 4;

/** A token as `herald token list` shows it: never the token or its hash. */
export interface TokenInfo {
  id: number;
  user: string;
  trustee: boolean;
  /** `hrld_` and the next 8 characters; null for tokens created before prefixes were kept. */
  prefix: string | null;
  createdAt: Date;
  lastUsedAt: Date | null;
  revokedAt: Date | null;
}

/** What `revoke` did: the token, and whether it had been revoked already. */
export interface RevokeResult {
  token: TokenInfo;
  alreadyRevoked: boolean;
}

/** How stale a token's last_used_at may get before a request moves it forward. */
const LAST_USED_EVERY = '1 minute';

const INFO_COLUMNS = `t.id::int as id, t.user_name as "user", u.trustee, t.prefix,
  t.created_at as "createdAt", t.last_used_at as "lastUsedAt", t.revoked_at as "revokedAt"`;

/** Throws bad_request unless `name` is a user name (USER_NAME_RE). */
export function assertUserName(name: unknown): string {
  if (typeof name !== 'string' || !USER_NAME_RE.test(name)) {
    throw new HeraldError('HERALD_ERR_BAD_REQUEST', `user name ${JSON.stringify(name)?.slice(0, 80)} must match ${USER_NAME_RE.source}`);
  }
  return name;
}

/** Every query on herald.users and herald.tokens. */
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
       insert into herald.tokens (user_name, hash, prefix) select name, $3, $4 from u`,
      [userName, trustee, hashToken(token), token.slice(0, DISPLAY_PREFIX_CHARS)],
    );
    return token;
  }

  /** Tokens by id, oldest first: live ones, or revoked ones too with `includeRevoked`. */
  async list(opts: { user?: string; includeRevoked?: boolean } = {}): Promise<TokenInfo[]> {
    const { rows } = await this.pool.query<TokenInfo>(
      `select ${INFO_COLUMNS}
       from herald.tokens t join herald.users u on u.name = t.user_name
       where ($1::text is null or t.user_name = $1)
         and ($2 or t.revoked_at is null)
       order by t.id`,
      [opts.user ?? null, Boolean(opts.includeRevoked)],
    );
    return rows;
  }

  /**
   * Revokes one token, named by its id, its prefix (at least `hrld_` and 4 characters, as
   * `list` shows it), or the whole token. Throws 404 when nothing matches and 400 when a
   * prefix names more than one token.
   */
  async revoke(ref: string): Promise<RevokeResult> {
    let where: string;
    let param: string | Buffer;
    if (/^\d{1,18}$/.test(ref)) {
      where = 't.id = $1::bigint';
      param = ref;
    } else if (ref.startsWith(TOKEN_PREFIX) && ref.length === TOKEN_CHARS) {
      where = 't.hash = $1';
      param = hashToken(ref);
    } else if (ref.startsWith(TOKEN_PREFIX) && ref.length >= MIN_REF_CHARS) {
      // Longer than the stored prefix: the rest of the token cannot be checked, only its start.
      where = 'starts_with(t.prefix, $1)';
      param = ref.slice(0, DISPLAY_PREFIX_CHARS);
    } else {
      throw new HeraldError(
        'HERALD_ERR_BAD_REQUEST',
        `name the token by its id or its prefix (${TOKEN_PREFIX} and at least ${MIN_REF_CHARS - TOKEN_PREFIX.length} more characters), as \`herald token list\` shows them; got ${JSON.stringify(ref.slice(0, 20))}`,
      );
    }
    const { rows } = await this.pool.query<TokenInfo>(
      `select ${INFO_COLUMNS} from herald.tokens t join herald.users u on u.name = t.user_name where ${where} order by t.id`,
      [param],
    );
    if (rows.length === 0) {
      throw new HeraldError('HERALD_ERR_NOT_FOUND', `no token matches ${ref.slice(0, DISPLAY_PREFIX_CHARS)} (\`herald token list --all\` shows every token)`);
    }
    if (rows.length > 1) {
      throw new HeraldError('HERALD_ERR_BAD_REQUEST', `${ref} matches ${rows.length} tokens (ids ${rows.map((r) => r.id).join(', ')}): revoke one by its id`);
    }
    const found = rows[0]!;
    if (found.revokedAt) return { token: found, alreadyRevoked: true };
    const { rows: updated } = await this.pool.query<{ revokedAt: Date }>(
      `update herald.tokens set revoked_at = coalesce(revoked_at, now()) where id = $1 returning revoked_at as "revokedAt"`,
      [found.id],
    );
    return { token: { ...found, revokedAt: updated[0]!.revokedAt }, alreadyRevoked: false };
  }

  /** The user behind `Authorization: Bearer …`, or null when there is no header. Throws 401 on a bad token. */
  async authenticate(authorization: string | undefined): Promise<User | null> {
    const token = bearerToken(authorization);
    if (token === undefined) return null;
    const hash = hashToken(token);
    // A read, and a write of last_used_at only when it is a minute old: a write per request
    // made concurrent requests with one token (a CI job publishing in parallel) wait on its
    // row one commit at a time. An UPDATE that changes no row writes nothing and commits
    // without a flush.
    const { rows } = await this.pool.query<{ hash: Buffer; name: string; trustee: boolean }>({
      name: 'herald_token_authenticate',
      text: `with t as (
         select t.id, t.hash, t.last_used_at, u.name, u.trustee
         from herald.tokens t join herald.users u on u.name = t.user_name
         where t.hash = $1 and t.revoked_at is null
       ), touched as (
         update herald.tokens x set last_used_at = now()
         from t where x.id = t.id and (t.last_used_at is null or t.last_used_at < now() - interval '${LAST_USED_EVERY}')
       )
       select hash, name, trustee from t`,
      values: [hash],
    });
    const row = rows[0];
    if (!row || !matchesAny([row.hash], hash)) throw new HeraldError('HERALD_ERR_UNAUTHORIZED', 'the bearer token is not valid');
    return { name: row.name, trustee: row.trustee };
  }

  /** Whether a user of that name exists. */
  async userExists(name: string): Promise<boolean> {
    const { rowCount } = await this.pool.query('select 1 from herald.users where name = $1', [name]);
    return rowCount === 1;
  }
}

/** Throws 401 unless a user is present. */
export function requireUser(user: User | null): User {
  if (!user)
    throw new HeraldError(
      'HERALD_ERR_UNAUTHORIZED',
      'this operation needs a bearer token: send Authorization: Bearer <token> (`herald token create --user NAME`)',
    );
  return user;
}
