/**
 * The registry store: packages, owners, versions and advisories. Reads for the API and the
 * exporter, and the effects jobs apply, each inside the job's one transaction together with
 * the `package:<name>` event it causes, so the store and the log never disagree.
 */
import type pg from 'pg';
import { HeraldError } from '../errors.ts';
import type { ArchiveInfo } from './archive.ts';
import type { User } from './tokens.ts';

/** A pool for reads, or the job's transaction for effects. */
type Db = pg.Pool | pg.PoolClient;

/** What `GET /api/v1/packages/<name>` returns (and `package:<name>` events carry). */
export interface PackageJson {
  name: string;
  moderated: boolean;
  deletedAt: string | null;
  createdAt: string;
  owners: string[];
  versions: { version: string; manifest: unknown; size: number; sha256: string; publishedAt: string; retracted: boolean }[];
  advisories: { id: string; summary: string; affected: string; publishedAt: string; updatedAt: string }[];
}

/** The package as `GET /api/v1/packages/<name>` returns it, or null. */
export async function getPackage(db: Db, name: string): Promise<PackageJson | null> {
  const { rows } = await db.query<{ p: PackageJson | null }>('select herald.package_json($1) as p', [name]);
  return rows[0]?.p ?? null;
}

/** One version's archive and its hash, or null. */
export async function getArchive(db: Db, name: string, version: string): Promise<{ archive: Buffer; sha256: string } | null> {
  const { rows } = await db.query<{ archive: Buffer; sha256: string }>(
    `select archive, sha256
     from herald.versions
     where package = $1 and version = $2`,
    [name, version],
  );
  return rows[0] ?? null;
}

/** Every archive of a package by version, in one read (the exporter renders them all). */
export async function getArchives(db: Db, name: string): Promise<Map<string, Buffer>> {
  const { rows } = await db.query<{ version: string; archive: Buffer }>(
    `select version, archive
     from herald.versions
     where package = $1`,
    [name],
  );
  return new Map(rows.map((r) => [r.version, r.archive]));
}

/** Every package's name, in name order (deleted and moderated ones included). */
export async function packageNames(db: Db): Promise<string[]> {
  const { rows } = await db.query<{ name: string }>(
    `select name
     from herald.packages
     order by name`,
  );
  return rows.map((r) => r.name);
}

/**
 * Of `names`, those whose exported objects may be collected: packages deleted, or moderated,
 * before `before` (the grace period has passed), and names with no package at all.
 */
export async function collectablePackages(db: Db, names: readonly string[], before: Date): Promise<string[]> {
  const { rows } = await db.query<{ name: string }>(
    `select n.name
     from unnest($1::text[]) as n(name)
     left join herald.packages p on p.name = n.name
     where p.name is null
        or p.deleted_at < $2
        or (p.moderated and p.moderated_at < $2)`,
    [names, before],
  );
  return rows.map((r) => r.name);
}

/** Owner or trustee? (No package yet: anyone may publish it first.) */
export async function canManage(db: Db, name: string, user: User): Promise<'new' | 'owner' | 'trustee' | false> {
  const { rows } = await db.query<{ exists: boolean; owner: boolean }>(
    `select exists (select 1 from herald.packages where name = $1) as exists,
            exists (select 1 from herald.package_owners where package = $1 and user_name = $2) as owner`,
    [name, user.name],
  );
  const r = rows[0]!;
  if (!r.exists) return 'new';
  if (r.owner) return 'owner';
  return user.trustee ? 'trustee' : false;
}

/** When a version was published, or null if it does not exist. */
export async function versionPublishedAt(db: Db, name: string, version: string): Promise<Date | null> {
  const { rows } = await db.query<{ published_at: Date }>('select published_at from herald.versions where package = $1 and version = $2', [name, version]);
  return rows[0]?.published_at ?? null;
}

/** Emits `package:<name>` with the package as it now stands, in the caller's transaction. */
async function emitPackage(tx: pg.PoolClient, name: string, type: string): Promise<PackageJson> {
  // One round trip: the document is built and emitted by the same statement.
  const { rows } = await tx.query<{ p: PackageJson }>(`select herald.emit('package:' || $1, $2, p) as emitted, p from herald.package_json($1) as p`, [
    name,
    type,
  ]);
  return rows[0]!.p;
}

// Locks the package row (or notes its absence) so concurrent effects on one package queue up.
async function lockPackage(tx: pg.PoolClient, name: string) {
  const { rows } = await tx.query<{ moderated: boolean; deleted_at: Date | null }>(
    'select moderated, deleted_at from herald.packages where name = $1 for update',
    [name],
  );
  return rows[0] ?? null;
}

