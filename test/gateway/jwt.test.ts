/**
 * JWT verification (src/gateway/jwt.ts) against a JWKS served over real HTTP: each key
 * source accepts only its own algorithms (`alg: none` and algorithm confusion fail), secrets
 * rotate, `exp`/`nbf` have a 5 s leeway, an expired token is reported with its verified
 * claims, an unknown `kid` refetches the key set at most once per 30 s, and a key set that
 * cannot be fetched is `unavailable`, not the token's fault.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, exportSPKI, generateKeyPair, type JWK, type JWTPayload, SignJWT, UnsecuredJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { JWT_LEEWAY_S, JwtVerifier, looksLikeJwt } from '../../src/gateway/jwt.ts';
import { until } from '../support/herald.ts';

const SECRETS = ['jwt-test-first-secret-0123456789abcdef', 'jwt-test-second-secret-0123456789abcdef'];
const now = () => Math.floor(Date.now() / 1000);

/** A JWKS endpoint whose keys the test changes, counting fetches; `down` answers 500. */
let keys: JWK[] = [];
let fetches = 0;
let down = false;
let server: http.Server;
let url: string;

async function rsaKey(kid: string) {
  const { privateKey, publicKey } = await generateKeyPair('RS256', { extractable: true });
  return { privateKey, publicKey, jwk: { ...(await exportJWK(publicKey)), kid, alg: 'RS256' } };
}

function rs256(key: CryptoKey, kid: string, claims: JWTPayload = {}): Promise<string> {
  return new SignJWT({ sub: 'u', exp: now() + 60, ...claims }).setProtectedHeader({ alg: 'RS256', kid }).sign(key);
}

function hs256(secret: string, claims: JWTPayload = {}): Promise<string> {
  return new SignJWT({ sub: 'u', exp: now() + 60, ...claims }).setProtectedHeader({ alg: 'HS256' }).sign(new TextEncoder().encode(secret));
}

