/**
 * Opens a bucket from its URL. Kept out of bucket.ts so the contract does not import its
 * implementations; each implementation is loaded only when its scheme is used (the S3 SDK is
 * large and most processes use the filesystem).
 */
import { HeraldError } from '../errors.ts';
import type { Bucket } from './bucket.ts';

/** Opens a bucket from its URL: `file:///path` or `s3://…`. */
export async function openBucket(url: string): Promise<Bucket> {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new HeraldError('HERALD_ERR_CONFIG', `bucket URL ${JSON.stringify(url)} is not a URL: use file:///path or s3://bucket/prefix?endpoint=…`);
  }
  if (u.protocol === 'file:') return new (await import('./bucket-fs.ts')).FsBucket(decodeURIComponent(u.pathname));
  if (u.protocol === 's3:') return new (await import('./bucket-s3.ts')).S3Bucket(u);
  throw new HeraldError('HERALD_ERR_CONFIG', `unsupported bucket URL scheme ${u.protocol}: use file:// or s3://`);
}
