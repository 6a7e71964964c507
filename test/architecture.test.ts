/**
 * The import graph is the architecture diagram (issue 13, "Target architecture" in the plan):
 * this test reads every import in src/ and packages/client/src with the TypeScript compiler
 * and fails on a folder cycle, on an import the layering does not allow, on a contract file
 * importing its implementations, on src/ reaching into scripts/, bench/ or test/, and on the
 * client package reaching outside itself. Each failure names the files of the import.
 *
 * The checks are pure functions over a list of imports, so the last block proves on planted
 * graphs that each one can fail.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { builtinModules } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../', import.meta.url));

/** One import statement (or re-export, or dynamic import) of one file. */
interface Import {
  /** The importing file, relative to the repository root (`src/db/migrate.ts`). */
  from: string;
  /** The file it resolves to, relative to the root, or the bare specifier (`pg`, `herald-client/protocol`). */
  to: string;
  /** True when it brings in types only (`import type`, `export type`, `import { type A }`). */
  typeOnly: boolean;
}

// ---------------------------------------------------------------------------------------
// The rules

/**
 * The folders of src/. `root` is every src/*.ts leaf (errors, backoff, token-bucket, logger,
 * config, signals, …); `top` is the composition root (herald.ts, cli.ts, index.ts), which
 * imports anything. Keeping the two apart is what lets the leaves be imported by every folder
 * without a cycle through the composition root.
 */
type Folder = 'root' | 'top' | 'db' | 'events' | 'http' | 'gateway' | 'jobs' | 'exporter' | 'registry';

const TOP_FILES = new Set(['src/herald.ts', 'src/cli.ts', 'src/index.ts']);

/** Which folders each folder may import (besides itself and `herald-client/protocol`). */
const ALLOWED: Record<Folder, readonly Folder[]> = {
  root: [],
  db: ['root'],
  events: ['db', 'root'],
  // HTTP plumbing only: it takes events' types, never a running part of another folder.
  http: ['events', 'root'],
  gateway: ['http', 'events', 'db', 'root'],
  jobs: ['events', 'db', 'http', 'root'],
  exporter: ['events', 'db', 'http', 'root'],
  registry: ['exporter', 'jobs', 'gateway', 'http', 'events', 'db', 'root'],
  top: ['root', 'db', 'events', 'http', 'gateway', 'jobs', 'exporter', 'registry'],
};

/** Imports from one folder into another that must be type-only. */
const TYPES_ONLY: readonly [Folder, Folder][] = [['http', 'events']];

/** Files of a folder that another folder may reach into, when it may not import the rest. */
const ONLY_FILES: readonly [Folder, Folder, readonly string[]][] = [
  // The registry plugs into the gateway through the plug-in contract (and what it exports).
  ['registry', 'gateway', ['src/gateway/plugin.ts']],
];

/**
 * Contract files and their implementations, beyond the `X.ts` / `X-*.ts` naming rule: the
 * transport contract and the three transports that implement it.
 */
const CONTRACTS: Record<string, readonly string[]> = {
  'src/gateway/transport.ts': ['src/gateway/ws-session.ts', 'src/gateway/websocket.ts', 'src/gateway/sse.ts', 'src/gateway/poll.ts'],
};

/** What src/ may import by bare name from the client package: the wire module only (top excepted). */
const CLIENT_WIRE_MODULE = 'herald-client/protocol';

function folderOf(file: string): Folder | undefined {
  if (!file.startsWith('src/')) return undefined;
  const parts = file.split('/');
  if (parts.length === 2) return TOP_FILES.has(file) ? 'top' : 'root';
  return parts[1] as Folder;
}

const describeImport = (i: Import) => `${i.from} imports ${i.to}${i.typeOnly ? ' (types only)' : ''}`;

