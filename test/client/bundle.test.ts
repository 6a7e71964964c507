/** The built client bundle (what the package exports) works against a real server. */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { buildClient } from '../../scripts/build-client.ts';
import { createTestDatabase } from '../support/db.ts';
import { publish, startTestHerald } from '../support/herald.ts';

const cleanups: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

describe('dist/client bundle', () => {
  it('builds to one ESM file with no bare imports but ws, and streams events', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'herald-bundle-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const out = path.join(dir, 'index.js');
    await buildClient(out);
    const code = await readFile(out, 'utf8');
    const bare = [...code.matchAll(/\bfrom\s+["']([^"'.][^"']*)["']|import\(["']([^"'.][^"']*)["']\)/g)].map((m) => m[1] ?? m[2]);
    expect(new Set(bare)).toEqual(new Set(['ws']));

    const db = await createTestDatabase();
    cleanups.push(db.drop);
    const herald = await startTestHerald(db.url);
    cleanups.push(herald.close);
    const mod = (await import(pathToFileURL(out).href)) as typeof import('../../src/client/index.ts');
    expect(Object.keys(mod).sort()).toEqual(['HeraldClientError', 'connect']);
    const got: number[] = [];
    const conn = mod.connect({ url: herald.url, topics: ['b:*'], since: 0, onEvent: (e) => got.push(e.id) });
    const { ids } = (await (await publish(herald.url, { events: [{ topic: 'b:1', type: 't' }, { topic: 'c:1', type: 't' }, { topic: 'b:2', type: 't' }] })).json()) as { ids: number[] };
    await conn.ready;
    const deadline = Date.now() + 5000;
    while (got.length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    expect(got).toEqual([ids[0], ids[2]]);
    conn.close();
  });
});
