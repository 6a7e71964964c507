/**
 * JWT verification (with `jose`): HS256 under the shared secrets (HERALD_JWT_SECRETS, several
 * for rotation), RS256, ES256 and EdDSA under the keys of a JSON Web Key Set
 * (HERALD_JWT_JWKS_URL). The token's `alg` picks the key source, and each source accepts only
 * its own algorithms: `alg: none` is never accepted, and an HS256 token "signed" with a public
 * key (algorithm confusion) is checked against the secrets, where it fails. `exp` and `nbf`
 * are honoured with JWT_LEEWAY_S of clock skew; `aud` and `iss` when configured.
 */
import { createRemoteJWKSet, decodeProtectedHeader, errors, type JWTPayload, jwtVerify } from 'jose';
import type { Config } from '../config.ts';
import { coerceError, HeraldError } from '../errors.ts';

/**
 * Clock skew allowed between the issuer and Herald on `exp` and `nbf`, in seconds: a token
 * is accepted until exp + 5 s (and the stream it opens ends then, see Subject.expiresAtMs).
 * Seconds, not minutes: a stolen token should not outlive its `exp` by much.
 */
export const JWT_LEEWAY_S = 5;

/** The algorithms a JWKS key may sign with (HS256 goes to the secrets, nothing else is accepted). */
const ASYMMETRIC_ALGS = ['RS256', 'ES256', 'EdDSA'];

/**
 * How often an unknown `kid` may refetch the JWKS, in ms: a new key is picked up within this
 * after it is published, and tokens with made-up `kid`s cost at most one fetch per interval.
 */
const JWKS_REFETCH_MIN_MS = 30_000;
/** The JWKS is fetched again after this long even without an unknown `kid` (keys retired upstream go). */
const JWKS_MAX_AGE_MS = 10 * 60_000;

/** The JWT settings of one process. */
export type JwtSettings = Pick<Config, 'jwtSecrets' | 'jwtJwksUrl' | 'jwtAudience' | 'jwtIssuer'>;

/** Tuning for tests: how soon an unknown `kid` may refetch the key set (default JWKS_REFETCH_MIN_MS). */
export interface JwtOptions {
  jwksRefetchMinMs?: number;
}

/** A verified token's claims, or an expired one's (signature checked, only `exp` is past). */
export interface VerifiedJwt {
  readonly claims: JWTPayload;
  /** True when the signature and every claim hold but `exp` (plus the leeway) has passed. */
  readonly expired: boolean;
}

/** True when `token` has the shape of a compact JWS (three base64url parts). */
export function looksLikeJwt(token: string): boolean {
  return /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/.test(token);
}

/** Token faults: the token is wrong, not the key source (401). Anything else from a JWKS fetch is 503. */
const TOKEN_FAULTS = new Set([
  errors.JWSSignatureVerificationFailed.code,
  errors.JWSInvalid.code,
  errors.JWTInvalid.code,
  errors.JWTClaimValidationFailed.code,
  errors.JOSEAlgNotAllowed.code,
  errors.JOSENotSupported.code,
  errors.JWKSNoMatchingKey.code,
  errors.JWKSMultipleMatchingKeys.code,
  errors.JWKInvalid.code,
]);

/** Verifies JWTs under the configured secrets and key set. */
export class JwtVerifier {
  private readonly secrets: Uint8Array[];
  private readonly jwks: ReturnType<typeof createRemoteJWKSet> | undefined;
  private readonly options: { audience?: string; issuer?: string; clockTolerance: number };

  private constructor(settings: JwtSettings, { jwksRefetchMinMs = JWKS_REFETCH_MIN_MS }: JwtOptions) {
    this.secrets = settings.jwtSecrets.map((s) => new TextEncoder().encode(s));
    this.jwks = settings.jwtJwksUrl
      ? createRemoteJWKSet(new URL(settings.jwtJwksUrl), { cooldownDuration: jwksRefetchMinMs, cacheMaxAge: JWKS_MAX_AGE_MS })
      : undefined;
    this.options = {
      ...(settings.jwtAudience ? { audience: settings.jwtAudience } : {}),
      ...(settings.jwtIssuer ? { issuer: settings.jwtIssuer } : {}),
      clockTolerance: JWT_LEEWAY_S,
    };
  }

  /** A verifier, or null when no JWT is accepted (no secrets and no key set). */
  static create(settings: JwtSettings, options: JwtOptions = {}): JwtVerifier | null {
    return settings.jwtSecrets.length > 0 || settings.jwtJwksUrl ? new JwtVerifier(settings, options) : null;
  }

  /**
   * Verifies `token`. Throws unauthorized for a token that is malformed, unsigned, signed
   * with an algorithm or key not accepted, or whose claims fail (`nbf`, `aud`, `iss`), and
   * unavailable when the key set cannot be fetched. An expired token is returned with
   * `expired` (its claims verified): the caller decides whether that is an error yet.
   */
  async verify(token: string): Promise<VerifiedJwt> {
    let alg: unknown;
    try {
      alg = decodeProtectedHeader(token).alg;
    } catch (err) {
      throw new HeraldError('HERALD_ERR_UNAUTHORIZED', 'the token is not a valid JWT: its header does not decode', {}, { cause: err });
    }
    if (alg === 'HS256' && this.secrets.length > 0) return this.verifyWithSecrets(token);
    if (typeof alg === 'string' && ASYMMETRIC_ALGS.includes(alg) && this.jwks) return this.verifyWithKeySet(token);
    throw new HeraldError('HERALD_ERR_UNAUTHORIZED', `the token's alg ${JSON.stringify(alg)?.slice(0, 20)} is not accepted: sign with ${this.accepted()}`);
  }

  private accepted(): string {
    return [...(this.secrets.length > 0 ? ['HS256'] : []), ...(this.jwks ? ASYMMETRIC_ALGS : [])].join(', ');
  }

  /** Each secret in turn (rotation): only a bad signature moves on to the next. */
  private async verifyWithSecrets(token: string): Promise<VerifiedJwt> {
    let last: unknown;
    for (const secret of this.secrets) {
      try {
        return await this.check(() => jwtVerify(token, secret, { ...this.options, algorithms: ['HS256'] }));
      } catch (err) {
        if ((err as { cause?: unknown }).cause instanceof errors.JWSSignatureVerificationFailed) last = err;
        else throw err;
      }
    }
    throw last;
  }

  private verifyWithKeySet(token: string): Promise<VerifiedJwt> {
    return this.check(() => jwtVerify(token, this.jwks!, { ...this.options, algorithms: ASYMMETRIC_ALGS }));
  }

  /** Runs one verification and maps jose's outcome onto Herald's errors. */
  private async check(verify: () => Promise<{ payload: JWTPayload }>): Promise<VerifiedJwt> {
    try {
      return { claims: (await verify()).payload, expired: false };
    } catch (err) {
      // Thrown only after the signature and the other claims were checked.
      if (err instanceof errors.JWTExpired) return { claims: err.payload, expired: true };
      const code = (err as { code?: unknown }).code;
      if (typeof code === 'string' && TOKEN_FAULTS.has(code)) {
        throw new HeraldError('HERALD_ERR_UNAUTHORIZED', `the token is not valid: ${coerceError(err).message}`, {}, { cause: err });
      }
      // The key set could not be fetched or read (timeout, refused, not 200, not JSON): not
      // the token's fault, and another try may work.
      throw new HeraldError(
        'HERALD_ERR_UNAVAILABLE',
        `the JWT key set could not be fetched: ${coerceError(err).message}; retry shortly`,
        { retryAfterS: 1 },
        { cause: err },
      );
    }
  }
}
