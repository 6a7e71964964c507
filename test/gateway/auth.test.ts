/**
 * Grants on every transport (issue 14, points 1–4; docs/auth.md): the same cases over a raw
 * WebSocket, SSE, polls, long-polls and the client library (test/support/transports.ts),
 * each with the exact events it must get. Every case reads a catch-up part (events committed
 * before it opened, read from the table: the catch-up window is off) and a live part, so
 * narrowing is checked on both paths.
 *
 * The server accepts HS256 tokens under two secrets, RS256 tokens under the keys of a JWKS
 * this file serves over real HTTP, an audience, and asks `app.can_read` (a SQL function in
 * the test database) about private topics the claims do not cover. Topics under `private:`
 * and `job:` are private.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, type JWTPayload, SignJWT, UnsecuredJWT } from 'jose';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';
import { startTestHerald, type TestHerald, until } from '../support/herald.ts';
import { openStream, type StreamEnd, type StreamOptions, TRANSPORTS, type TestStream, type TransportKind } from '../support/transports.ts';
import { openWs, type WsClient } from '../support/ws.ts';

const SECRET = 'auth-test-hs256-secret-0123456789abcdef';
const ROTATED = 'auth-test-hs256-secret-rotated-0123456789';
const READ_TOKEN = 'auth-test-read-token-0123';
const AUDIENCE = 'herald-test';

let db: TestDatabase;
let herald: TestHerald;
let admin: pg.Client;
let jwks: http.Server;
let rsaPrivate: CryptoKey;

beforeAll(async () => {
  db = await createTestDatabase();
  admin = new pg.Client({ connectionString: db.url });
  await admin.connect();
  // The operator's per-object check: it records each call, fails for private:fn:boom until
  // app.fixed has a row, lets alice read private:fn:yes (and boom), and grants job:<id> to
  // whoever submitted the job (the worked example of docs/auth.md).
  await admin.query(`
    create schema app;
    create table app.calls (subject text, topic text);
    create table app.fixed ();
    create function app.can_read(subject text, claims jsonb, topic text) returns boolean
    language plpgsql volatile as $$
    begin
      insert into app.calls values ($1, $3);
      if $3 = 'private:fn:boom' and not exists (select from app.fixed) then
        raise exception 'the permission service is down';
      end if;
      if $3 like 'job:%' then
        return exists (select from herald.jobs j where j.id = substring($3 from '^job:(\\d+)$')::bigint and j.submitted_by = $1);
      end if;
      return $1 = 'alice' and $3 in ('private:fn:yes', 'private:fn:boom');
    end $$;`);
  const { privateKey, publicKey } = await generateKeyPair('RS256', { extractable: true });
  rsaPrivate = privateKey;
  const jwk = { ...(await exportJWK(publicKey)), kid: 'k1', alg: 'RS256', use: 'sig' };
  jwks = http.createServer((_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: [jwk] })));
  await new Promise<void>((resolve) => jwks.listen(0, '127.0.0.1', resolve));
  herald = await startTestHerald(db.url, {
    checkpointIntervalMs: 100,
    catchUpWindowBytes: 0,
    privateTopicPrefixes: ['private:', 'job:'],
    readTokens: [READ_TOKEN],
    jwtSecrets: [SECRET, ROTATED],
    jwtJwksUrl: `http://127.0.0.1:${(jwks.address() as AddressInfo).port}/jwks.json`,
    jwtAudience: AUDIENCE,
    authzFunction: 'app.can_read',
    workers: 0,
  });
});
afterAll(async () => {
  await herald?.close();
  await admin?.end();
  await new Promise((resolve) => jwks?.close(resolve));
  await db?.drop();
});

const open: TestStream[] = [];
afterEach(() => {
  for (const s of open.splice(0)) s.close();
});
function stream(kind: TransportKind, opts: StreamOptions): TestStream {
  const s = openStream(kind, herald.url, opts);
  open.push(s);
  return s;
}

/** An HS256 token for `sub` with these read grants, for AUDIENCE, valid for a minute; `claims` override any of it. */
function hs256(sub: string, subscribe: string[] | undefined, claims: JWTPayload = {}, secret = SECRET): Promise<string> {
  return new SignJWT({ sub, aud: AUDIENCE, exp: Math.floor(Date.now() / 1000) + 60, herald: { subscribe }, ...claims })
    .setProtectedHeader({ alg: 'HS256' })
    .sign(new TextEncoder().encode(secret));
}