/** Imports the layering table forbids, each as a readable line. */
function layeringViolations(imports: Import[]): string[] {
  const out: string[] = [];
  for (const i of imports) {
    const from = folderOf(i.from);
    if (!from) continue;
    if (i.to === 'herald-client' || i.to.startsWith('herald-client/')) {
      if (from !== 'top' && i.to !== CLIENT_WIRE_MODULE) out.push(`${describeImport(i)}: src/ takes only ${CLIENT_WIRE_MODULE} from the client package`);
      continue;
    }
    const to = folderOf(i.to);
    if (!to || to === from) continue;
    if (!(ALLOWED[from] as readonly string[]).includes(to)) {
      const allowed = ALLOWED[from].length ? ALLOWED[from].map((f) => `${f}/`).join(', ') : 'nothing outside itself';
      out.push(`${describeImport(i)}: ${from}/ may import only ${allowed}`);
      continue;
    }
    if (!i.typeOnly && TYPES_ONLY.some(([a, b]) => a === from && b === to)) out.push(`${describeImport(i)}: ${from}/ may import only types from ${to}/`);
    const only = ONLY_FILES.find(([a, b]) => a === from && b === to);
    if (only && !only[2].includes(i.to)) out.push(`${describeImport(i)}: ${from}/ may import from ${to}/ only ${only[2].join(', ')}`);
  }
  return out;
}

/** Every folder cycle (one per strongly connected group), with the imports that close it. */
function folderCycles(imports: Import[]): string[] {
  const edges = new Map<Folder, Map<Folder, Import[]>>();
  for (const i of imports) {
    const from = folderOf(i.from);
    const to = folderOf(i.to);
    if (!from || !to || from === to) continue;
    const out = edges.get(from) ?? new Map<Folder, Import[]>();
    edges.set(from, out);
    out.set(to, [...(out.get(to) ?? []), i]);
  }
  const reports: string[] = [];
  for (const group of stronglyConnected([...edges.keys()], (f) => [...(edges.get(f)?.keys() ?? [])])) {
    if (group.length < 2) continue;
    const members = new Set(group);
    // One concrete cycle through the group's first folder: a shortest way back to it.
    const start = [...group].sort()[0]!;
    const cycle = shortestPathBack(start, (f) => [...(edges.get(f)?.keys() ?? [])].filter((g) => members.has(g)));
    const steps = cycle.slice(0, -1).map((f, k) => {
      const via = edges.get(f)!.get(cycle[k + 1]!)!;
      return `  ${f}/ → ${cycle[k + 1]}/: ${via.map(describeImport).join('; ')}`;
    });
    // The group's other imports between its folders: each is part of some cycle too.
    const others = group
      .flatMap((f) => [...(edges.get(f) ?? [])].filter(([g]) => members.has(g)).map(([g, via]) => [f, g, via] as const))
      .filter(([f, g]) => !cycle.some((c, k) => c === f && cycle[k + 1] === g))
      .sort(([a, b], [c, d]) => `${a}/${b}`.localeCompare(`${c}/${d}`))
      .map(([f, g, via]) => `  also ${f}/ → ${g}/: ${via.map(describeImport).join('; ')}`);
    reports.push([`folder cycle ${cycle.map((f) => `${f}/`).join(' → ')}`, ...steps, ...others].join('\n'));
  }
  return reports;
}

/** Tarjan's algorithm: the strongly connected groups of a directed graph. */
function stronglyConnected<T>(nodes: T[], next: (n: T) => T[]): T[][] {
  const index = new Map<T, number>();
  const low = new Map<T, number>();
  const stack: T[] = [];
  const onStack = new Set<T>();
  const groups: T[][] = [];
  const visit = (n: T) => {
    index.set(n, index.size);
    low.set(n, index.get(n)!);
    stack.push(n);
    onStack.add(n);
    for (const m of next(n)) {
      if (!index.has(m)) {
        visit(m);
        low.set(n, Math.min(low.get(n)!, low.get(m)!));
      } else if (onStack.has(m)) low.set(n, Math.min(low.get(n)!, index.get(m)!));
    }
    if (low.get(n) === index.get(n)) {
      const group: T[] = [];
      let m: T;
      do {
        m = stack.pop()!;
        onStack.delete(m);
        group.push(m);
      } while (m !== n);
      groups.push(group);
    }
  };
  for (const n of nodes) if (!index.has(n)) visit(n);
  return groups;
}

/** A shortest path start → … → start (breadth first), as the list of nodes. */
function shortestPathBack<T>(start: T, next: (n: T) => T[]): T[] {
  const parent = new Map<T, T>();
  const queue: T[] = [start];
  while (queue.length > 0) {
    const n = queue.shift()!;
    for (const m of next(n)) {
      if (m === start) {
        const path: T[] = [];
        for (let p = n; p !== start; p = parent.get(p)!) path.unshift(p);
        return [start, ...path, start];
      }
      if (!parent.has(m)) {
        parent.set(m, n);
        queue.push(m);
      }
    }
  }
  return [start];
}

