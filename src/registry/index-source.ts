/**
 * Where the upstream index is read from: a local directory (e.g. a git checkout of
 * crates.io-index) or a sparse HTTP index. A sparse index cannot be listed, so the sparse
 * source fetches the names it is given plus every name already mirrored, with conditional
 * requests (ETag / Last-Modified, 304 = unchanged) and a concurrency limit.
 */
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import type pg from 'pg';
import { HeraldError } from '../errors.ts';
import { indexPath } from './index-format.ts';

export interface IndexFile {
  path: string;
  /** The file's text, or null when the source says it has not changed since last time. */
  text: string | null;
}

export interface IndexSource {
  readonly id: string;
  files(): AsyncIterable<IndexFile>;
  /** Called after the sync applied everything it read (sparse: remember the ETags only then). */
  commit?(): Promise<void>;
}

const INDEX_FILE_RE = /^(1\/[a-z0-9_-]|2\/[a-z0-9_-]{2}|3\/[a-z0-9_-]\/[a-z0-9_-]{3}|[a-z0-9_-]{2}\/[a-z0-9_-]{2}\/[a-z0-9_-]{4,})$/;

export class DirectorySource implements IndexSource {
  readonly id: string;
  constructor(private readonly root: string) {
    this.id = `file://${path.resolve(root)}`;
  }

  async *files(): AsyncIterable<IndexFile> {
    const walk = async function* (dir: string, rel: string): AsyncIterable<string> {
      for (const e of await readdir(dir, { withFileTypes: true })) {
        if (e.name.startsWith('.')) continue; // .git and friends
        const r = rel ? `${rel}/${e.name}` : e.name;
        if (e.isDirectory()) yield* walk(path.join(dir, e.name), r);
        else if (e.isFile() && INDEX_FILE_RE.test(r)) yield r;
      }
    };
    for await (const p of walk(this.root, '')) yield { path: p, text: await readFile(path.join(this.root, p), 'utf8') };
  }
}

export class SparseHttpSource implements IndexSource {
  readonly id: string;
  private readonly validators: [path: string, etag: string | null, lastModified: string | null][] = [];
  constructor(
    base: string,
    private readonly names: readonly string[],
    private readonly pool: pg.Pool,
    private readonly concurrency: number,
  ) {
    this.id = base.replace(/\/+$/, '');
  }

  async *files(): AsyncIterable<IndexFile> {
    const mirrored = (await this.pool.query<{ lname: string }>('select distinct lname from herald.index_versions')).rows.map((r) => r.lname);
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
    const { rows } = await this.pool.query<{ etag: string | null; last_modified: string | null }>(
      'select etag, last_modified from herald.index_files where path = $1',
      [p],
    );
    const headers: Record<string, string> = {};
    if (rows[0]?.etag) headers['if-none-match'] = rows[0].etag;
    if (rows[0]?.last_modified) headers['if-modified-since'] = rows[0].last_modified;
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
    this.validators.push([p, res.headers.get('etag'), res.headers.get('last-modified')]);
    return { path: p, text };
  }

  async commit(): Promise<void> {
    const rows = this.validators.splice(0);
    if (rows.length === 0) return;
    await this.pool.query(
      `insert into herald.index_files (path, etag, last_modified)
       select * from unnest($1::text[], $2::text[], $3::text[])
       on conflict (path) do update set etag = excluded.etag, last_modified = excluded.last_modified, fetched_at = now()`,
      [rows.map((r) => r[0]), rows.map((r) => r[1]), rows.map((r) => r[2])],
    );
  }
}

export function openIndexSource(url: string, names: readonly string[], pool: pg.Pool, concurrency: number): IndexSource {
  const u = new URL(url);
  if (u.protocol === 'file:') return new DirectorySource(decodeURIComponent(u.pathname));
  if (u.protocol === 'http:' || u.protocol === 'https:') return new SparseHttpSource(url.replace(/^sparse\+/, ''), names, pool, concurrency);
  throw new HeraldError('HERALD_ERR_CONFIG', `index source ${url}: use file:///path/to/checkout or https://host/index/`);
}