async function head(): Promise<number> {
  return (await herald.ctx.log.readHead()).head;
}

/** The topics every case reads: one public, two private under grants or not, two the function decides. */
const TOPICS = ['pub:a', 'private:mine', 'private:other', 'private:fn:yes', 'private:fn:no'];

async function emit(topics: readonly string[]): Promise<number[]> {
  return herald.ctx.log.emitMany(topics.map((topic) => ({ topic, type: 't' })));
}

/**
 * Commits TOPICS, opens the stream after the position before them (a catch-up read), commits
 * TOPICS again once it is open (live), and returns the ids it got once its position is past
 * both, with the ids of the topics it should have got.
 */
async function readBoth(kind: TransportKind, opts: Omit<StreamOptions, 'since'>, readable: readonly string[]): Promise<{ got: number[]; want: number[] }> {
  const since = await head();
  const before = await emit(TOPICS);
  const s = stream(kind, { ...opts, since });
  await s.opened;
  const after = await emit(TOPICS);
  const all = [...before, ...after];
  await s.until(() => (s.position ?? 0) >= all.at(-1)!, 'the position past both batches');
  const want = all.filter((_, i) => readable.includes(TOPICS[i % TOPICS.length]!));
  return { got: s.ids, want };
}

/** The transports whose refusals are HTTP answers (a refused WebSocket upgrade is one too, with its status). */
const OVER_HTTP: ReadonlySet<TransportKind> = new Set(['sse', 'poll', 'long-poll']);

/** A stream refused before it opened: the code, its retryable flag and, where the client can see it, the status. */
function expectRefusal(kind: TransportKind, end: StreamEnd, code: string, status: number, retryable = false): void {
  expect(end).toMatchObject({ code, retryable, received: 0 });
  // The client library reads a refused upgrade's status only; a raw WebSocket reads the answer.
  if (OVER_HTTP.has(kind)) expect(end.status).toBe(status);
}

describe('reading under grants, on every transport', () => {
  it.for(TRANSPORTS)('%s: anonymous reads every public topic with `*` (narrowed, not refused), and nothing private', async (kind) => {
    const { got, want } = await readBoth(kind, { topics: ['*'] }, ['pub:a']);
    expect(got).toEqual(want);
  });

  it.for(TRANSPORTS)('%s: anonymous, an exact private topic is 403 forbidden', async (kind) => {
    const s = stream(kind, { topics: ['private:mine'], since: await head() });
    expectRefusal(kind, await s.ended, 'forbidden', 403);
  });

  it.for(TRANSPORTS)('%s: a static read token reads every topic', async (kind) => {
    const { got, want } = await readBoth(kind, { topics: ['*'], token: READ_TOKEN }, TOPICS);
    expect(got).toEqual(want);
  });

  it.for(TRANSPORTS)('%s: a JWT reads the exact topic its grant covers, as `token=` or Authorization: Bearer', async (kind) => {
    const token = await hs256('alice', ['private:mine']);
    const { got, want } = await readBoth(kind, { topics: ['private:mine'], token }, ['private:mine']);
    expect(got).toEqual(want);
    if (kind === 'client') return;
    const viaHeader = await readBoth(kind, { topics: ['private:mine'], token, tokenIn: 'header' }, ['private:mine']);
    expect(viaHeader.got).toEqual(viaHeader.want);
  });

  it.for(TRANSPORTS)('%s: a JWT signed with the rotated (second) secret is accepted too', async (kind) => {
    const token = await hs256('alice', ['private:mine'], {}, ROTATED);
    const { got, want } = await readBoth(kind, { topics: ['private:mine'], token }, ['private:mine']);
    expect(got).toEqual(want);
  });

  it.for(TRANSPORTS)('%s: a JWT asking for an exact topic outside its grant (and the function) is 403', async (kind) => {
    const s = stream(kind, { topics: ['private:other'], since: await head(), token: await hs256('alice', ['private:mine']) });
    expectRefusal(kind, await s.ended, 'forbidden', 403);
  });

  it.for(TRANSPORTS)('%s: a pattern is narrowed to the grant plus what the function allows: `*` and `private:*`', async (kind) => {
    const token = await hs256('alice', ['private:mine']);
    const everything = await readBoth(kind, { topics: ['*'], token }, ['pub:a', 'private:mine', 'private:fn:yes']);
    expect(everything.got).toEqual(everything.want);
    const priv = await readBoth(kind, { topics: ['private:*'], token }, ['private:mine', 'private:fn:yes']);
    expect(priv.got).toEqual(priv.want);
  });

  it.for(TRANSPORTS)('%s: RS256 under a key from the JWKS served over HTTP reads within its grant', async (kind) => {
    const token = await new SignJWT({ herald: { subscribe: ['private:mine'] } })
      .setProtectedHeader({ alg: 'RS256', kid: 'k1' })
      .setSubject('rsa-user')
      .setAudience(AUDIENCE)
      .setExpirationTime('1m')
      .sign(rsaPrivate);
    const { got, want } = await readBoth(kind, { topics: ['private:*'], token }, ['private:mine']);
    expect(got).toEqual(want);
  });
});