/**
 * A contract file importing an implementation: `X.ts` importing a sibling `X-*.ts`, or a file
 * of CONTRACTS importing one listed for it.
 */
function contractViolations(imports: Import[]): string[] {
  const out: string[] = [];
  for (const i of imports) {
    if (!i.from.startsWith('src/') || !i.to.startsWith('src/')) continue;
    const base = i.from.slice(0, -'.ts'.length);
    const sibling = path.posix.dirname(i.to) === path.posix.dirname(i.from) && i.to.startsWith(`${base}-`);
    if (sibling || CONTRACTS[i.from]?.includes(i.to)) {
      out.push(`${describeImport(i)}: a contract never imports its implementations (the code that picks one goes elsewhere)`);
    }
  }
  return out;
}

/** src/ reaching outside itself by path: into scripts/, bench/, test/ or anywhere else. */
function outsideSrcViolations(imports: Import[]): string[] {
  return imports
    .filter((i) => i.from.startsWith('src/') && !i.to.startsWith('src/') && isPath(i.to))
    .map((i) => {
      const where = /^(scripts|bench|test)\//.exec(i.to)?.[1];
      return where ? `${describeImport(i)}: src/ never imports ${where}/` : `${describeImport(i)}: src/ imports only its own files and packages`;
    });
}

/** packages/client/src importing a file outside packages/client, or a package it does not declare. */
function clientViolations(imports: Import[], clientDependencies: readonly string[]): string[] {
  const out: string[] = [];
  for (const i of imports) {
    if (!i.from.startsWith('packages/client/src/')) continue;
    if (isPath(i.to)) {
      if (!i.to.startsWith('packages/client/')) out.push(`${describeImport(i)}: the client package imports nothing outside packages/client`);
      continue;
    }
    const name = i.to.startsWith('@') ? i.to.split('/').slice(0, 2).join('/') : i.to.split('/')[0]!;
    if (!isBuiltin(i.to) && !clientDependencies.includes(name)) {
      out.push(`${describeImport(i)}: ${name} is not a dependency of packages/client/package.json`);
    }
  }
  return out;
}

/** True for a resolved file path (a folder of this repository, or above it); false for a package name. */
const isPath = (to: string) => to.startsWith('../') || (to.includes('/') && !to.startsWith('node_modules/') && existsSync(path.join(ROOT, to.split('/')[0]!)));
const isBuiltin = (to: string) => to.startsWith('node:') || builtinModules.includes(to.split('/')[0]!);

// ---------------------------------------------------------------------------------------
// Reading the imports

function sourceFiles(dir: string): string[] {
  const abs = path.join(ROOT, dir);
  if (!existsSync(abs)) return [];
  return readdirSync(abs, { recursive: true, encoding: 'utf8' })
    .filter((f) => /\.(ts|tsx|mts|cts)$/.test(f) && !f.endsWith('.d.ts') && statSync(path.join(abs, f)).isFile())
    .map((f) => path.posix.join(dir, f.split(path.sep).join('/')))
    .sort();
}

/** Every import of `file` (relative to ROOT), resolved to a root-relative path when it is one. */
function importsOf(file: string): Import[] {
  const text = readFileSync(path.join(ROOT, file), 'utf8');
  const source = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true);
  const out: Import[] = [];
  const add = (specifier: ts.Expression | undefined, typeOnly: boolean) => {
    if (specifier && ts.isStringLiteralLike(specifier)) out.push({ from: file, to: resolve(file, specifier.text), typeOnly });
  };
  const visit = (node: ts.Node) => {
    if (ts.isImportDeclaration(node)) {
      const clause = node.importClause;
      const named = clause?.namedBindings;
      const allNamedTypes = !!named && ts.isNamedImports(named) && named.elements.length > 0 && named.elements.every((e) => e.isTypeOnly);
      add(node.moduleSpecifier, !!clause && (clause.isTypeOnly || (!clause.name && allNamedTypes)));
    } else if (ts.isExportDeclaration(node)) {
      const named = node.exportClause;
      const allNamedTypes = !!named && ts.isNamedExports(named) && named.elements.length > 0 && named.elements.every((e) => e.isTypeOnly);
      add(node.moduleSpecifier, node.isTypeOnly || allNamedTypes);
    } else if (ts.isImportEqualsDeclaration(node) && ts.isExternalModuleReference(node.moduleReference)) {
      add(node.moduleReference.expression, node.isTypeOnly);
    } else if (ts.isCallExpression(node) && node.expression.kind === ts.SyntaxKind.ImportKeyword) {
      add(node.arguments[0], false);
    } else if (ts.isImportTypeNode(node) && ts.isLiteralTypeNode(node.argument)) {
      add(node.argument.literal as ts.Expression, true);
    }
    ts.forEachChild(node, visit);
  };
  visit(source);
  return out;
}

