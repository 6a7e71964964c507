/**
 * What the exporter writes for one package: its archives, its advisories, then its versions
 * listing, in that order, so a reader never finds a listing pointing at a missing archive.
 * JSON is gzip-compressed deterministically (no timestamp or name in the gzip header), so
 * equal content gives equal bytes and equal hashes.
 */
import { gzipSync } from 'node:zlib';
import semver from 'semver';
import type { ObjectMeta } from './bucket.ts';

/**
 * A package as the exporter reads it: what it renders, in the exporter's own terms. The
 * registry's package JSON has this shape (registry/module.ts hands its store over as a
 * PackageSource); the exporter does not import the registry.
 */
export interface ExportablePackage {
  name: string;
  moderated: boolean;
  deletedAt: string | null;
  versions: { version: string; manifest: unknown; size: number; sha256: string; publishedAt: string; retracted: boolean }[];
  advisories: { id: string; summary: string; affected: string; publishedAt: string; updatedAt: string }[];
}

/** One object to write: its key below the prefix, its bytes and metadata. */
export interface RenderedObject {
  /** Key below the prefix, e.g. `api/packages/left-pad`. */
  key: string;
  body: Buffer;
  meta: Pick<ObjectMeta, 'contentType' | 'contentEncoding' | 'cacheControl'>;
}

// Listings change with every publish: short. Archives never change: cache forever.
/** Cache-Control of listings and advisories. */
export const LISTING_CACHE = 'public, max-age=60';
/** Cache-Control of archives, which never change. */
export const ARCHIVE_CACHE = 'public, max-age=31536000, immutable';

/** The key of a version's archive below the prefix. */
export const archiveKey = (name: string, version: string) => `api/archives/${name}-${version}.tar.gz`;

/** The highest stable (no pre-release), non-retracted version, or null. */
export function latestStable(pkg: ExportablePackage): string | null {
  const stable = pkg.versions.filter((v) => !v.retracted && semver.prerelease(v.version) === null).map((v) => v.version);
  return stable.length ? semver.rsort(stable)[0]! : null;
}

function json(key: string, value: unknown): RenderedObject {
  // gzipSync writes mtime 0 and no file name: deterministic for equal input.
  return {
    key,
    body: gzipSync(JSON.stringify(value), { level: 9 }),
    meta: { contentType: 'application/json', contentEncoding: 'gzip', cacheControl: LISTING_CACHE },
  };
}

/** Objects for an exportable package (not deleted, not moderated), in write order. */
export async function renderPackage(
  pkg: ExportablePackage,
  archive: (version: string) => Promise<Buffer>,
  transform: (key: string, value: unknown) => unknown = (_k, v) => v,
): Promise<RenderedObject[]> {
  const out: RenderedObject[] = [];
  for (const v of pkg.versions) {
    out.push({ key: archiveKey(pkg.name, v.version), body: await archive(v.version), meta: { contentType: 'application/gzip', cacheControl: ARCHIVE_CACHE } });
  }
  const advisoriesKey = `api/packages/${pkg.name}/advisories`;
  out.push(json(advisoriesKey, transform(advisoriesKey, { name: pkg.name, advisories: pkg.advisories })));
  const listingKey = `api/packages/${pkg.name}`;
  const listing = {
    name: pkg.name,
    latest: latestStable(pkg),
    versions: pkg.versions.map((v) => ({
      version: v.version,
      manifest: v.manifest,
      archive: `/${archiveKey(pkg.name, v.version)}`,
      sha256: v.sha256,
      size: v.size,
      publishedAt: v.publishedAt,
      retracted: v.retracted,
    })),
  };
  out.push(json(listingKey, transform(listingKey, listing)));
  return out;
}
