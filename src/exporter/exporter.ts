/**
 * Export: an internal subscriber of the event log that keeps a bucket's static API current
 * under `latest/` and `<runtimeVersion>/`. It follows `package:*` through a Subscription with
 * a durable cursor (advanced only after the writes succeed: a crash repeats work, never
 * skips it), coalesces each batch to one export per package, skips content whose hash is
 * already recorded, never overwrites a `latest/` object a newer release wrote, and
 * garbage-collects from its own records (store.ts), not from bucket listings. It reads
 * packages through the narrow PackageSource it declares, not from the registry.
 */
import { createHash } from 'node:crypto';
import { backoffMs } from '../backoff.ts';
import { coerceError, HeraldError } from '../errors.ts';
import type { Hub } from '../events/hub.ts';
import type { EventLog } from '../events/log.ts';
import type { Since, Subscription } from '../events/subscription.ts';
import { TopicFilter } from '../events/topic.ts';
import type { Metrics } from '../http/metrics.ts';
import type { Logger } from '../logger.ts';
import type { Bucket } from './bucket.ts';
import { type ExportablePackage, type RenderedObject, renderPackage } from './render.ts';
import type { ExportRecord, ExportStore, WrittenRecord } from './store.ts';

/** The prefix every release writes and readers follow by default. */
export const LATEST = 'latest';

/** Objects written, skipped (unchanged) and deleted by one export. */
export interface ExportCounts {
  written: number;
  skipped: number;
  deleted: number;
}

/** How an Exporter writes: its release, what GC keeps, and test hooks. */
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

/**
 * Where the exporter reads packages from, in its own terms (the registry's store satisfies
 * it; registry/module.ts passes it in).
 */
export interface PackageSource {
  /** Every package's name, in name order. */
  names(): Promise<string[]>;
  /** The package as it now stands, or null if there is none. */
  get(name: string): Promise<ExportablePackage | null>;
  /** Every archive of the package by version, in one read. */
  archives(name: string): Promise<Map<string, Buffer>>;
  /** Of `names`, those whose objects may be collected: deleted or moderated before `before`, or gone. */
  collectable(names: readonly string[], before: Date): Promise<string[]>;
}

/** What an Exporter uses, and nothing more. */
export interface ExporterDeps {
  readonly packages: PackageSource;
  readonly store: ExportStore;
  /** For the head a first full export starts from. */
  readonly log: Pick<EventLog, 'readHead'>;
  /** For the lag gauge. */
  readonly hub: Pick<Hub, 'head'>;
  /** Opens the `package:*` stream, counted under `transport` in the subscriber gauge. */
  subscribe(transport: string, opts: { filter: TopicFilter; since: Since }): Promise<Subscription>;
  readonly logger: Logger;
  readonly metrics: Pick<Metrics, 'exporterLag' | 'exportObjects' | 'exportFailures'>;
}

/**
 * idle → catching-up (start) ⇄ following, and any → stopped (stop), which is final:
 * `catching-up` covers a first full export, (re)subscribing from the cursor, and a retry.
 */
export type ExporterState = 'idle' | 'catching-up' | 'following' | 'stopped';

const EXPORTER_MOVES: Readonly<Record<ExporterState, readonly ExporterState[]>> = {
  idle: ['catching-up', 'stopped'],
  'catching-up': ['following', 'stopped'],
  following: ['catching-up', 'stopped'],
  stopped: [],
};

// A failed pass is retried from the cursor after backoffMs(attempt, 30 s, 200 ms): 100–200,
// 200–400, … ms, then 15–30 s once the doubling reaches the cap. The cap keeps a bucket or
// database outage from stretching the wait past what an operator would notice; the jitter
// (src/backoff.ts) keeps several exporters that failed together from retrying in lockstep.
const RETRY_INITIAL_MS = 200;
const RETRY_CAP_MS = 30_000;

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

/** Keeps one bucket's static API in step with the log for one release (see the file header). */
export class Exporter {
  private _state: ExporterState = 'idle';
  private sub: Subscription | null = null;
  private loop: Promise<void> | null = null;
  private gcTimer: NodeJS.Timeout | null = null;
  private readonly now: () => Date;
  /** Ends a retry backoff early when stop() is called. */
  private readonly stopping = new AbortController();
  /** Last position whose effects are in the bucket (mirrors the durable cursor). */
  position = 0;

  constructor(
    /** The dependencies it was built with: a second exporter (a rollback, a test) can share them. */
    readonly deps: ExporterDeps,
    readonly bucket: Bucket,
    private readonly opts: ExporterOptions,
  ) {
    this.now = opts.now ?? (() => new Date());
  }

  /** Where the exporter is in its lifecycle (reported by GET /api/v1/status). */
  get state(): ExporterState {
    return this._state;
  }