beforeAll(async () => {
  server = http.createServer((_req, res) => {
    fetches++;
    if (down) return void res.writeHead(500).end();
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks`;
});
afterAll(() => new Promise((resolve) => server.close(resolve)));

const settings = { jwtSecrets: [] as string[], jwtJwksUrl: undefined as string | undefined, jwtAudience: undefined, jwtIssuer: undefined };

describe('JwtVerifier', () => {
  it('is off without secrets or a key set', () => {
    expect(JwtVerifier.create(settings)).toBeNull();
  });

  it('tells a compact JWS by its shape', () => {
    expect(['a.b.c', 'eyJ.eyJ.', 'a.b', 'a.b.c.d', 'a b.c.d', 'plain-token'].map(looksLikeJwt)).toEqual([true, true, false, false, false, false]);
  });

  it('accepts HS256 under either secret (rotation) and returns the claims', async () => {
    const v = JwtVerifier.create({ ...settings, jwtSecrets: SECRETS })!;
    for (const secret of SECRETS) {
      const { claims, expired } = await v.verify(await hs256(secret, { herald: { subscribe: ['a'] } }));
      expect([claims.sub, claims.herald, expired]).toEqual(['u', { subscribe: ['a'] }, false]);
    }
  });

  it('refuses a bad signature, alg none, a non-JWT and an algorithm its key source does not take, with 401', async () => {
    const v = JwtVerifier.create({ ...settings, jwtSecrets: SECRETS })!;
    const { privateKey } = await rsaKey('x');
    for (const token of [
      await hs256('a-third-secret-nobody-configured-0123456'),
      new UnsecuredJWT({ sub: 'u' }).encode(),
      'not.a.jwt',
      await rs256(privateKey, 'x'),
    ]) {
      await expect(v.verify(token), token).rejects.toMatchObject({ code: 'HERALD_ERR_UNAUTHORIZED' });
    }
  });

  it('refuses algorithm confusion: an HS256 token "signed" with the key set’s public key', async () => {
    const { publicKey, jwk } = await rsaKey('k1');
    keys = [jwk];
    const pem = new TextEncoder().encode(await exportSPKI(publicKey));
    const forged = await new SignJWT({ sub: 'u', exp: now() + 60 }).setProtectedHeader({ alg: 'HS256', kid: 'k1' }).sign(pem);
    // Only a key set: HS256 is not accepted at all.
    await expect(JwtVerifier.create({ ...settings, jwtJwksUrl: url })!.verify(forged)).rejects.toMatchObject({
      code: 'HERALD_ERR_UNAUTHORIZED',
      message: expect.stringContaining('"HS256" is not accepted'),
    });
    // Secrets too: it is checked against the secrets, where it fails.
    await expect(JwtVerifier.create({ ...settings, jwtSecrets: SECRETS, jwtJwksUrl: url })!.verify(forged)).rejects.toMatchObject({
      code: 'HERALD_ERR_UNAUTHORIZED',
      message: expect.stringContaining('signature verification failed'),
    });
  });

  it('checks aud and iss when configured', async () => {
    const v = JwtVerifier.create({ ...settings, jwtSecrets: SECRETS, jwtAudience: 'app', jwtIssuer: 'https://issuer' })!;
    await expect(v.verify(await hs256(SECRETS[0]!, { aud: 'app', iss: 'https://issuer' }))).resolves.toMatchObject({ expired: false });
    for (const claims of [{ aud: 'other', iss: 'https://issuer' }, { aud: 'app', iss: 'https://other' }, { iss: 'https://issuer' }]) {
      await expect(v.verify(await hs256(SECRETS[0]!, claims)), JSON.stringify(claims)).rejects.toMatchObject({ code: 'HERALD_ERR_UNAUTHORIZED' });
    }
  });

  it(`honours exp and nbf with ${JWT_LEEWAY_S} s of leeway; an expired token comes back marked, with its claims`, async () => {
    const v = JwtVerifier.create({ ...settings, jwtSecrets: SECRETS })!;
    await expect(v.verify(await hs256(SECRETS[0]!, { exp: now() - JWT_LEEWAY_S + 2 }))).resolves.toMatchObject({ expired: false });
    await expect(v.verify(await hs256(SECRETS[0]!, { exp: now() - JWT_LEEWAY_S - 2, sub: 'late' }))).resolves.toMatchObject({
      expired: true,
      claims: { sub: 'late' },
    });
    await expect(v.verify(await hs256(SECRETS[0]!, { nbf: now() + JWT_LEEWAY_S - 2 }))).resolves.toMatchObject({ expired: false });
    await expect(v.verify(await hs256(SECRETS[0]!, { nbf: now() + JWT_LEEWAY_S + 5 }))).rejects.toMatchObject({ code: 'HERALD_ERR_UNAUTHORIZED' });
    // An expired token under a bad signature is a bad token, not an expired one.
    await expect(v.verify(await hs256('a-third-secret-nobody-configured-0123456', { exp: now() - 60 }))).rejects.toMatchObject({
      code: 'HERALD_ERR_UNAUTHORIZED',
    });
  });

  it('fetches the key set once, refetches it for an unknown kid once the cooldown allows, and no more often', async () => {
    const first = await rsaKey('first');
    const second = await rsaKey('second');
    const third = await rsaKey('third');
    keys = [first.jwk];
    fetches = 0;
    const v = JwtVerifier.create({ ...settings, jwtJwksUrl: url }, { jwksRefetchMinMs: 1000 })!;
    await expect(v.verify(await rs256(first.privateKey, 'first'))).resolves.toMatchObject({ expired: false, claims: { sub: 'u' } });
    await v.verify(await rs256(first.privateKey, 'first'));
    expect(fetches).toBe(1);
    // A key published upstream: within the cooldown its kid is refused without a fetch; after
    // it, the unknown kid fetches the set again, once.
    keys = [first.jwk, second.jwk];
    const token = await rs256(second.privateKey, 'second');
    await expect(v.verify(token)).rejects.toMatchObject({ code: 'HERALD_ERR_UNAUTHORIZED' });
    expect(fetches).toBe(1);
    await until(
      () =>
        v.verify(token).then(
          () => true,
          () => false,
        ),
      10_000,
      'the refetch after the cooldown',
    );
    expect(fetches).toBe(2);
    // Made-up kids in a flood cost no fetch within the next cooldown.
    keys = [first.jwk, second.jwk, third.jwk];
    for (let i = 0; i < 5; i++)
      await expect(v.verify(await rs256(third.privateKey, `made-up-${i}`))).rejects.toMatchObject({ code: 'HERALD_ERR_UNAUTHORIZED' });
    expect(fetches).toBe(2);
  });

  it('a key set that cannot be fetched is 503 unavailable (retryable), not a bad token', async () => {
    const { privateKey, jwk } = await rsaKey('k');
    keys = [jwk];
    down = true;
    try {
      await expect(JwtVerifier.create({ ...settings, jwtJwksUrl: url })!.verify(await rs256(privateKey, 'k'))).rejects.toMatchObject({
        code: 'HERALD_ERR_UNAVAILABLE',
        retryable: true,
      });
    } finally {
      down = false;
    }
  });
});
