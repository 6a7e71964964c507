/**
 * `herald token create | list | revoke`, the compiled command as a child process, against a
 * test database that a real Herald serves the job API from.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildArchive } from '../src/registry/archive.ts';
import { createTestDatabase, type TestDatabase } from './support/db.ts';
import { startTestHerald, type TestHerald } from './support/herald.ts';

const BIN = fileURLToPath(new URL('../bin/herald.js', import.meta.url));
const execFileAsync = promisify(execFile);

let db: TestDatabase;
let herald: TestHerald;
beforeAll(async () => {
  db = await createTestDatabase();
  herald = await startTestHerald(db.url);
});
afterAll(async () => {
  await herald?.close();
  await db?.drop();
});

/** Runs `herald token …`; resolves with the exit code and output whatever the code. */
async function token(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  try {
    const { stdout, stderr } = await execFileAsync(process.execPath, [BIN, 'token', ...args], { env: { PATH: process.env.PATH ?? '', DATABASE_URL: db.url } });
    return { code: 0, out: stdout, err: stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, out: err.stdout, err: err.stderr };
  }
}

async function create(user: string, trustee = false): Promise<string> {
  const r = await token('create', '--user', user, ...(trustee ? ['--trustee'] : []));
  expect(r.code, r.err).toBe(0);
  return r.out.trim();
}

/** The publish API with `bearer`: 401 means the token did not authenticate. */
async function publishStatus(bearer: string, version: string): Promise<number> {
  const archive = await buildArchive({ 'manifest.json': JSON.stringify({ name: 'tok-pkg', version, description: 'x', license: 'MIT', dependencies: {} }) });
  const res = await fetch(`${herald.url}/api/v1/publish?name=tok-pkg&version=${version}`, {
    method: 'POST',
    headers: { 'content-type': 'application/gzip', authorization: `Bearer ${bearer}` },
    body: new Uint8Array(archive),
  });
  await res.body?.cancel();
  return res.status;
}

interface Row {
  ID: string;
  USER: string;
  ROLE: string;
  PREFIX: string;
  CREATED: string;
  'LAST USED': string;
  REVOKED?: string;
}

/** `token list` output back into rows, by its header's column starts. */
function parseTable(text: string): Row[] {
  const [header, ...rest] = text.trimEnd().split('\n');
  const starts = [...header!.matchAll(/\S+( \S+)*/g)].map((m) => ({ name: m[0], at: m.index! }));
  return rest.map((line) => Object.fromEntries(starts.map((c, i) => [c.name, line.slice(c.at, starts[i + 1]?.at).trim()])) as unknown as Row);
}

describe('herald token', () => {
  it('list shows id, user, role, prefix, created and last used, and never a token or its hash', async () => {
    const alice1 = await create('alice');
    const alice2 = await create('alice');
    const root = await create('root', true);
    expect(await publishStatus(alice1, '1.0.0')).not.toBe(401);

    const r = await token('list');
    expect(r.code, r.err).toBe(0);
    const rows = parseTable(r.out);
    const mine = rows.filter((row) => [alice1, alice2, root].some((t) => t.startsWith(row.PREFIX.replace('…', ''))));
    expect(mine.map((row) => [row.USER, row.ROLE])).toEqual([
      ['alice', 'user'],
      ['alice', 'user'],
      ['root', 'trustee'],
    ]);
    expect(mine[0]!.PREFIX).toBe(`${alice1.slice(0, 13)}…`);
    expect(mine[0]!['LAST USED']).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    expect(mine[1]!['LAST USED']).toBe('never');
    expect(mine[2]!.CREATED).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    for (const t of [alice1, alice2, root]) {
      expect(r.out).not.toContain(t);
      const hash = createHash('sha256').update(t).digest();
      expect(r.out).not.toContain(hash.toString('hex'));
      expect(r.out).not.toContain(hash.toString('base64'));
    }
    expect(parseTable((await token('list', '--user', 'root')).out).map((row) => row.USER)).toEqual(['root']);
  });

  it("revoke by prefix: the token gets 401 on the publish API at once, the user's other token still works, and list --all shows it revoked", async () => {
    const keep = await create('bob');
    const revoked = await create('bob');
    expect(await publishStatus(revoked, '2.0.0')).not.toBe(401);

    const r = await token('revoke', revoked.slice(0, 13));
    expect(r.code, r.err).toBe(0);
    expect(r.out.trim()).toMatch(new RegExp(`^revoked token \\d+ of bob \\(${revoked.slice(0, 13)}…\\)$`));
    expect(r.out).not.toContain(revoked);

    expect(await publishStatus(revoked, '2.0.1')).toBe(401);
    expect(await publishStatus(keep, '2.0.2')).not.toBe(401);

    const live = parseTable((await token('list', '--user', 'bob')).out);
    expect(live.map((row) => row.PREFIX)).toEqual([`${keep.slice(0, 13)}…`]);
    const all = parseTable((await token('list', '--user', 'bob', '--all')).out);
    expect(all.map((row) => [row.PREFIX, row.REVOKED === '-'])).toEqual([
      [`${keep.slice(0, 13)}…`, true],
      [`${revoked.slice(0, 13)}…`, false],
    ]);

    const again = await token('revoke', revoked.slice(0, 13));
    expect(again.code).toBe(0);
    expect(again.out).toMatch(/was already revoked at/);
  });

  it('revoke by id, and by the whole token', async () => {
    const byId = await create('carol');
    const byToken = await create('carol');
    const rows = parseTable((await token('list', '--user', 'carol')).out);
    const id = rows.find((row) => byId.startsWith(row.PREFIX.replace('…', '')))!.ID;
    expect((await token('revoke', id)).out.trim()).toBe(`revoked token ${id} of carol (${byId.slice(0, 13)}…)`);
    expect((await token('revoke', byToken)).code).toBe(0);
    expect(await publishStatus(byId, '3.0.0')).toBe(401);
    expect(await publishStatus(byToken, '3.0.1')).toBe(401);
    expect((await token('list', '--user', 'carol')).out.trim()).toMatch(/^no tokens/);
  });

  it('a reference that matches nothing, or is too short to be safe, fails in one line without revoking anything', async () => {
    const dave = await create('dave');
    const missing = await token('revoke', '999999');
    expect(missing.code).not.toBe(0);
    expect(missing.err.trim().split('\n')).toEqual([expect.stringMatching(/^herald: no token matches 999999/)]);
    const short = await token('revoke', 'hrld_');
    expect(short.code).toBe(64);
    expect(short.err.trim().split('\n')).toEqual([expect.stringMatching(/^herald: name the token by its id or its prefix/)]);
    expect(await publishStatus(dave, '4.0.0')).not.toBe(401);
  });

  it('--help of each token command says what it does', async () => {
    for (const sub of ['create', 'list', 'revoke']) {
      const r = await token(sub, '--help');
      expect(r.code).toBe(0);
      expect(r.out).toContain(`Usage: herald token ${sub}`);
    }
    expect((await token('revoke', '--help')).out).toContain('<id|prefix>');
  });
});
