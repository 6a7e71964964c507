/**
 * S3-compatible bucket through @aws-sdk/client-s3: AWS S3, Google Cloud Storage's XML API
 * (HMAC keys), Cloudflare R2, MinIO. `s3://[key:secret@]bucket[/prefix]?endpoint=…&region=…`;
 * without credentials in the URL the SDK's default chain applies. The content hash and
 * writer version travel as object metadata.
 */
import { DeleteObjectCommand, GetObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { assertKey, type Bucket, type ObjectMeta, type StoredObject } from './bucket.ts';

/** A bucket on an S3-compatible object store (`s3://bucket/prefix?endpoint=…`). */
export class S3Bucket implements Bucket {
  readonly id: string;
  private readonly client: S3Client;
  private readonly bucket: string;
  private readonly base: string;

  constructor(url: URL) {
    this.bucket = url.hostname;
    this.base = url.pathname.replace(/^\/+|\/+$/g, '');
    const endpoint = url.searchParams.get('endpoint') ?? undefined;
    this.client = new S3Client({
      region: url.searchParams.get('region') ?? 'us-east-1',
      endpoint,
      // Path-style for MinIO, s3rver and most non-AWS endpoints.
      forcePathStyle: endpoint !== undefined || url.searchParams.get('forcePathStyle') === 'true',
      // Only checksum when the API requires it: S3-compatible servers reject the newer defaults.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      ...(url.username ? { credentials: { accessKeyId: decodeURIComponent(url.username), secretAccessKey: decodeURIComponent(url.password) } } : {}),
    });
    this.id = `s3://${this.bucket}${this.base ? `/${this.base}` : ''}${endpoint ? `?endpoint=${endpoint}` : ''}`;
  }

  private full(key: string): string {
    assertKey(key);
    return this.base ? `${this.base}/${key}` : key;
  }

  async put(key: string, body: Buffer, meta: ObjectMeta): Promise<void> {
    await this.client.send(
      new PutObjectCommand({
        Bucket: this.bucket,
        Key: this.full(key),
        Body: body,
        ContentType: meta.contentType,
        ContentEncoding: meta.contentEncoding,
        CacheControl: meta.cacheControl,
        Metadata: { sha256: meta.sha256, 'writer-version': meta.writerVersion },
      }),
    );
  }

  async get(key: string): Promise<StoredObject | null> {
    try {
      const r = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: this.full(key) }));
      const body = Buffer.from(await r.Body!.transformToByteArray());
      return {
        body,
        meta: {
          contentType: r.ContentType ?? 'application/octet-stream',
          contentEncoding: r.ContentEncoding,
          cacheControl: r.CacheControl ?? 'no-cache',
          sha256: r.Metadata?.sha256 ?? '',
          writerVersion: r.Metadata?.['writer-version'] ?? '',
        },
      };
    } catch (err) {
      const name = (err as { name?: string }).name;
      if (name === 'NoSuchKey' || name === 'NotFound') return null;
      throw err;
    }
  }

  async delete(key: string): Promise<void> {
    await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.full(key) }));
  }

  async list(prefix: string): Promise<string[]> {
    const out: string[] = [];
    let token: string | undefined;
    const strip = this.base ? this.base.length + 1 : 0;
    do {
      const r = await this.client.send(
        new ListObjectsV2Command({ Bucket: this.bucket, Prefix: `${this.full(prefix.replace(/\/$/, ''))}/`, ContinuationToken: token }),
      );
      for (const o of r.Contents ?? []) if (o.Key) out.push(o.Key.slice(strip));
      token = r.IsTruncated ? r.NextContinuationToken : undefined;
    } while (token);
    return out.sort();
  }
}