/** A relative specifier as a root-relative file path; a bare one as it is. */
function resolve(from: string, specifier: string): string {
  if (!specifier.startsWith('.')) return specifier;
  const base = path.posix.normalize(path.posix.join(path.posix.dirname(from), specifier));
  const candidates = [base, base.replace(/\.js$/, '.ts'), `${base}.ts`, `${base}/index.ts`];
  return candidates.find((c) => existsSync(path.join(ROOT, c)) && statSync(path.join(ROOT, c)).isFile()) ?? base;
}

const SRC_FILES = sourceFiles('src');
const CLIENT_FILES = sourceFiles('packages/client/src');
const IMPORTS = [...SRC_FILES, ...CLIENT_FILES].flatMap(importsOf);
const CLIENT_DEPENDENCIES = (() => {
  const pkg = JSON.parse(readFileSync(path.join(ROOT, 'packages/client/package.json'), 'utf8'));
  return Object.keys({ ...pkg.dependencies, ...pkg.peerDependencies, ...pkg.optionalDependencies });
})();

const report = (problems: string[]) => (problems.length ? `\n${problems.join('\n')}\n` : '');

describe('architecture', () => {
  it('reads the imports it checks (a reader that found none would pass everything)', () => {
    expect(SRC_FILES.length).toBeGreaterThan(40);
    expect(CLIENT_FILES).toContain('packages/client/src/index.ts');
    expect(IMPORTS).toContainEqual({ from: 'src/db/migrate.ts', to: 'src/errors.ts', typeOnly: false });
    expect(IMPORTS).toContainEqual({ from: 'src/db/migrate.ts', to: 'src/logger.ts', typeOnly: true });
    expect(IMPORTS).toContainEqual({ from: 'src/db/pool.ts', to: 'pg', typeOnly: false });
    for (const file of SRC_FILES) expect(folderOf(file), file).toBeDefined();
    for (const file of SRC_FILES) expect(Object.keys(ALLOWED), `${file} is in a folder the layering does not know`).toContain(folderOf(file));
  });

  it('src/ has no folder cycle', () => {
    expect(report(folderCycles(IMPORTS))).toBe('');
  });

  it('every import between folders follows the layering', () => {
    expect(report(layeringViolations(IMPORTS))).toBe('');
  });

  it('no contract file imports its implementations', () => {
    expect(report(contractViolations(IMPORTS))).toBe('');
  });

  it('src/ never imports scripts/, bench/ or test/', () => {
    expect(report(outsideSrcViolations(IMPORTS))).toBe('');
  });

  it('packages/client/src imports nothing outside packages/client but its declared dependencies', () => {
    expect(report(clientViolations(IMPORTS, CLIENT_DEPENDENCIES))).toBe('');
  });
});

