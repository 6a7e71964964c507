/**
 * ExportStore: every query on the export tables (sql/004_exports.sql). The exporter decides
 * what to write, skip and collect from these records, never from bucket listings: `cursors`
 * hold each release's durable position, `objects` one row per key written with its content
 * hash and the release that wrote it.
 */
import type pg from 'pg';
import { withTransaction } from '../db/pool.ts';

/** What the records say about one object: its content hash and the release that wrote it. */
export interface ExportRecord {
  key: string;
  /** Hex SHA-256; '' while a first write holds the row but has not written yet. */
  sha256: string;
  /** Runtime version of the writer; '' as for sha256. */
  writerVersion: string;
}

/** Where a batch of records belongs: a bucket, a prefix in it, and the package it exports. */
export interface RecordScope {
  bucket: string;
  prefix: string;
  package: string;
}

/** A record to update after a write: the key and the hash now stored under it. */
export interface WrittenRecord {
  key: string;
  sha256: string;
}

const RECORD_COLUMNS = `key, sha256, writer_version as "writerVersion"`;

/** Every query on herald.export_cursors and herald.export_objects. */
export class ExportStore {
  constructor(private readonly pool: pg.Pool) {}

  /** The consumer's durable position, or null when it has never finished a full export. */
  async loadCursor(consumer: string): Promise<number | null> {
    const { rows } = await this.pool.query<{ position: number }>(
      `select position
       from herald.export_cursors
       where consumer = $1`,
      [consumer],
    );
    return rows[0]?.position ?? null;
  }

  /** Moves the consumer's cursor to `position`, never back (two processes of one release may race). */
  async saveCursor(consumer: string, position: number): Promise<void> {
    await this.pool.query(
      `insert into herald.export_cursors (consumer, position)
       values ($1, $2)
       on conflict (consumer) do update
         set position = greatest(herald.export_cursors.position, excluded.position),
             updated_at = now()`,
      [consumer, position],
    );
  }

  /** Forgets the consumer's cursor, so its next run is a full export. */
  async deleteCursor(consumer: string): Promise<void> {
    await this.pool.query(
      `delete from herald.export_cursors
       where consumer = $1`,
      [consumer],
    );
  }

  /** The records of `keys` in `bucket`, by key (unlocked: for deciding whether to write at all). */
  async records(bucket: string, keys: readonly string[]): Promise<Map<string, ExportRecord>> {
    const { rows } = await this.pool.query<ExportRecord>(
      `select ${RECORD_COLUMNS}
       from herald.export_objects
       where bucket = $1 and key = any($2)`,
      [bucket, keys],
    );
    return new Map(rows.map((r) => [r.key, r]));
  }

  /** The records of one package under one prefix. */
  async packageRecords(scope: RecordScope): Promise<ExportRecord[]> {
    const { rows } = await this.pool.query<ExportRecord>(
      `select ${RECORD_COLUMNS}
       from herald.export_objects
       where bucket = $1 and prefix = $2 and package = $3`,
      [scope.bucket, scope.prefix, scope.package],
    );
    return rows;
  }

  /**
   * Runs `write` holding the records of `keys` locked, and stores what it reports written,
   * all in one transaction. Missing records are first created empty, so there is a row to
   * lock; rows are locked in key order, so two releases writing the same keys cannot
   * deadlock, and take turns instead (the writes happen while the locks are held).
   */
  async writeLocked<T>(
    scope: RecordScope,
    keys: readonly string[],
    writerVersion: string,
    write: (locked: Map<string, ExportRecord>) => Promise<{ result: T; written: WrittenRecord[] }>,
  ): Promise<T> {
    return withTransaction(this.pool, async (tx) => {
      await tx.query(
        `insert into herald.export_objects (bucket, key, prefix, package, sha256, writer_version)
         select $1, k, $3, $4, '', ''
         from unnest($2::text[]) k
         order by k
         on conflict do nothing`,
        [scope.bucket, keys, scope.prefix, scope.package],
      );
      const { rows } = await tx.query<ExportRecord>(
        `select ${RECORD_COLUMNS}
         from herald.export_objects
         where bucket = $1 and key = any($2)
         order by key
         for update`,
        [scope.bucket, keys],
      );
      const { result, written } = await write(new Map(rows.map((r) => [r.key, r])));
      if (written.length > 0) {
        await tx.query(
          `update herald.export_objects o
           set sha256 = u.hash, writer_version = $2, written_at = now()
           from unnest($3::text[], $4::text[]) as u(key, hash)
           where o.bucket = $1 and o.key = u.key`,
          [scope.bucket, writerVersion, written.map((w) => w.key), written.map((w) => w.sha256)],
        );
      }
      return result;
    });
  }

  /** Forgets one object (after it was deleted from the bucket). */
  async deleteRecord(bucket: string, key: string): Promise<void> {
    await this.pool.query(
      `delete from herald.export_objects
       where bucket = $1 and key = $2`,
      [bucket, key],
    );
  }

  /** Every prefix with records in `bucket` except `exclude` (the `latest` prefix). */
  async prefixes(bucket: string, exclude: string): Promise<string[]> {
    const { rows } = await this.pool.query<{ prefix: string }>(
      `select distinct prefix
       from herald.export_objects
       where bucket = $1 and prefix <> $2`,
      [bucket, exclude],
    );
    return rows.map((r) => r.prefix);
  }

  /** Every package with records in `bucket`. */
  async packages(bucket: string): Promise<string[]> {
    const { rows } = await this.pool.query<{ package: string }>(
      `select distinct package
       from herald.export_objects
       where bucket = $1`,
      [bucket],
    );
    return rows.map((r) => r.package);
  }

  /** The keys in `bucket` under any of `prefixes` or of any of `packages`, in key order. */
  async keysOf(bucket: string, prefixes: readonly string[], packages: readonly string[]): Promise<string[]> {
    const { rows } = await this.pool.query<{ key: string }>(
      `select key
       from herald.export_objects
       where bucket = $1 and (prefix = any($2::text[]) or package = any($3::text[]))
       order by key`,
      [bucket, prefixes, packages],
    );
    return rows.map((r) => r.key);
  }

  /** Every key recorded under `prefix` in `bucket`. */
  async keysUnder(bucket: string, prefix: string): Promise<string[]> {
    const { rows } = await this.pool.query<{ key: string }>(
      `select key
       from herald.export_objects
       where bucket = $1 and prefix = $2`,
      [bucket, prefix],
    );
    return rows.map((r) => r.key);
  }
}
