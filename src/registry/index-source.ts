/**
 * Where the upstream index is read from: a local directory (e.g. a git checkout of
 * crates.io-index) or a sparse HTTP index. A sparse index cannot be listed, so the sparse
 * source fetches the names it is given plus every name already mirrored, with conditional
 * requests (ETag / Last-Modified, 304 = unchanged) and a concurrency limit.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { HeraldError } from '../errors.ts';
import { walkFiles } from '../walk-files.ts';
import { indexPath } from './index-format.ts';
import type { IndexStore, Validators } from './index-store.ts';

/** One index file as a source yields it. */
export interface IndexFile {
  path: string;
  /** The file's text, or null when the source says it has not changed since last time. */
  text: string | null;
}

/** Where a sync reads the upstream index from. */
export interface IndexSource {
  readonly id: string;
  files(): AsyncIterable<IndexFile>;
  /** Called after the sync applied everything it read (sparse: remember the ETags only then). */
  commit?(): Promise<void>;
}

const INDEX_FILE_RE = /^(1\/[a-z0-9_-]|2\/[a-z0-9_-]{2}|3\/[a-z0-9_-]\/[a-z0-9_-]{3}|[a-z0-9_-]{2}\/[a-z0-9_-]{2}\/[a-z0-9_-]{4,})$/;

/** A local checkout of the index (`file:///path`): every index file in it, read whole. */
export class DirectorySource implements IndexSource {
  readonly id: string;
  constructor(private readonly root: string) {
    this.id = `file://${path.resolve(root)}`;
  }

  async *files(): AsyncIterable<IndexFile> {
    // Dot entries are skipped: .git and friends. Anything else not shaped like an index
    // path (config.json, README) is not an index file.
    for await (const p of walkFiles(this.root, { skip: (name) => name.startsWith('.') })) {
      if (INDEX_FILE_RE.test(p)) yield { path: p, text: await readFile(path.join(this.root, p), 'utf8') };
    }
  }
}

/** A sparse HTTP index: the given names plus every name already mirrored, fetched conditionally. */
export class SparseHttpSource implements IndexSource {
  readonly id: string;
  private readonly fetched: Validators[] = [];
  constructor(
    base: string,
    private readonly names: readonly string[],
    private readonly index: IndexStore,
    private readonly concurrency: number,
  ) {
    this.id = base.replace(/\/+$/, '');
  }

  async *files(): AsyncIterable<IndexFile> {
    const mirrored = await this.index.mirroredNames();
    const paths = [...new Set([...this.names, ...mirrored].map((n) => indexPath(n)))].sort();
    const results: IndexFile[] = [];
    let next = 0;
    await Promise.all(
      Array.from({ length: Math.min(this.concurrency, paths.length) }, async () => {
        while (next < paths.length) {
          const file = await this.fetchOne(paths[next++]!);
          if (file) results.push(file);
        }
      }),
    );
    yield* results.sort((a, b) => a.path.localeCompare(b.path));
  }

  private async fetchOne(p: string): Promise<IndexFile | null> {
    const known = await this.index.validators(p);
    const headers: Record<string, string> = {};
    if (known?.etag) headers['if-none-match'] = known.etag;
    if (known?.lastModified) headers['if-modified-since'] = known.lastModified;
    const res = await fetch(`${this.id}/${p}`, { headers, signal: AbortSignal.timeout(30_000) });
    if (res.status === 304) {
      await res.body?.cancel();
      return { path: p, text: null };
    }
    if (res.status === 404) {
      await res.body?.cancel();
      return null;
    }
    if (!res.ok) throw new HeraldError('HERALD_ERR_UNAVAILABLE', `index fetch ${p} answered ${res.status}`);
    const text = await res.text();
    // Remembered only after the sync has applied this file (commit()): a sync that fails
    // half-way must not turn into 304s that skip these files next time.
    this.fetched.push({ path: p, etag: res.headers.get('etag'), lastModified: res.headers.get('last-modified') });
    return { path: p, text };
  }

  async commit(): Promise<void> {
    await this.index.saveValidators(this.fetched.splice(0));
  }
}

/** The source for HERALD_INDEX_SOURCE_URL: a `file://` checkout or an `http(s)://` sparse index. */
export function openIndexSource(url: string, names: readonly string[], index: IndexStore, concurrency: number): IndexSource {
  const u = new URL(url);
  if (u.protocol === 'file:') return new DirectorySource(decodeURIComponent(u.pathname));
  if (u.protocol === 'http:' || u.protocol === 'https:') return new SparseHttpSource(url.replace(/^sparse\+/, ''), names, index, concurrency);
  throw new HeraldError('HERALD_ERR_CONFIG', `index source ${url}: use file:///path/to/checkout or https://host/index/`);
}