describe('tokens that are refused, on every transport', () => {
  const cases: { name: string; token: () => Promise<string> }[] = [
    { name: 'a forged signature', token: () => hs256('alice', ['*'], {}, 'another-secret-of-the-same-length-0123456') },
    { name: 'alg none', token: async () => new UnsecuredJWT({ herald: { subscribe: ['*'] } }).setSubject('alice').setAudience(AUDIENCE).encode() },
    { name: 'a wrong audience', token: () => hs256('alice', ['*'], { aud: 'someone-else' }) },
    { name: 'a bad grant', token: async () => hs256('alice', ['Not A Topic']) },
  ];
  for (const c of cases) {
    it.for(TRANSPORTS)(`%s: ${c.name} is 401 unauthorized, even for a public topic`, async (kind) => {
      const s = stream(kind, { topics: ['pub:a'], since: await head(), token: await c.token() });
      const end = await s.ended;
      expectRefusal(kind, end, 'unauthorized', 401);
      if (kind === 'ws') expect(end.status).toBe(401);
    });
  }
});

/** The transports that hold a stream open (a poll answers and is asked again). */
const STREAMING: ReadonlySet<TransportKind> = new Set(['ws', 'sse', 'client']);

describe('a token that expires during a stream, on every transport', () => {
  it.for(TRANSPORTS)(
    '%s: delivery stops at the expiry with token_expired and a position from which a new token resumes with exactly the rest',
    async (kind) => {
      // Expired 3 s ago, accepted for the 5 s leeway: the stream ends 2–3 s from now.
      const exp = Math.floor(Date.now() / 1000) - 3;
      const since = await head();
      const s = stream(kind, { topics: ['*'], since, token: await hs256('alice', ['private:mine'], { exp }) });
      await s.opened;
      const before = await emit(['pub:a', 'private:mine', 'private:other']);
      await s.until(() => s.ids.length === 2, 'the readable events before the expiry');
      const end = await s.ended;
      expect(end).toMatchObject({ code: 'token_expired', retryable: false });
      if (OVER_HTTP.has(kind) && !STREAMING.has(kind)) expect(end.status).toBe(401);
      expect(Date.now()).toBeGreaterThanOrEqual((exp + 5) * 1000);
      expect(s.ids).toEqual([before[0], before[1]]);
      expect(end.position).toBeGreaterThanOrEqual(before[1]!);

      const rest = await emit(['private:mine', 'pub:b']);
      const again = stream(kind, { topics: ['*'], since: end.position, token: await hs256('alice', ['private:mine']) });
      await again.until(() => (again.position ?? 0) >= rest[1]!, 'the rest');
      expect(again.ids).toEqual(rest);
    },
  );

  it('client: with getToken it refreshes once over the same connection and resumes with every event once', async () => {
    const exp = Math.floor(Date.now() / 1000) - 3;
    let asked = 0;
    const s = stream('client', {
      topics: ['*'],
      since: await head(),
      token: await hs256('alice', ['private:mine'], { exp }),
      getToken: () => {
        asked++;
        return hs256('alice', ['private:mine']);
      },
    });
    await s.opened;
    const before = await emit(['pub:a', 'private:mine', 'private:other']);
    await until(() => asked === 1, 10_000, 'the refresh at the expiry');
    const after = await emit(['private:mine', 'private:other', 'pub:b']);
    await s.until(() => (s.position ?? 0) >= after[2]!, 'the events after the refresh');
    expect(s.ids).toEqual([before[0], before[1], after[0], after[2]]);
    expect(asked).toBe(1);
    expect(s.ends).toEqual([]);
  });

  it('client: a getToken that hands out expired tokens is asked once, then the error is fatal', async () => {
    const stale = Math.floor(Date.now() / 1000) - 3;
    let asked = 0;
    const s = stream('client', {
      topics: ['pub:*'],
      since: await head(),
      token: await hs256('alice', [], { exp: stale }),
      getToken: () => {
        asked++;
        return hs256('alice', [], { exp: Math.floor(Date.now() / 1000) - 60 });
      },
    });
    await s.opened;
    const end = await s.ended;
    expect(end).toMatchObject({ code: 'token_expired', retryable: false });
    expect(asked).toBe(1);
  });
});

