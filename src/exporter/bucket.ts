/**
 * The object-store contract the exporter writes through, and the key rules every backend
 * enforces. Implementations: bucket-fs.ts (default, `file:///path`) and bucket-s3.ts
 * (`s3://bucket/prefix?endpoint=…`: AWS S3, GCS XML API, R2, MinIO); open-bucket.ts picks one
 * from a URL (this contract does not know its implementations).
 */
import { HeraldError } from '../errors.ts';

/** What is stored beside an object's bytes, and served with them. */
export interface ObjectMeta {
  contentType: string;
  contentEncoding?: string;
  cacheControl: string;
  /** Hex SHA-256 of the stored bytes; also the ETag Herald serves. */
  sha256: string;
  /** Runtime version of the release that wrote the object. */
  writerVersion: string;
}

/** An object as read back: its bytes and metadata. */
export interface StoredObject {
  body: Buffer;
  meta: ObjectMeta;
}

/** An object store the exporter writes the static API to. */
export interface Bucket {
  /** Identity for the export records (no credentials), e.g. `file:///srv/bucket`. */
  readonly id: string;
  put(key: string, body: Buffer, meta: ObjectMeta): Promise<void>;
  get(key: string): Promise<StoredObject | null>;
  delete(key: string): Promise<void>;
  /** Every key under `prefix` (for stray reports; GC never decides from listings). */
  list(prefix: string): Promise<string[]>;
}

// Segments of safe characters only: no '..', no empty segment, no '%' (so `%2e%2e` cannot
// be decoded into a traversal by a proxy), no NUL or control characters, no backslash.
// 400: room for `<name (64)>-<version (256)>.tar.gz`.
const SEGMENT_RE = /^[A-Za-z0-9][A-Za-z0-9._+-]{0,399}$/;

/** Throws unless `key` is `seg/seg/…` of safe segments, none of them `.` or `..`. */
export function assertKey(key: string): string {
  const segments = key.split('/');
  if (key.length > 2048 || segments.some((s) => !SEGMENT_RE.test(s) || s === '.' || s === '..' || s.includes('..'))) {
    throw new HeraldError(
      'HERALD_ERR_BAD_REQUEST',
      `refusing to write object key ${JSON.stringify(key.slice(0, 120))}: every segment must match ${SEGMENT_RE.source}`,
    );
  }
  return key;
}