  // A method, not an inline comparison: TypeScript would keep the narrowed state across awaits.
  private stopped(): boolean {
    return this._state === 'stopped';
  }

  /** The name of this release's durable cursor. */
  get consumer(): string {
    return `exporter:${this.opts.runtimeVersion}`;
  }

  /** The prefixes this release writes: `latest` and its own. */
  get prefixes(): string[] {
    return [LATEST, this.opts.runtimeVersion];
  }

  /**
   * Starts following the log from the durable cursor (a first run exports everything), and
   * collecting garbage every `gcIntervalMs` (0: only by `herald export --gc`).
   */
  async start(gcIntervalMs = 0): Promise<void> {
    if (this._state !== 'idle') return;
    this.transition('catching-up');
    this.loop = this.follow();
    if (gcIntervalMs > 0) {
      this.gcTimer = setInterval(() => {
        this.gc().catch((err: unknown) => this.deps.logger.warn({ err: coerceError(err).message }, 'export GC failed; retrying next interval'));
      }, gcIntervalMs);
    }
  }

  /** Stops following (for good) and waits for the pass in progress to end. */
  async stop(): Promise<void> {
    if (this.gcTimer) clearInterval(this.gcTimer);
    this.transition('stopped');
    this.stopping.abort();
    this.sub?.close();
    await this.loop?.catch(() => undefined);
  }

  /** The one place the state changes: refuses moves EXPORTER_MOVES does not list (stopped is final). */
  private transition(to: ExporterState): boolean {
    const from = this._state;
    if (from === to) return true;
    if (!EXPORTER_MOVES[from].includes(to)) return false;
    this._state = to;
    return true;
  }

  private async saveCursor(position: number): Promise<void> {
    await this.deps.store.saveCursor(this.consumer, position);
    this.position = position;
    this.deps.metrics.exporterLag.set(Math.max(0, this.deps.hub.head - position));
  }

