/**
 * Export: an internal subscriber of the event log that keeps a bucket's static API current
 * under `latest/` and `<runtimeVersion>/`. It follows `package:*` through a Subscription with
 * a durable cursor (advanced only after the writes succeed: a crash repeats work, never
 * skips it), coalesces each batch to one export per package, skips content whose hash is
 * already recorded, never overwrites a `latest/` object a newer release wrote, and
 * garbage-collects from its own records, not from bucket listings.
 */
import { createHash } from 'node:crypto';
import type pg from 'pg';
import { type HeraldContext, subscribe } from '../context.ts';
import { withTransaction } from '../db/pool.ts';
import { coerceError, HeraldError } from '../errors.ts';
import type { Subscription } from '../events/subscription.ts';
import { TopicFilter } from '../events/topic.ts';
import { getPackage } from '../registry/store.ts';
import type { Bucket } from './bucket.ts';
import { type RenderedObject, renderPackage } from './render.ts';

export const LATEST = 'latest';

export interface ExportCounts {
  written: number;
  skipped: number;
  deleted: number;
}

export interface ExporterOptions {
  runtimeVersion: string;
  /** `<runtimeVersion>/` prefixes kept by GC (the newest N). */
  keepVersions: number;
  /** Deleted or moderated packages keep their objects this long. */
  graceMs: number;
  /** Injectable clock (GC tests). */
  now?: () => Date;
  /** Rewrites rendered JSON (tests simulate a release with another format). */
  transformJson?: (key: string, value: unknown) => unknown;
}

export type ExporterState = 'idle' | 'catching-up' | 'following' | 'stopped';

/** Orders runtime versions like `2026.11.9` < `2026.11.22` (numeric where numeric). */
export function compareRuntimeVersions(a: string, b: string): number {
  const pa = a.split(/[^A-Za-z0-9]+/);
  const pb = b.split(/[^A-Za-z0-9]+/);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const x = pa[i] ?? '';
    const y = pb[i] ?? '';
    const nx = /^\d+$/.test(x) ? Number(x) : Number.NaN;
    const ny = /^\d+$/.test(y) ? Number(y) : Number.NaN;
    const c = !Number.isNaN(nx) && !Number.isNaN(ny) ? nx - ny : x.localeCompare(y);
    if (c !== 0) return Math.sign(c);
  }
  return 0;
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const zero = (): ExportCounts => ({ written: 0, skipped: 0, deleted: 0 });
const add = (a: ExportCounts, b: ExportCounts) => {
  a.written += b.written;
  a.skipped += b.skipped;
  a.deleted += b.deleted;
};

export class Exporter {
  private _state: ExporterState = 'idle';
  private sub: Subscription | null = null;
  private loop: Promise<void> | null = null;
  private readonly now: () => Date;
  /** Ends a retry backoff early when stop() is called. */
  private readonly stopping = new AbortController();
  /** Last position whose effects are in the bucket (mirrors the durable cursor). */
  position = 0;

  constructor(
    private readonly ctx: HeraldContext,
    readonly bucket: Bucket,
    private readonly opts: ExporterOptions,
  ) {
    this.now = opts.now ?? (() => new Date());
  }

  get state(): ExporterState {
    return this._state;
  }

  // A method, not an inline comparison: TypeScript would keep the narrowed state across awaits.
  private stopped(): boolean {
    return this._state === 'stopped';
  }

  get consumer(): string {
    return `exporter:${this.opts.runtimeVersion}`;
  }

  get prefixes(): string[] {
    return [LATEST, this.opts.runtimeVersion];
  }

  private gcTimer: NodeJS.Timeout | null = null;

  /**
   * Starts following the log from the durable cursor (a first run exports everything), and
   * collecting garbage every `gcIntervalMs` (0: only by `herald export --gc`).
   */
  async start(gcIntervalMs = 0): Promise<void> {
    if (this._state !== 'idle') return;
    this._state = 'catching-up';
    this.loop = this.follow();
    if (gcIntervalMs > 0) {
      this.gcTimer = setInterval(() => {
        this.gc().catch((err: Error) => this.ctx.logger.warn({ err: err.message }, 'export GC failed; retrying next interval'));
      }, gcIntervalMs);
    }
  }

