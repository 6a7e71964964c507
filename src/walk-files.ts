/**
 * The one directory walker: every regular file under a root, as a `/`-separated path relative
 * to it. Two users need the same walk: the index source reading a crates.io-index checkout
 * (registry/index-source.ts) and the filesystem bucket listing its keys (exporter/bucket-fs.ts).
 */
import type { Dirent } from 'node:fs';
import { readdir } from 'node:fs/promises';
import path from 'node:path';

/** How walkFiles() treats what it meets. */
export interface WalkOptions {
  /** Directories and files whose name this returns true for are neither entered nor yielded. */
  skip?: (name: string) => boolean;
  /**
   * A directory that cannot be read (gone, or not a directory) is passed over instead of
   * failing the walk: for a tree that others change while it is walked (a bucket under GC).
   */
  tolerant?: boolean;
}

/** Yields the regular files under `root`, depth first in directory order, relative to `root`. */
export async function* walkFiles(root: string, options: WalkOptions = {}): AsyncGenerator<string> {
  yield* walk(root, '', options);
}

async function* walk(dir: string, rel: string, options: WalkOptions): AsyncGenerator<string> {
  let entries: Dirent[];
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch (err) {
    if (options.tolerant) return;
    throw err;
  }
  for (const e of entries) {
    if (options.skip?.(e.name)) continue;
    const r = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory()) yield* walk(path.join(dir, e.name), r, options);
    else if (e.isFile()) yield r;
  }
}