  private async follow(): Promise<void> {
    let attempt = 0;
    while (!this.stopped()) {
      try {
        let since = await this.deps.store.loadCursor(this.consumer);
        if (since === null) {
          // First run for this release: export everything, then follow from where that began.
          const { head } = await this.deps.log.readHead();
          await this.exportAll();
          if (this.stopped()) return;
          since = head;
        }
        this.position = since;
        const sub = await this.deps.subscribe('exporter', { filter: TopicFilter.parse(['package:*']), since });
        // stop() may have come during the awaits above: it must win (stopped is final).
        if (!this.transition('following')) {
          sub.close();
          return;
        }
        this.sub = sub;
        while (this._state === 'following') {
          const events = await sub.next();
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
                this.deps.metrics.exportFailures.inc();
                this.deps.logger.error({ package: name, err: err.message }, 'package cannot be exported; skipped');
              } else throw err;
            }
          }
          await this.saveCursor(sub.position);
          attempt = 0;
        }
      } catch (err) {
        const e = coerceError(err);
        this.sub?.close();
        if (this.stopped()) return;
        this.deps.metrics.exportFailures.inc();
        this.transition('catching-up');
        if (e.code === 'HERALD_ERR_POSITION_EXPIRED') {
          // Retention overtook the cursor: a full export is the only honest catch-up.
          this.deps.logger.warn({ consumer: this.consumer }, 'export cursor expired; running a full export');
          await this.deps.store.deleteCursor(this.consumer);
          continue;
        }
        this.deps.logger.warn({ err: e.message, consumer: this.consumer }, 'export failed; retrying from the cursor');
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, backoffMs(attempt++, RETRY_CAP_MS, RETRY_INITIAL_MS));
          this.stopping.signal.addEventListener(
            'abort',
            () => {
              clearTimeout(timer);
              resolve();
            },
            { once: true },
          );
        });
      }
    }
  }

  /**
   * Exports every package; `onProgress(done, total)` after each. Everything up to the head
   * read before it began is then in the bucket, so the cursor moves there (never back).
   */
  async exportAll(onProgress?: (done: number, total: number, counts: ExportCounts) => void): Promise<ExportCounts> {
    const { head } = await this.deps.log.readHead();
    const names = await this.deps.packages.names();
    const counts = zero();
    let done = 0;
    let next = 0;
    // A few packages at a time: bucket writes are latency-bound, not CPU-bound.
    await Promise.all(
      Array.from({ length: 4 }, async () => {
        while (next < names.length) {
          const name = names[next++]!;
          add(counts, await this.exportPackage(name));
          onProgress?.(++done, names.length, counts);
        }
      }),
    );
    await this.saveCursor(head);
    return counts;
  }

  /** Brings one package's objects up to date under both prefixes. */
  async exportPackage(name: string): Promise<ExportCounts> {
    const counts = zero();
    const pkg = await this.deps.packages.get(name);
    // Deleted or moderated: absent from the API; GC removes the objects after the grace period.
    if (!pkg || pkg.deletedAt || pkg.moderated) return counts;
    // All of the package's archives in one query, not one per version.
    const archives = await this.deps.packages.archives(name);
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
      for (const r of await this.deps.store.packageRecords({ bucket: this.bucket.id, prefix, package: name })) {
        if (wanted.has(r.key) || compareRuntimeVersions(r.writerVersion, this.opts.runtimeVersion) > 0) continue;
        await this.deleteObject(r.key);
        counts.deleted++;
      }
    }
    this.deps.metrics.exportObjects.labels('written').inc(counts.written);
    this.deps.metrics.exportObjects.labels('skipped').inc(counts.skipped);
    this.deps.metrics.exportObjects.labels('deleted').inc(counts.deleted);
    return counts;
  }

  /**
   * Writes a package's objects under one prefix, in order, skipping each whose record says
   * the same bytes are there or (under `latest/`) a newer release wrote it. Nothing to write:
   * no transaction at all. Otherwise the records stay locked (ExportStore.writeLocked) across
   * the bucket writes: releases writing the same keys take turns, and the newer one's bytes
   * stay. Returns how many were written.
   */
  private async writePrefix(prefix: string, pkg: string, objects: RenderedObject[]): Promise<number> {
    const mine = this.opts.runtimeVersion;
    const planned = objects.map((o) => ({ obj: o, key: `${prefix}/${o.key}`, hash: sha256(o.body) }));
    const keys = planned.map((p) => p.key);
    const needsWrite = (rec: ExportRecord | undefined, hash: string) =>
      !rec || rec.writerVersion === '' || (compareRuntimeVersions(rec.writerVersion, mine) <= 0 && rec.sha256 !== hash);
    // Same bytes from an older release: the record is claimed, no write needed.
    const claimable = (rec: ExportRecord | undefined, hash: string) =>
      rec !== undefined && rec.sha256 === hash && compareRuntimeVersions(rec.writerVersion, mine) < 0;
    const unlocked = await this.deps.store.records(this.bucket.id, keys);
    if (!planned.some((p) => needsWrite(unlocked.get(p.key), p.hash) || claimable(unlocked.get(p.key), p.hash))) return 0;
    return this.deps.store.writeLocked({ bucket: this.bucket.id, prefix, package: pkg }, keys, mine, async (locked) => {
      const written: WrittenRecord[] = [];
      let count = 0;
      for (const p of planned) {
        const rec = locked.get(p.key);
        if (needsWrite(rec, p.hash)) {
          await this.bucket.put(p.key, p.obj.body, { ...p.obj.meta, sha256: p.hash, writerVersion: mine });
          count++;
          written.push({ key: p.key, sha256: p.hash });
        } else if (claimable(rec, p.hash)) {
          written.push({ key: p.key, sha256: p.hash });
        }
      }
      return { result: count, written };
    });
  }

  private async deleteObject(key: string): Promise<void> {
    await this.bucket.delete(key);
    await this.deps.store.deleteRecord(this.bucket.id, key);
  }

  /**
   * Garbage collection, decided from the export records: `<runtimeVersion>/` prefixes beyond
   * the newest `keepVersions` (never this release's own), and the objects of packages deleted
   * or moderated longer ago than the grace period, or gone. Stray objects (in the bucket,
   * unknown to the records) are reported, not deleted.
   */
  async gc(): Promise<{ deletedPrefixes: string[]; deletedObjects: number; strays: string[] }> {
    const now = this.now();
    const versions = (await this.deps.store.prefixes(this.bucket.id, LATEST)).sort((a, b) => compareRuntimeVersions(b, a));
    const doomedPrefixes = versions.slice(this.opts.keepVersions).filter((p) => p !== this.opts.runtimeVersion);
    const gone = await this.deps.packages.collectable(await this.deps.store.packages(this.bucket.id), new Date(now.getTime() - this.opts.graceMs));
    let deletedObjects = 0;
    for (const key of await this.deps.store.keysOf(this.bucket.id, doomedPrefixes, gone)) {
      await this.deleteObject(key);
      deletedObjects++;
    }
    this.deps.metrics.exportObjects.labels('deleted').inc(deletedObjects);
    const strays: string[] = [];
    for (const prefix of this.prefixes) {
      const known = new Set(await this.deps.store.keysUnder(this.bucket.id, prefix));
      for (const key of await this.bucket.list(prefix)) if (!known.has(key)) strays.push(key);
    }
    if (strays.length)
      this.deps.logger.warn({ count: strays.length, sample: strays.slice(0, 10) }, 'stray objects in the bucket (not written by this exporter); left alone');
    return { deletedPrefixes: doomedPrefixes, deletedObjects, strays };
  }
}