describe('the authorization function, on every transport', () => {
  it.for(TRANSPORTS)('%s: allowing: an exact topic it allows streams', async (kind) => {
    const token = await hs256('alice', []);
    const { got, want } = await readBoth(kind, { topics: ['private:fn:yes'], token }, ['private:fn:yes']);
    expect(got).toEqual(want);
  });

  it.for(TRANSPORTS)('%s: denying: an exact topic it denies is 403', async (kind) => {
    const s = stream(kind, { topics: ['private:fn:no'], since: await head(), token: await hs256('alice', []) });
    expectRefusal(kind, await s.ended, 'forbidden', 403);
  });

  it.for(TRANSPORTS)('%s: failing at subscribe: an exact topic is 503 unavailable, retryable', async (kind) => {
    await admin.query('delete from app.fixed');
    const s = stream(kind, { topics: ['private:fn:boom'], since: await head(), token: await hs256('alice', []) });
    expectRefusal(kind, await s.ended, 'unavailable', 503, true);
  });

  it.for(TRANSPORTS)(
    '%s: failing on a pattern: delivery stops before the topic it could not decide, with unavailable; never cached, never an allow',
    async (kind) => {
      await admin.query('delete from app.fixed');
      const token = await hs256('alice', []);
      const since = await head();
      const s = stream(kind, { topics: ['private:fn:*'], since, token });
      await s.opened;
      const all = await emit(['private:fn:yes', 'private:fn:boom', 'private:fn:yes']);
      const end = await s.ended;
      expect(end).toMatchObject({ code: 'unavailable', retryable: true });
      // A stream writes what it could decide and stops before the rest; a poll's answer is the
      // 503 alone, and the poller resumes from its last `next`.
      const position = STREAMING.has(kind) ? all[1]! - 1 : since;
      expect(end.position).toBe(position);
      expect(s.ids).toEqual(all.filter((id) => id <= position));
      // Repaired, the same subject gets the rest: the failure was not remembered as a denial.
      await admin.query('insert into app.fixed default values');
      const again = stream(kind, { topics: ['private:fn:*'], since: position, token });
      await again.until(() => (again.position ?? 0) >= all[2]!, 'the rest');
      expect(again.ids).toEqual(all.filter((id) => id > position));
    },
  );
});