  async stop(): Promise<void> {
    if (this.gcTimer) clearInterval(this.gcTimer);
    this._state = 'stopped';
    this.stopping.abort();
    this.sub?.close();
    await this.loop?.catch(() => undefined);
  }

  private async loadCursor(): Promise<number | null> {
    const { rows } = await this.ctx.pool.query<{ position: number }>('select position from herald.export_cursors where consumer = $1', [this.consumer]);
    return rows[0]?.position ?? null;
  }

  private async saveCursor(position: number): Promise<void> {
    await this.ctx.pool.query(
      `insert into herald.export_cursors (consumer, position) values ($1, $2)
       on conflict (consumer) do update set position = greatest(herald.export_cursors.position, excluded.position), updated_at = now()`,
      [this.consumer, position],
    );
    this.position = position;
    this.ctx.metrics.exporterLag.set(Math.max(0, this.ctx.hub.head - position));
  }

  private async follow(): Promise<void> {
    let attempt = 0;
    while (!this.stopped()) {
      try {
        let since = await this.loadCursor();
        if (since === null) {
          // First run for this release: export everything, then follow from where that began.
          const { head } = await this.ctx.log.readHead();
          await this.exportAll();
          if (this.stopped()) return;
          since = head;
        }
        this.position = since;
        const sub = await subscribe(this.ctx, 'exporter', { trusted: true }, { filter: TopicFilter.parse(['package:*']), since });
        // stop() may have come during the awaits above: it must win.
        if (this.stopped()) {
          sub.close();
          return;
        }
        this.sub = sub;
        this._state = 'following';
        while (this._state === 'following') {
          const events = await this.sub.next();
          if (this._state !== 'following') break;
          // A burst of events for one package costs one export.
          const names = [...new Set(events.map((e) => e.topic.slice('package:'.length)))];
          for (const name of names) {
            try {
              await this.exportPackage(name);
            } catch (err) {
              // A package that can never be exported (bad input, not a passing fault) must
              // not stop the log for everyone: report it and move on. Anything else retries.
              if (err instanceof HeraldError && !err.retryable) {
                this.ctx.metrics.exportFailures.inc();
                this.ctx.logger.error({ package: name, err: err.message }, 'package cannot be exported; skipped');
              } else throw err;
            }
          }
          await this.saveCursor(this.sub.position);
          attempt = 0;
        }
      } catch (err) {
        const e = coerceError(err);
        this.sub?.close();
        if (this.stopped()) return;
        this.ctx.metrics.exportFailures.inc();
        if (e.code === 'HERALD_ERR_POSITION_EXPIRED') {
          // Retention overtook the cursor: a full export is the only honest catch-up.
          this.ctx.logger.warn({ consumer: this.consumer }, 'export cursor expired; running a full export');
          await this.ctx.pool.query('delete from herald.export_cursors where consumer = $1', [this.consumer]);
          continue;
        }
        this.ctx.logger.warn({ err: e.message, consumer: this.consumer }, 'export failed; retrying from the cursor');
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, Math.min(30_000, 200 * 2 ** attempt++));
          this.stopping.signal.addEventListener(
            'abort',
            () => {
              clearTimeout(timer);
              resolve();
            },
            { once: true },
          );
        });
        // stop() may have come during the wait: it must win.
        if (this.stopped()) return;
        this._state = 'catching-up';
      }
    }
  }

  /**
   * Exports every package; `onProgress(done, total)` after each. Everything up to the head
   * read before it began is then in the bucket, so the cursor moves there (never back).
   */
  async exportAll(onProgress?: (done: number, total: number, counts: ExportCounts) => void): Promise<ExportCounts> {
    const { head } = await this.ctx.log.readHead();
    const { rows } = await this.ctx.pool.query<{ name: string }>('select name from herald.packages order by name');
    const counts = zero();
    let done = 0;
    let next = 0;
    // A few packages at a time: bucket writes are latency-bound, not CPU-bound.
    await Promise.all(
      Array.from({ length: 4 }, async () => {
        while (next < rows.length) {
          const { name } = rows[next++]!;
          add(counts, await this.exportPackage(name));
          onProgress?.(++done, rows.length, counts);
        }
      }),
    );
    await this.saveCursor(head);
    return counts;
  }

  /** Brings one package's objects up to date under both prefixes. */
  async exportPackage(name: string): Promise<ExportCounts> {
    const counts = zero();
    const pkg = await getPackage(this.ctx.pool, name);
    // Deleted or moderated: absent from the API; GC removes the objects after the grace period.
    if (!pkg || pkg.deletedAt || pkg.moderated) return counts;
    // All of the package's archives in one query, not one per version.
    const archives = new Map(
      (await this.ctx.pool.query<{ version: string; archive: Buffer }>('select version, archive from herald.versions where package = $1', [name])).rows.map(
        (r) => [r.version, r.archive],
      ),
    );
    const objects = await renderPackage(
      pkg,
      async (version) => {
        const a = archives.get(version);
        if (!a) throw new HeraldError('HERALD_ERR_UNAVAILABLE', `archive of ${name}@${version} changed during export; retrying`);
        return a;
      },
      this.opts.transformJson,
    );
    for (const prefix of this.prefixes) {
      const written = await this.writePrefix(prefix, name, objects);
      counts.written += written;
      counts.skipped += objects.length - written;
      // Objects this package no longer has (an unpublished version's archive), after the
      // listing that stopped pointing at them.
      const wanted = new Set(objects.map((o) => `${prefix}/${o.key}`));
      const { rows } = await this.ctx.pool.query<{ key: string; writer_version: string }>(
        'select key, writer_version from herald.export_objects where bucket = $1 and prefix = $2 and package = $3',
        [this.bucket.id, prefix, name],
      );
      for (const r of rows) {
        if (wanted.has(r.key) || compareRuntimeVersions(r.writer_version, this.opts.runtimeVersion) > 0) continue;
        await this.deleteObject(r.key);
        counts.deleted++;
      }
    }
    this.ctx.metrics.exportObjects.labels('written').inc(counts.written);
    this.ctx.metrics.exportObjects.labels('skipped').inc(counts.skipped);
    this.ctx.metrics.exportObjects.labels('deleted').inc(counts.deleted);
    return counts;
  }

  /**
   * Writes a package's objects under one prefix, in order, skipping each whose record says
   * the same bytes are there or (under `latest/`) a newer release wrote it. Nothing to write:
   * no transaction at all. Otherwise one transaction holds the records' row locks (taken in
   * key order, so two releases cannot deadlock) across the bucket writes: releases writing
   * the same keys take turns, and the newer one's bytes stay. Returns how many were written.
   */
  private async writePrefix(prefix: string, pkg: string, objects: RenderedObject[]): Promise<number> {
    const mine = this.opts.runtimeVersion;
    const planned = objects.map((o) => ({ obj: o, key: `${prefix}/${o.key}`, hash: sha256(o.body) }));
    const keys = planned.map((p) => p.key);
    type Rec = { key: string; sha256: string; writer_version: string };
    const needsWrite = (rec: Rec | undefined, hash: string) =>
      !rec || rec.writer_version === '' || (compareRuntimeVersions(rec.writer_version, mine) <= 0 && rec.sha256 !== hash);
    const unlocked = new Map(
      (
        await this.ctx.pool.query<Rec>('select key, sha256, writer_version from herald.export_objects where bucket = $1 and key = any($2)', [
          this.bucket.id,
          keys,
        ])
      ).rows.map((r) => [r.key, r]),
    );
    const stale = planned.filter((p) => {
      const rec = unlocked.get(p.key);
      return needsWrite(rec, p.hash) || (rec && rec.sha256 === p.hash && compareRuntimeVersions(rec.writer_version, mine) < 0);
    });
    if (stale.length === 0) return 0;
    return withTransaction(this.ctx.pool, async (tx: pg.PoolClient) => {
      await tx.query(
        `insert into herald.export_objects (bucket, key, prefix, package, sha256, writer_version)
         select $1, k, $3, $4, '', '' from unnest($2::text[]) k order by k
         on conflict do nothing`,
        [this.bucket.id, keys, prefix, pkg],
      );
      const locked = new Map(
        (
          await tx.query<Rec>('select key, sha256, writer_version from herald.export_objects where bucket = $1 and key = any($2) order by key for update', [
            this.bucket.id,
            keys,
          ])
        ).rows.map((r) => [r.key, r]),
      );
      const updates: { key: string; hash: string }[] = [];
      let written = 0;
      for (const p of planned) {
        const rec = locked.get(p.key);
        if (needsWrite(rec, p.hash)) {
          await this.bucket.put(p.key, p.obj.body, { ...p.obj.meta, sha256: p.hash, writerVersion: mine });
          written++;
          updates.push({ key: p.key, hash: p.hash });
        } else if (rec && rec.sha256 === p.hash && compareRuntimeVersions(rec.writer_version, mine) < 0) {
          // Same bytes from an older release: claim the record, no write needed.
          updates.push({ key: p.key, hash: p.hash });
        }
      }
      if (updates.length) {
        await tx.query(
          `update herald.export_objects o set sha256 = u.hash, writer_version = $2, written_at = now()
           from unnest($3::text[], $4::text[]) as u(key, hash) where o.bucket = $1 and o.key = u.key`,
          [this.bucket.id, mine, updates.map((u) => u.key), updates.map((u) => u.hash)],
        );
      }
      return written;
    });
  }

  private async deleteObject(key: string): Promise<void> {
    await this.bucket.delete(key);
    await this.ctx.pool.query('delete from herald.export_objects where bucket = $1 and key = $2', [this.bucket.id, key]);
  }

  /**
   * Garbage collection, decided from the export records: `<runtimeVersion>/` prefixes beyond
   * the newest `keepVersions` (never this release's own), and the objects of packages deleted
   * or moderated longer ago than the grace period. Stray objects (in the bucket, unknown to
   * the records) are reported, not deleted.
   */
  async gc(): Promise<{ deletedPrefixes: string[]; deletedObjects: number; strays: string[] }> {
    const now = this.now();
    const { rows: prefixRows } = await this.ctx.pool.query<{ prefix: string }>(
      `select distinct prefix from herald.export_objects where bucket = $1 and prefix <> $2`,
      [this.bucket.id, LATEST],
    );
    const versions = prefixRows.map((r) => r.prefix).sort((a, b) => compareRuntimeVersions(b, a));
    const doomedPrefixes = versions.slice(this.opts.keepVersions).filter((p) => p !== this.opts.runtimeVersion);
    let deletedObjects = 0;
    const { rows: doomed } = await this.ctx.pool.query<{ key: string }>(
      `select o.key from herald.export_objects o
       where o.bucket = $1 and (
         o.prefix = any($2::text[])
         or exists (select 1 from herald.packages p where p.name = o.package and (
              p.deleted_at < $3 or (p.moderated and p.moderated_at < $3)))
         or not exists (select 1 from herald.packages p where p.name = o.package))
       order by o.key`,
      [this.bucket.id, doomedPrefixes, new Date(now.getTime() - this.opts.graceMs)],
    );
    for (const { key } of doomed) {
      await this.deleteObject(key);
      deletedObjects++;
    }
    this.ctx.metrics.exportObjects.labels('deleted').inc(deletedObjects);
    const strays: string[] = [];
    for (const prefix of this.prefixes) {
      const known = new Set(
        (
          await this.ctx.pool.query<{ key: string }>('select key from herald.export_objects where bucket = $1 and prefix = $2', [this.bucket.id, prefix])
        ).rows.map((r) => r.key),
      );
      for (const key of await this.bucket.list(prefix)) if (!known.has(key)) strays.push(key);
    }
    if (strays.length)
      this.ctx.logger.warn({ count: strays.length, sample: strays.slice(0, 10) }, 'stray objects in the bucket (not written by this exporter); left alone');
    return { deletedPrefixes: doomedPrefixes, deletedObjects, strays };
  }
}