/** Records a new version (and a first publisher as owner), emitting `published`; refuses reused or moderated ones. */
export async function publishVersion(
  tx: pg.PoolClient,
  user: User,
  info: ArchiveInfo,
  archive: Buffer,
): Promise<{ name: string; version: string; sha256: string; size: number }> {
  const { name, version } = info.manifest;
  const pkg = await lockPackage(tx, name);
  if (!pkg) {
    await tx.query('insert into herald.packages (name) values ($1)', [name]);
    await tx.query('insert into herald.package_owners (package, user_name) values ($1, $2)', [name, user.name]);
  } else {
    if (pkg.moderated) throw new HeraldError('HERALD_ERR_FORBIDDEN', `package ${name} is moderated: publishing is blocked`);
    if ((await canManage(tx, name, user)) === false) throw new HeraldError('HERALD_ERR_FORBIDDEN', `${user.name} does not own ${name}`);
    if (pkg.deleted_at) await tx.query('update herald.packages set deleted_at = null where name = $1', [name]);
  }
  const gone = await tx.query('select 1 from herald.version_tombstones where package = $1 and version = $2', [name, version]);
  if (gone.rowCount)
    throw new HeraldError('HERALD_ERR_BAD_REQUEST', `${name}@${version} was unpublished; version numbers are never reused: publish a new version`);
  const inserted = await tx.query(
    `insert into herald.versions (package, version, manifest, archive, size, sha256, published_by)
     values ($1, $2, $3, $4, $5, $6, $7) on conflict do nothing`,
    [name, version, JSON.stringify(info.manifest), archive, info.size, info.sha256, user.name],
  );
  if (inserted.rowCount !== 1)
    throw new HeraldError('HERALD_ERR_BAD_REQUEST', `${name}@${version} is already published: versions are immutable, publish a new version`);
  await emitPackage(tx, name, 'published');
  return { name, version, sha256: info.sha256, size: info.size };
}

/** Deletes a version and tombstones its number, emitting `unpublished`; a package left empty is deleted. */
export async function unpublishVersion(tx: pg.PoolClient, name: string, version: string): Promise<{ name: string; version: string }> {
  await lockPackage(tx, name);
  const { rowCount } = await tx.query('delete from herald.versions where package = $1 and version = $2', [name, version]);
  if (rowCount !== 1) throw new HeraldError('HERALD_ERR_NOT_FOUND', `${name}@${version} does not exist`);
  await tx.query('insert into herald.version_tombstones (package, version) values ($1, $2) on conflict do nothing', [name, version]);
  // A package with no versions left is deleted (its exports are collected after a grace period).
  await tx.query(`update herald.packages set deleted_at = now() where name = $1 and not exists (select 1 from herald.versions where package = $1)`, [name]);
  await emitPackage(tx, name, 'unpublished');
  return { name, version };
}

/** Makes `newOwner` the package's only owner, emitting `transferred`. */
export async function transferPackage(tx: pg.PoolClient, name: string, newOwner: string): Promise<{ name: string; owners: string[] }> {
  if (!(await lockPackage(tx, name))) throw new HeraldError('HERALD_ERR_NOT_FOUND', `package ${name} does not exist`);
  const user = await tx.query('select 1 from herald.users where name = $1', [newOwner]);
  if (user.rowCount !== 1) throw new HeraldError('HERALD_ERR_NOT_FOUND', `user ${newOwner} does not exist`);
  await tx.query('delete from herald.package_owners where package = $1', [name]);
  await tx.query('insert into herald.package_owners (package, user_name) values ($1, $2)', [name, newOwner]);
  const pkg = await emitPackage(tx, name, 'transferred');
  return { name, owners: pkg.owners };
}

/** Marks a version retracted or not, emitting `retracted` or `unretracted`. */
export async function retractVersion(
  tx: pg.PoolClient,
  name: string,
  version: string,
  retracted: boolean,
): Promise<{ name: string; version: string; retracted: boolean }> {
  await lockPackage(tx, name);
  const { rowCount } = await tx.query('update herald.versions set retracted = $3 where package = $1 and version = $2', [name, version, retracted]);
  if (rowCount !== 1) throw new HeraldError('HERALD_ERR_NOT_FOUND', `${name}@${version} does not exist`);
  await emitPackage(tx, name, retracted ? 'retracted' : 'unretracted');
  return { name, version, retracted };
}

/** Moderates a package or lifts it, emitting `moderated` or `unmoderated`. */
export async function moderatePackage(tx: pg.PoolClient, name: string, moderated: boolean): Promise<{ name: string; moderated: boolean }> {
  if (!(await lockPackage(tx, name))) throw new HeraldError('HERALD_ERR_NOT_FOUND', `package ${name} does not exist`);
  await tx.query('update herald.packages set moderated = $2, moderated_at = case when $2 then now() end where name = $1', [name, moderated]);
  await emitPackage(tx, name, moderated ? 'moderated' : 'unmoderated');
  return { name, moderated };
}

/** An advisory as submitted. */
export interface AdvisoryInput {
  id: string;
  summary: string;
  affected: string;
}

/** Creates or updates an advisory on the package, emitting `advisory`. */
export async function upsertAdvisory(tx: pg.PoolClient, name: string, a: AdvisoryInput): Promise<{ name: string; id: string }> {
  if (!(await lockPackage(tx, name))) throw new HeraldError('HERALD_ERR_NOT_FOUND', `package ${name} does not exist`);
  const other = await tx.query('select 1 from herald.advisories where id = $1 and package <> $2', [a.id, name]);
  if (other.rowCount) throw new HeraldError('HERALD_ERR_BAD_REQUEST', `advisory ${a.id} belongs to another package`);
  await tx.query(
    `insert into herald.advisories (id, package, summary, affected) values ($1, $2, $3, $4)
     on conflict (id) do update set summary = excluded.summary, affected = excluded.affected, updated_at = now()`,
    [a.id, name, a.summary, a.affected],
  );
  await emitPackage(tx, name, 'advisory');
  return { name, id: a.id };
}