describe('the worked example of docs/auth.md: each user reads their own jobs', () => {
  it.for(TRANSPORTS)('%s: `job:*` narrows to the submitter’s jobs; another user’s job is 403', async (kind) => {
    const { rows } = await admin.query<{ id: string }>(
      `insert into herald.jobs (type, payload, submitted_by, max_attempts) values ('demo', '{}', 'alice', 1), ('demo', '{}', 'bob', 1) returning id`,
    );
    const [mine, bobs] = rows.map((r) => `job:${r.id}`) as [string, string];
    const token = await hs256('alice', []);
    const since = await head();
    const s = stream(kind, { topics: ['job:*'], since, token });
    await s.opened;
    const ids = await emit([mine, bobs, mine]);
    await s.until(() => (s.position ?? 0) >= ids[2]!, 'the three job events');
    expect(s.ids).toEqual([ids[0], ids[2]]);
    const refused = stream(kind, { topics: [bobs], since, token });
    expectRefusal(kind, await refused.ended, 'forbidden', 403);
  });
});

describe('the job routes read under the same rules as job:<id> (GET /api/v1/jobs, /jobs/<id>, /jobs/<id>/logs)', () => {
  it('a private job is 403 without a grant, 200 with one (Bearer or ?token=); the list holds only readable jobs; logs likewise', async () => {
    const { rows } = await admin.query<{ id: string }>(
      `insert into herald.jobs (type, payload, submitted_by, max_attempts) values ('demo', '{}', 'alice', 1), ('demo', '{}', 'bob', 1), ('demo', '{}', 'alice', 1) returning id`,
    );
    const [a1, b, a2] = rows.map((r) => Number(r.id)) as [number, number, number];
    await admin.query(`insert into herald.job_logs (job_id, level, message) values ($1, 30, 'alice line'), ($2, 30, 'bob line')`, [a1, b]);
    const alice = await hs256('alice', []);
    const get = async (path: string, token?: string, via: 'header' | 'query' = 'header') => {
      const url = new URL(`/api/v1${path}`, herald.url);
      if (token !== undefined && via === 'query') url.searchParams.set('token', token);
      const r = await fetch(url, { headers: token !== undefined && via === 'header' ? { authorization: `Bearer ${token}` } : {} });
      return { status: r.status, body: (await r.json()) as Record<string, unknown> };
    };
    const forbidden = { status: 403, body: { error: expect.objectContaining({ code: 'forbidden', retryable: false }) } };

    // Anonymous: 403 for the job, its logs and an id no job has (no existence oracle).
    for (const path of [`/jobs/${a1}`, `/jobs/${a1}/logs`, `/jobs/${a2 + 1000}`]) expect(await get(path)).toMatchObject(forbidden);
    // Alice: her jobs over either way of sending the token; bob's is 403.
    expect(await get(`/jobs/${a1}`, alice)).toMatchObject({ status: 200, body: { id: a1, type: 'demo' } });
    expect(await get(`/jobs/${a2}`, alice, 'query')).toMatchObject({ status: 200, body: { id: a2 } });
    expect((await get(`/jobs/${a1}/logs`, alice)).body.logs).toMatchObject([{ message: 'alice line' }]);
    expect(await get(`/jobs/${b}`, alice)).toMatchObject(forbidden);
    expect(await get(`/jobs/${b}/logs`, alice)).toMatchObject(forbidden);
    // The static read token is a grant of `*`.
    expect((await get(`/jobs/${b}/logs`, READ_TOKEN)).body.logs).toMatchObject([{ message: 'bob line' }]);

    // The list: the readable jobs among those examined; `next` moves past them all.
    const since = a1 - 1;
    const ids = async (token?: string) => {
      const { status, body } = await get(`/jobs?since=${since}&type=demo`, token);
      expect(status).toBe(200);
      return { ids: (body.jobs as { id: number }[]).map((j) => j.id).filter((id) => id <= a2), next: body.next };
    };
    expect(await ids()).toEqual({ ids: [], next: expect.any(Number) });
    expect((await ids()).next).toBeGreaterThanOrEqual(a2);
    expect((await ids(alice)).ids).toEqual([a1, a2]);
    expect((await ids(await hs256('bob', []))).ids).toEqual([b]);
    expect((await ids(READ_TOKEN)).ids).toEqual([a1, b, a2]);

    // A token that does not verify is 401, never a downgrade to anonymous.
    expect(await get(`/jobs/${a1}`, await hs256('alice', [], {}, 'not-the-secret-0123456789abcdefghij'))).toMatchObject({
      status: 401,
      body: { error: { code: 'unauthorized' } },
    });
  });
});

