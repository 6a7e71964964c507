/**
 * Who may publish where (issue 14 point 5; src/gateway/access.ts authorizePublish), over
 * `POST /v1/events` on a real server, with each kind of credential: the reserved namespaces
 * (`job:`, `jobs`, `package:`, `index`) are Herald's own — a static publish token gets 403
 * there, a JWT only where its `publish` claim names the namespace (`*` does not) — and a
 * JWT publishes only within its claim. A refused publish appends nothing, not even its
 * other events. Also: the reader's side of a token sent where it does not belong.
 */
import { type JWTPayload, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.ts';
import { type Gateway, startGateway } from '../../src/gateway/server.ts';
import { createLogger } from '../../src/logger.ts';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';
import { publish, TEST_PUBLISH_TOKEN, until } from '../support/herald.ts';

const SECRET = 'access-test-hs256-secret-0123456789abcdef';
const READ_TOKEN = 'access-test-read-token-0123';
const RESERVED = ['job:1', 'jobs', 'jobs:x', 'package:left-pad', 'index', 'index:x'];

let db: TestDatabase;
let gateway: Gateway;

beforeAll(async () => {
  db = await createTestDatabase();
  const config = loadConfig(
    {
      port: 0,
      host: '127.0.0.1',
      databaseUrl: db.url,
      logLevel: 'silent',
      publishTokens: [TEST_PUBLISH_TOKEN],
      readTokens: [READ_TOKEN],
      jwtSecrets: [SECRET],
      retentionMaxAgeMs: 0,
    },
    {},
  );
  gateway = await startGateway(config, { logger: createLogger('silent'), skipMigrations: true });
});
afterAll(async () => {
  await gateway?.close();
  await db?.drop();
});

function jwt(publish: string[] | undefined, claims: JWTPayload = {}): Promise<string> {
  return new SignJWT({ sub: 'producer', exp: Math.floor(Date.now() / 1000) + 60, herald: { publish }, ...claims })
    .setProtectedHeader({ alg: 'HS256' })
    .sign(new TextEncoder().encode(SECRET));
}

const one = (topic: string) => ({ topic, type: 't', data: { n: 1 } });

async function head(): Promise<number> {
  return (await gateway.services.log.readHead()).head;
}

/** Publishes `topics` as one request and returns the status and the error code (or the ids). */
async function attempt(topics: string[], token: string): Promise<{ status: number; code?: string; ids?: number[] }> {
  const res = await publish(gateway.url, { events: topics.map(one) }, token);
  const body = (await res.json()) as { ids?: number[]; error?: { code: string } };
  return { status: res.status, ...(body.error ? { code: body.error.code } : { ids: body.ids }) };
}

describe('publishing into the reserved namespaces', () => {
  it('a static publish token: 403 for each reserved namespace, 201 beside them (topics that merely start alike included)', async () => {
    for (const topic of RESERVED) expect(await attempt([topic], TEST_PUBLISH_TOKEN), topic).toEqual({ status: 403, code: 'forbidden' });
    const ok = await attempt(['demo:a', 'jobsx', 'indexer', 'packages:x', 'job'], TEST_PUBLISH_TOKEN);
    expect(ok).toMatchObject({ status: 201 });
    expect(ok.ids).toHaveLength(5);
  });

  it('the message says why and what to do', async () => {
    const res = await publish(gateway.url, one('job:7'), TEST_PUBLISH_TOKEN);
    expect(((await res.json()) as { error: { message: string } }).error.message).toBe(
      '"job:7" is in job:*, which only Herald itself writes: publish under a topic of your own',
    );
  });

  it('a refused batch appends nothing, not even its other events', async () => {
    const before = await head();
    expect(await attempt(['demo:a', 'package:x', 'demo:b'], TEST_PUBLISH_TOKEN)).toEqual({ status: 403, code: 'forbidden' });
    expect(await head()).toBe(before);
  });

  it('a JWT publishing `*`: everything but the reserved namespaces', async () => {
    const token = await jwt(['*']);
    for (const topic of RESERVED) expect(await attempt([topic], token), topic).toEqual({ status: 403, code: 'forbidden' });
    expect(await attempt(['demo:a'], token)).toMatchObject({ status: 201 });
  });

  it('a JWT whose claim names a namespace publishes there, and only where it names', async () => {
    const token = await jwt(['job:*', 'jobs', 'index:x']);
    expect(await attempt(['job:1', 'job:2', 'jobs', 'index:x'], token)).toMatchObject({ status: 201 });
    for (const topic of ['jobs:x', 'index', 'package:left-pad', 'demo:a'])
      expect(await attempt([topic], token), topic).toEqual({ status: 403, code: 'forbidden' });
    const exact = await jwt(['job:42']);
    expect(await attempt(['job:42'], exact)).toMatchObject({ status: 201 });
    expect(await attempt(['job:43'], exact)).toEqual({ status: 403, code: 'forbidden' });
    // A prefix shorter than the namespace does not name it.
    expect(await attempt(['job:1'], await jwt(['j*']))).toEqual({ status: 403, code: 'forbidden' });
  });

  it('a JWT publishes only within its claim; without one, nowhere', async () => {
    const token = await jwt(['demo:*', 'metrics:cpu']);
    expect(await attempt(['demo:a', 'metrics:cpu'], token)).toMatchObject({ status: 201 });
    for (const topic of ['demo2:a', 'metrics:mem', 'other']) expect(await attempt([topic], token), topic).toEqual({ status: 403, code: 'forbidden' });
    const res = await publish(gateway.url, one('demo:a'), await jwt(undefined));
    expect(res.status).toBe(403);
    expect(((await res.json()) as { error: { message: string } }).error.message).toBe(`"demo:a" is outside this token's publish grant (none)`);
  });

  it('a read token, an expired JWT or a forged one is 401 (token_expired for the expired one), before the body is read', async () => {
    const cases: [string, string][] = [
      [READ_TOKEN, 'unauthorized'],
      [await jwt(['*'], { exp: Math.floor(Date.now() / 1000) - 60 }), 'token_expired'],
      [
        await new SignJWT({ herald: { publish: ['*'] } })
          .setProtectedHeader({ alg: 'HS256' })
          .sign(new TextEncoder().encode('another-secret-of-the-same-length-012345')),
        'unauthorized',
      ],
    ];
    for (const [token, code] of cases) expect(await attempt(['demo:a'], token)).toEqual({ status: 401, code });
  });
});

describe('a gateway with JWTs and no publish tokens', () => {
  it('publishes for JWTs; without either, HTTP publishing is off (403)', async () => {
    const base = { port: 0, host: '127.0.0.1', databaseUrl: db.url, logLevel: 'silent', retentionMaxAgeMs: 0 } as const;
    const jwtOnly = await startGateway(loadConfig({ ...base, jwtSecrets: [SECRET] }, {}), { logger: createLogger('silent'), skipMigrations: true });
    const off = await startGateway(loadConfig(base, {}), { logger: createLogger('silent'), skipMigrations: true });
    try {
      expect((await publish(jwtOnly.url, one('demo:a'), await jwt(['demo:*']))).status).toBe(201);
      expect((await publish(jwtOnly.url, one('demo:a'), TEST_PUBLISH_TOKEN)).status).toBe(401);
      const res = await publish(off.url, one('demo:a'), await jwt(['demo:*']));
      expect(res.status).toBe(403);
      expect(((await res.json()) as { error: { message: string } }).error.message).toMatch(/^publishing over HTTP is disabled/);
    } finally {
      await jwtOnly.close();
      await off.close();
    }
  });
});

describe('the README quick tour, with private prefixes set', () => {
  it('publishes on demo:*, polls, long-polls and streams it anonymously; its events stay out of anonymous reads of `*` only where private', async () => {
    const tour = await startGateway(
      loadConfig(
        {
          port: 0,
          host: '127.0.0.1',
          databaseUrl: db.url,
          logLevel: 'silent',
          retentionMaxAgeMs: 0,
          publishTokens: ['dev-token'],
          privateTopicPrefixes: ['job:', 'private:'],
        },
        {},
      ),
      { logger: createLogger('silent'), skipMigrations: true },
    );
    try {
      const { head } = (await (await fetch(`${tour.url}/v1/head`)).json()) as { head: number };
      const res = await publish(
        tour.url,
        {
          events: [
            { topic: 'demo:hello', type: 'greeting', data: { line: 'hello' } },
            { topic: 'demo:other', type: 'ping' },
          ],
        },
        'dev-token',
      );
      expect(res.status).toBe(201);
      const { ids } = (await res.json()) as { ids: number[] };
      // A person types the next command later than the Listener reads the events.
      const read = (id: number) => until(() => tour.services.hub.head >= id, 10_000, `the Listener to read ${id}`);
      await read(ids[1]!);
      const poll = (await (await fetch(`${tour.url}/v1/events?since=${head}&topic=demo:hello`)).json()) as { events: { id: number }[]; next: number };
      expect(poll.events.map((e) => e.id)).toEqual([ids[0]]);
      const longPoll = fetch(`${tour.url}/v1/events?since=${ids[1]}&topic=demo:*&wait=30`).then((r) => r.json() as Promise<{ events: { id: number }[] }>);
      const [late] = await tour.services.log.emitMany([{ topic: 'demo:late', type: 't' }]);
      expect((await longPoll).events.map((e) => e.id)).toEqual([late]);
      // `*` anonymously: every public event, none of the private ones.
      const [secret] = await tour.services.log.emitMany([{ topic: 'job:1', type: 'status' }]);
      await read(secret!);
      const all = (await (await fetch(`${tour.url}/v1/events?since=${head}`)).json()) as { events: { id: number }[]; next: number };
      expect(all.events.map((e) => e.id)).toEqual([...ids, late]);
      expect(all.next).toBeGreaterThanOrEqual(secret!);
      const sse = await fetch(`${tour.url}/v1/events/stream?since=${head}&topic=demo:*`);
      expect(sse.status).toBe(200);
      const reader = sse.body!.getReader();
      let text = '';
      while (!text.includes(`id: ${late}\n`)) text += new TextDecoder().decode((await reader.read()).value);
      expect([...text.matchAll(/^id: (\d+)$/gm)].map((m) => Number(m[1]))).toEqual([...ids, late]);
      await reader.cancel();
    } finally {
      await tour.close();
    }
  });
});
