/**
 * Filesystem bucket. Each key is a directory holding `_object` (the bytes) and
 * `_meta.json`, because one key may be the prefix of another (`api/packages/x` and
 * `api/packages/x/advisories`). Writes go to a temp file and are renamed into place, so a
 * reader never sees half an object. The metadata is renamed in before the bytes, so during
 * an overwrite a reader can briefly pair new metadata (ETag) with the old bytes; the next
 * request sees both new. Herald's own serving re-validates with that ETag, so at worst a
 * client revalidates once more.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { walkFiles } from '../walk-files.ts';
import { assertKey, type Bucket, type ObjectMeta, type StoredObject } from './bucket.ts';

const OBJECT = '_object';
const META = '_meta.json';

/** A bucket in a local directory (`file:///path`), the default. */
export class FsBucket implements Bucket {
  readonly id: string;
  private readonly root: string;

  constructor(root: string) {
    this.root = path.resolve(root);
    this.id = `file://${this.root}`;
  }

  private dir(key: string): string {
    const dir = path.join(this.root, ...assertKey(key).split('/'));
    // Belt and braces: the checked key cannot leave the root, and neither can this.
    if (!dir.startsWith(this.root + path.sep)) throw new Error(`key escapes the bucket: ${key}`);
    return dir;
  }

  private async atomicWrite(file: string, data: Buffer | string): Promise<void> {
    const tmp = `${file}.tmp-${randomBytes(6).toString('hex')}`;
    await writeFile(tmp, data);
    await rename(tmp, file);
  }

  async put(key: string, body: Buffer, meta: ObjectMeta): Promise<void> {
    const dir = this.dir(key);
    await mkdir(dir, { recursive: true });
    await this.atomicWrite(path.join(dir, META), JSON.stringify(meta));
    await this.atomicWrite(path.join(dir, OBJECT), body);
  }

  async get(key: string): Promise<StoredObject | null> {
    const dir = this.dir(key);
    try {
      const [body, meta] = await Promise.all([readFile(path.join(dir, OBJECT)), readFile(path.join(dir, META), 'utf8')]);
      return { body, meta: JSON.parse(meta) as ObjectMeta };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
  }

  async delete(key: string): Promise<void> {
    const dir = this.dir(key);
    await rm(path.join(dir, OBJECT), { force: true });
    await rm(path.join(dir, META), { force: true });
    // Remove now-empty directories up to the root, so a deleted package leaves nothing.
    for (let d = dir; d !== this.root && d.startsWith(this.root); d = path.dirname(d)) {
      try {
        await rm(d, { recursive: false });
      } catch {
        break;
      }
    }
  }

  async list(prefix: string): Promise<string[]> {
    const segments = prefix.split('/').filter(Boolean);
    const out: string[] = [];
    // Tolerant: GC (this process's or another release's) may remove directories mid-walk.
    for await (const file of walkFiles(path.join(this.root, ...segments), { tolerant: true })) {
      const parts = file.split('/');
      if (parts.pop() === OBJECT) out.push([...segments, ...parts].join('/'));
    }
    return out.sort();
  }
}