describe('narrowing in the filter itself (no authorization function), on every transport', () => {
  let plain: TestHerald;
  beforeAll(async () => {
    plain = await startTestHerald(db.url, {
      checkpointIntervalMs: 100,
      catchUpWindowBytes: 0,
      privateTopicPrefixes: ['private:'],
      jwtSecrets: [SECRET],
      workers: 0,
    });
  });
  afterAll(() => plain?.close());

  it.for(TRANSPORTS)('%s: a private pattern becomes the grants inside it (nothing for anonymous); a straddling one is checked per event', async (kind) => {
    const token = await hs256('alice', ['private:mine', 'private:team:*']);
    const cases: [StreamOptions, string[]][] = [
      [{ topics: ['private:*'] }, []],
      [{ topics: ['private:*'], token }, ['private:mine', 'private:team:1']],
      [{ topics: ['private:m*'], token }, ['private:mine']],
      [{ topics: ['priv*'] }, ['privy:x']],
      [{ topics: ['priv*'], token }, ['private:mine', 'privy:x', 'private:team:1']],
    ];
    const topics = ['private:mine', 'private:other', 'privy:x', 'private:team:1'];
    for (const [opts, readable] of cases) {
      const since = (await plain.ctx.log.readHead()).head;
      const before = await plain.ctx.log.emitMany(topics.map((topic) => ({ topic, type: 't' })));
      const s = openStream(kind, plain.url, { ...opts, since });
      open.push(s);
      await s.opened;
      const after = await plain.ctx.log.emitMany(topics.map((topic) => ({ topic, type: 't' })));
      await s.until(() => (s.position ?? 0) >= after.at(-1)!, 'the position past both batches');
      const want = [...before, ...after].filter((_, i) => readable.includes(topics[i % topics.length]!));
      expect(s.ids, JSON.stringify(opts.topics) + (opts.token ? ' as alice' : '')).toEqual(want);
      s.close();
    }
  });
});

