/**
 * herald-client as a user gets it: `npm pack` the workspace package, install the tarball
 * into a throwaway TypeScript app (`module: nodenext`, `strict`, no `skipLibCheck`),
 * typecheck and compile it with tsc, run it with plain node against a live server, and
 * bundle it for a browser and run that bundle in Chromium (where Chromium is installed).
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { build } from 'esbuild';
import { chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase } from '../support/db.ts';
import { publish, startTestHerald, type TestHerald } from '../support/herald.ts';

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const TSC = path.join(ROOT, 'node_modules/typescript/bin/tsc');
const CHROMIUM = '/usr/bin/chromium';

let dir: string;
let app: string;
let tarball: string;
let herald: TestHerald;
const cleanups: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'herald-client-pack-'));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  const { stdout } = await run('npm', ['pack', '--json', '--pack-destination', dir], { cwd: path.join(ROOT, 'packages/client') });
  const [info] = JSON.parse(stdout) as { filename: string; files: { path: string }[] }[];
  tarball = path.join(dir, info!.filename);
  app = path.join(dir, 'app');
  await run('mkdir', ['-p', path.join(app, 'src')]);
  await writeFile(path.join(app, 'package.json'), JSON.stringify({ name: 'throwaway', private: true, type: 'module' }));
  // From npm's cache when it has them (npm ci filled it); the registry otherwise.
  await run('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', tarball, '@types/node@20'], { cwd: app });
  const db = await createTestDatabase();
  cleanups.push(db.drop);
  herald = await startTestHerald(db.url);
  cleanups.push(herald.close);
}, 180_000);

afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

describe('herald-client, packed and installed', () => {
  it('ships only its build, its source maps, README and package.json, and depends on ws alone', async () => {
    const { stdout } = await run('tar', ['-tzf', tarball]);
    const files = stdout.trim().split('\n').sort();
    expect(files).toContain('package/dist/index.js');
    expect(files).toContain('package/dist/index.d.ts');
    expect(files).toContain('package/dist/connection.d.ts');
    // The wire module, as the `herald-client/protocol` subpath.
    expect(files).toContain('package/dist/protocol.js');
    expect(files).toContain('package/dist/protocol.d.ts');
    expect(files).toContain('package/README.md');
    expect(files.filter((f) => !/^package\/(dist|src)\//.test(f))).toEqual(['package/README.md', 'package/package.json']);
    const pkg = JSON.parse(await readFile(path.join(app, 'node_modules/herald-client/package.json'), 'utf8')) as Record<string, unknown>;
    expect(pkg.dependencies).toEqual({ ws: expect.any(String) });
    // The install pulled in the client and ws only (plus the app's own @types/node).
    const installed = (await readdir(path.join(app, 'node_modules'))).filter((n) => !n.startsWith('.')).sort();
    expect(installed).toEqual(['@types', 'herald-client', 'undici-types', 'ws']);
    for (const file of ['index.d.ts', 'connection.d.ts', 'protocol.d.ts']) {
      const dts = await readFile(path.join(app, 'node_modules/herald-client/dist', file), 'utf8');
      expect(dts, file).not.toMatch(/from '\.[^']*\.ts'/);
    }
  });

  it('typechecks in a strict nodenext app without skipLibCheck, and runs against a live server with plain node', async () => {
    await writeFile(
      path.join(app, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          module: 'nodenext',
          moduleResolution: 'nodenext',
          target: 'es2022',
          strict: true,
          skipLibCheck: false,
          outDir: 'dist',
          rootDir: 'src',
          types: ['node'],
        },
        include: ['src'],
      }),
    );
    await writeFile(
      path.join(app, 'src/main.ts'),
      `import { connect, HeraldClientError, type HeraldEvent } from 'herald-client';
const [url, want] = process.argv.slice(2) as [string, string];
const got: HeraldEvent<{ n: number }>[] = [];
const conn = connect<{ n: number }>({
  url,
  topics: ['pack:*'],
  since: 0,
  onEvent(e) {
    got.push(e);
    if (got.length === Number(want)) {
      conn.close();
      console.log(JSON.stringify(got.map((g) => [g.id, g.topic, g.data.n])));
    }
  },
  onError(err: HeraldClientError) {
    console.error(err.code);
    process.exit(2);
  },
});
`,
    );
    await run(process.execPath, [TSC, '-p', app]);
    const { ids } = (await (
      await publish(herald.url, {
        events: [
          { topic: 'pack:a', type: 't', data: { n: 1 } },
          { topic: 'other', type: 't', data: { n: 2 } },
          { topic: 'pack:b', type: 't', data: { n: 3 } },
        ],
      })
    ).json()) as { ids: number[] };
    const { stdout } = await run(process.execPath, [path.join(app, 'dist/main.js'), herald.url, '2'], { timeout: 20_000 });
    expect(JSON.parse(stdout)).toEqual([
      [ids[0], 'pack:a', 1],
      [ids[2], 'pack:b', 3],
    ]);
  });

  it('exports the wire module as herald-client/protocol, and nothing else of its files', async () => {
    await writeFile(
      path.join(app, 'src/wire.ts'),
      `import { isRetryable, ROUTES, WIRE_ERRORS, type WireErrorCode } from 'herald-client/protocol';
const code: WireErrorCode = 'slow_consumer';
console.log(JSON.stringify([ROUTES.ws, WIRE_ERRORS[code].closeCode, isRetryable('cursor_expired')]));
`,
    );
    await run(process.execPath, [TSC, '-p', app]);
    const { stdout } = await run(process.execPath, [path.join(app, 'dist/wire.js')]);
    expect(JSON.parse(stdout)).toEqual(['/v1/ws', 4008, false]);
    const internal = await run(process.execPath, ['--input-type=module', '-e', "await import('herald-client/dist/protocol.js')"], { cwd: app }).then(
      () => null,
      (e: { stderr: string }) => e,
    );
    expect(internal?.stderr).toMatch(/ERR_PACKAGE_PATH_NOT_EXPORTED/);
  });

  it('a typing mistake against the installed .d.ts fails the typecheck (the check is real)', async () => {
    await writeFile(
      path.join(app, 'src/wrong.ts'),
      `import { connect } from 'herald-client';\nconnect({ url: 'http://x', topics: 'not-a-list', onEvent() {} });\n`,
    );
    const err = await run(process.execPath, [TSC, '-p', app, '--noEmit']).then(
      () => null,
      (e: { stdout: string }) => e,
    );
    await rm(path.join(app, 'src/wrong.ts'));
    expect(err?.stdout).toMatch(/src\/wrong\.ts.*error TS2322/);
  });

  it('bundles for a browser with no Node built-ins and streams events in Chromium', async () => {
    await writeFile(
      path.join(app, 'src/browser.ts'),
      `import { connect } from 'herald-client';
const w = window as unknown as { got: number[]; start(url: string): void };
w.got = [];
w.start = (url) => { connect({ url, topics: ['browser:*'], since: 0, onEvent: (e) => w.got.push(e.id) }); };
`,
    );
    const out = await build({
      entryPoints: [path.join(app, 'src/browser.ts')],
      bundle: true,
      format: 'iife',
      platform: 'browser',
      target: 'es2022',
      write: false,
      logLevel: 'silent',
    });
    const code = out.outputFiles[0]!.text;
    expect(code).not.toMatch(/require\(["']|from ["'](node:|ws["'])/);
    if (!existsSync(CHROMIUM)) {
      console.warn(`browser half skipped: ${CHROMIUM} is not installed`);
      return;
    }
    const { ids } = (await (
      await publish(herald.url, {
        events: [
          { topic: 'browser:1', type: 't' },
          { topic: 'x', type: 't' },
          { topic: 'browser:2', type: 't' },
        ],
      })
    ).json()) as { ids: number[] };
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--no-first-run'],
    });
    try {
      const page = await browser.newPage();
      await page.goto(`${herald.url}/healthz`);
      await page.addScriptTag({ content: code });
      await page.evaluate((url) => (window as unknown as { start(u: string): void }).start(url), herald.url);
      await page.waitForFunction((n) => (window as unknown as { got: number[] }).got.length >= n, 2);
      expect(await page.evaluate(() => (window as unknown as { got: number[] }).got)).toEqual([ids[0], ids[2]]);
    } finally {
      await browser.close();
    }
  });
});