describe('the checks fail when they should (planted graphs)', () => {
  const imp = (from: string, to: string, typeOnly = false): Import => ({ from, to, typeOnly });

  it('a folder cycle is reported with the imports that close it', () => {
    const planted = [imp('src/db/pool.ts', 'src/errors.ts'), imp('src/db/pool.ts', 'src/events/log.ts'), imp('src/events/log.ts', 'src/db/pool.ts')];
    expect(folderCycles(planted)).toEqual([
      'folder cycle db/ → events/ → db/\n  db/ → events/: src/db/pool.ts imports src/events/log.ts\n  events/ → db/: src/events/log.ts imports src/db/pool.ts',
    ]);
    const longer = [imp('src/http/a.ts', 'src/gateway/b.ts'), imp('src/gateway/b.ts', 'src/jobs/c.ts', true), imp('src/jobs/c.ts', 'src/http/d.ts')];
    expect(folderCycles(longer)).toEqual([
      'folder cycle gateway/ → jobs/ → http/ → gateway/\n' +
        '  gateway/ → jobs/: src/gateway/b.ts imports src/jobs/c.ts (types only)\n' +
        '  jobs/ → http/: src/jobs/c.ts imports src/http/d.ts\n' +
        '  http/ → gateway/: src/http/a.ts imports src/gateway/b.ts',
    ]);
    expect(folderCycles([imp('src/gateway/b.ts', 'src/http/a.ts'), imp('src/cli.ts', 'src/gateway/b.ts'), imp('src/gateway/b.ts', 'src/errors.ts')])).toEqual(
      [],
    );
  });

  it('layering: a forbidden folder, a value import where types only are allowed, a gateway file beside the contract', () => {
    expect(
      layeringViolations([
        imp('src/http/app.ts', 'src/gateway/server.ts'),
        imp('src/http/health.ts', 'src/events/listener.ts'),
        imp('src/http/health.ts', 'src/events/hub.ts', true),
        imp('src/registry/module.ts', 'src/gateway/plugin.ts'),
        imp('src/registry/module.ts', 'src/gateway/publish.ts'),
        imp('src/errors.ts', 'src/db/pool.ts', true),
        imp('src/jobs/store.ts', 'herald-client'),
        imp('src/jobs/store.ts', 'herald-client/protocol'),
        imp('src/cli.ts', 'herald-client'),
        imp('src/cli.ts', 'src/registry/module.ts'),
      ]),
    ).toEqual([
      'src/http/app.ts imports src/gateway/server.ts: http/ may import only events/, root/',
      'src/http/health.ts imports src/events/listener.ts: http/ may import only types from events/',
      'src/registry/module.ts imports src/gateway/publish.ts: registry/ may import from gateway/ only src/gateway/plugin.ts',
      'src/errors.ts imports src/db/pool.ts (types only): root/ may import only nothing outside itself',
      'src/jobs/store.ts imports herald-client: src/ takes only herald-client/protocol from the client package',
    ]);
  });

  it('a contract importing its implementation; src/ importing test/; the client importing the server', () => {
    expect(
      contractViolations([
        imp('src/exporter/bucket.ts', 'src/exporter/bucket-fs.ts'),
        imp('src/gateway/transport.ts', 'src/gateway/sse.ts', true),
        imp('src/exporter/bucket-fs.ts', 'src/exporter/bucket.ts'),
        imp('src/exporter/open-bucket.ts', 'src/exporter/bucket-s3.ts'),
      ]),
    ).toEqual([
      'src/exporter/bucket.ts imports src/exporter/bucket-fs.ts: a contract never imports its implementations (the code that picks one goes elsewhere)',
      'src/gateway/transport.ts imports src/gateway/sse.ts (types only): a contract never imports its implementations (the code that picks one goes elsewhere)',
    ]);
    expect(
      outsideSrcViolations([imp('src/herald.ts', 'scripts/build-web.ts'), imp('src/db/pool.ts', 'test/support/db.ts'), imp('src/db/pool.ts', 'pg')]),
    ).toEqual([
      'src/herald.ts imports scripts/build-web.ts: src/ never imports scripts/',
      'src/db/pool.ts imports test/support/db.ts: src/ never imports test/',
    ]);
    expect(
      clientViolations(
        [
          imp('packages/client/src/index.ts', 'src/gateway/protocol.ts'),
          imp('packages/client/src/index.ts', 'packages/client/src/protocol.ts'),
          imp('packages/client/src/connection.ts', 'ws'),
          imp('packages/client/src/connection.ts', 'node:events'),
          imp('packages/client/src/connection.ts', 'pg'),
        ],
        ['ws'],
      ),
    ).toEqual([
      'packages/client/src/index.ts imports src/gateway/protocol.ts: the client package imports nothing outside packages/client',
      'packages/client/src/connection.ts imports pg: pg is not a dependency of packages/client/package.json',
    ]);
  });
});