describe('over one WebSocket: auth, re-subscribes and narrowing', () => {
  const next = (c: WsClient, after: number, op: string) => c.waitFor((m) => m.op === op && c.messages.indexOf(m) >= after);

  it('an expired token is let in; each subscribe answers token_expired (connection open) until `auth` brings a fresh one', async () => {
    const exp = Math.floor(Date.now() / 1000) - 60;
    const c = await openWs(`${herald.url}/v1/ws?token=${await hs256('alice', ['private:mine'], { exp })}`);
    const since = await head();
    c.send({ op: 'subscribe', topics: ['private:mine'], since });
    expect(await c.waitFor((m) => m.op === 'error')).toMatchObject({ code: 'token_expired', retryable: false });
    const fresh = await hs256('alice', ['private:mine']);
    let at = c.messages.length;
    c.send({ op: 'auth', token: fresh });
    expect(await next(c, at, 'authed')).toEqual({ op: 'authed', expiresAt: expect.any(Number) });
    at = c.messages.length;
    c.send({ op: 'subscribe', topics: ['private:mine'], since });
    expect(await next(c, at, 'subscribed')).toMatchObject({ since, topics: ['private:mine'] });
    const [id] = await emit(['private:mine']);
    await c.waitFor((m) => m.op === 'event' && m.id === id);
    expect(c.events()).toEqual([id]);
    c.ws.close();
  });

  it('`auth` during a stream goes on from its position under the new grants: nothing lost, nothing twice, nothing outside them', async () => {
    const c = await openWs(`${herald.url}/v1/ws?token=${await hs256('bob', ['private:mine'])}`);
    c.send({ op: 'subscribe', topics: ['private:*'], since: await head() });
    await c.waitFor((m) => m.op === 'subscribed');
    const first = await emit(['private:mine', 'private:other']);
    // Past private:other: the function has denied it (its answer is awaited with the stream held before it).
    await c.waitFor((m) => m.op === 'checkpoint' && (m.id as number) >= first[1]!);
    let at = c.messages.length;
    // A bad token: refused, and the stream goes on under the old grants.
    c.send({ op: 'auth', token: 'not-a-token' });
    expect(await next(c, at, 'error')).toMatchObject({ code: 'unauthorized' });
    at = c.messages.length;
    c.send({ op: 'auth', token: await hs256('bob', ['private:mine', 'private:other']) });
    await next(c, at, 'authed');
    const resumed = await next(c, at, 'subscribed');
    expect(resumed.since).toBeGreaterThanOrEqual(first[1]!);
    const second = await emit(['private:other', 'private:mine']);
    await c.waitFor((m) => m.op === 'event' && m.id === second[1]);
    expect(c.events()).toEqual([first[0], ...second]);
    c.ws.close();
  });

  it('a re-subscribe (catch-up) and an unsubscribe that narrows never deliver outside the grants', async () => {
    const token = await hs256('alice', ['private:mine']);
    const c = await openWs(`${herald.url}/v1/ws?token=${token}`);
    const start = await head();
    const a = await emit(TOPICS);
    c.send({ op: 'subscribe', topics: ['pub:*', 'private:*'], since: start });
    await c.waitFor((m) => m.op === 'checkpoint' && (m.id as number) >= a[4]!);
    expect(c.events()).toEqual([a[0], a[1], a[3]]);
    let at = c.messages.length;
    c.send({ op: 'unsubscribe', topics: ['pub:*'] });
    expect(await next(c, at, 'subscribed')).toMatchObject({ topics: ['private:*'] });
    const b = await emit(TOPICS);
    await c.waitFor((m) => m.op === 'checkpoint' && (m.id as number) >= b[4]!);
    expect(c.events()).toEqual([a[0], a[1], a[3], b[1], b[3]]);
    at = c.messages.length;
    c.send({ op: 'subscribe', topics: ['*'], since: start });
    await next(c, at, 'subscribed');
    await c.waitFor((m) => m.op === 'checkpoint' && (m.id as number) >= b[4]! && c.messages.indexOf(m) > at);
    expect(c.events().slice(5)).toEqual([a[0], a[1], a[3], b[0], b[1], b[3]]);
    c.ws.close();
  });

  it('asks the function once per topic per connection and subject: denials are remembered across re-subscribes; a failure is not', async () => {
    await admin.query('truncate app.calls');
    await admin.query('delete from app.fixed');
    const c = await openWs(`${herald.url}/v1/ws?token=${await hs256('alice', [])}`);
    c.send({ op: 'subscribe', topics: ['private:fn:yes', 'private:fn:no'], since: await head() });
    expect(await c.waitFor((m) => m.op === 'error')).toMatchObject({ code: 'forbidden' });
    let at = c.messages.length;
    c.send({ op: 'subscribe', topics: ['private:fn:*'], since: await head() });
    await next(c, at, 'subscribed');
    const ids: number[] = [];
    for (const topic of ['private:fn:no', 'private:fn:yes', 'private:fn:no', 'private:fn:yes']) ids.push(...(await emit([topic])));
    await c.waitFor((m) => m.op === 'event' && m.id === ids[3]);
    at = c.messages.length;
    c.send({ op: 'subscribe', topics: ['private:fn:*'], since: ids[0]! - 1 });
    await c.waitFor((m) => m.op === 'event' && m.id === ids[3] && c.messages.indexOf(m) > at);
    expect(c.events()).toEqual([ids[1], ids[3], ids[1], ids[3]]);
    const calls = async () => (await admin.query(`select topic from app.calls where subject = 'alice' order by topic`)).rows.map((r) => r.topic);
    expect(await calls()).toEqual(['private:fn:no', 'private:fn:yes']);
    // A failure on this connection is not remembered: repaired, the same connection reads it.
    at = c.messages.length;
    c.send({ op: 'subscribe', topics: ['private:fn:boom'], since: await head() });
    expect(await next(c, at, 'error')).toMatchObject({ code: 'unavailable', retryable: true });
    await admin.query('insert into app.fixed default values');
    at = c.messages.length;
    c.send({ op: 'subscribe', topics: ['private:fn:boom'], since: await head() });
    expect(await next(c, at, 'subscribed')).toMatchObject({ topics: ['private:fn:boom'] });
    c.ws.close();
  });
});
