/**
 * IndexStore: every query on the index tables (sql/005_index.sql): the mirrored versions, the
 * sparse source's HTTP validators, and the webhook deliveries and signatures seen
 * (sql/011_idempotency_and_webhook_replay.sql). The writes emit their
 * `package:<name>` events in the same statement, from what the statement returned, so a
 * change is emitted once however many syncs race (registry/index-sync.ts).
 */
import type pg from 'pg';

/** One mirrored version as the sync writes it. */
export interface IndexRow {
  /** The lower-cased name: the index's own key. */
  lname: string;
  /** The name as upstream spells it. */
  name: string;
  vers: string;
  cksum: string;
  yanked: boolean;
  /** The whole upstream line. */
  entry: Record<string, unknown>;
}

/** A sparse index file's HTTP validators, for a conditional request. */
export interface Validators {
  path: string;
  etag: string | null;
  lastModified: string | null;
}

/** Every query on herald.index_versions, herald.index_files, herald.webhook_deliveries and herald.webhook_signatures. */
export class IndexStore {
  constructor(private readonly pool: pg.Pool) {}

  /** Every lower-cased name already mirrored. */
  async mirroredNames(): Promise<string[]> {
    const { rows } = await this.pool.query<{ lname: string }>(
      `select distinct lname
       from herald.index_versions`,
    );
    return rows.map((r) => r.lname);
  }

  /** The mirror's state: `yanked` by `<lname>\0<vers>`. */
  async mirror(): Promise<Map<string, boolean>> {
    const { rows } = await this.pool.query<{ lname: string; vers: string; yanked: boolean }>(
      `select lname, vers, yanked
       from herald.index_versions`,
    );
    return new Map(rows.map((r) => [`${r.lname}\0${r.vers}`, r.yanked]));
  }

  /** Inserts versions not mirrored yet, emitting `index-version` for each one inserted; returns how many. */
  async addVersions(rows: readonly IndexRow[]): Promise<number> {
    const { rows: out } = await this.pool.query<{ n: number }>(
      `with input as (
         select * from jsonb_to_recordset($1::jsonb)
           as x(lname text, name text, vers text, cksum text, yanked boolean, entry jsonb)
       ),
       ins as (
         insert into herald.index_versions (lname, name, vers, cksum, yanked, entry)
         select lname, name, vers, cksum, yanked, entry from input
         on conflict do nothing
         returning lname, name, vers, cksum, yanked
       ),
       ev as (
         select herald.emit('package:' || lname, 'index-version',
                            jsonb_build_object('name', name, 'vers', vers, 'cksum', cksum, 'yanked', yanked))
         from ins
       )
       select (select count(*)::int from ev) as n`,
      [JSON.stringify(rows)],
    );
    return out[0]!.n;
  }

  /**
   * Sets `yanked` where it differs, emitting `index-yank` or `index-unyank` for each row it
   * changed; returns how many went each way.
   */
  async applyYanks(rows: readonly IndexRow[]): Promise<{ yanked: number; unyanked: number }> {
    const { rows: out } = await this.pool.query<{ yanked: number; unyanked: number }>(
      `with input as (
         select * from jsonb_to_recordset($1::jsonb)
           as x(lname text, vers text, yanked boolean, entry jsonb)
       ),
       upd as (
         update herald.index_versions v
         set yanked = i.yanked, entry = i.entry, synced_at = now()
         from input i
         where v.lname = i.lname and v.vers = i.vers and v.yanked is distinct from i.yanked
         returning v.lname, v.name, v.vers, v.yanked
       ),
       ev as (
         select yanked,
                herald.emit('package:' || lname, case when yanked then 'index-yank' else 'index-unyank' end,
                            jsonb_build_object('name', name, 'vers', vers, 'yanked', yanked))
         from upd
       )
       select count(*) filter (where yanked)::int as yanked,
              count(*) filter (where not yanked)::int as unyanked
       from ev`,
      [JSON.stringify(rows)],
    );
    return out[0]!;
  }

  /** Emits the `index` `synced` summary of a sync that changed something. */
  async emitSynced(summary: unknown): Promise<void> {
    await this.pool.query(`select herald.emit('index', 'synced', $1::jsonb)`, [JSON.stringify(summary)]);
  }

  /** The validators remembered for one index file, or null. */
  async validators(path: string): Promise<Validators | null> {
    const { rows } = await this.pool.query<Validators>(
      `select path, etag, last_modified as "lastModified"
       from herald.index_files
       where path = $1`,
      [path],
    );
    return rows[0] ?? null;
  }

  /** Remembers the validators of files a sync applied. */
  async saveValidators(files: readonly Validators[]): Promise<void> {
    if (files.length === 0) return;
    await this.pool.query(
      `insert into herald.index_files (path, etag, last_modified)
       select * from unnest($1::text[], $2::text[], $3::text[])
       on conflict (path) do update
         set etag = excluded.etag, last_modified = excluded.last_modified, fetched_at = now()`,
      [files.map((f) => f.path), files.map((f) => f.etag), files.map((f) => f.lastModified)],
    );
  }

  /** The job a webhook delivery already queued: undefined if the delivery is new (the job may be null once deleted). */
  async deliveryJob(delivery: string): Promise<{ jobId: number | null } | undefined> {
    const { rows } = await this.pool.query<{ jobId: number | null }>(
      `select job_id as "jobId"
       from herald.webhook_deliveries
       where id = $1`,
      [delivery],
    );
    return rows[0];
  }

  /** Records a webhook delivery and the job it queued (a delivery seen twice keeps the first). */
  async recordDelivery(delivery: string, jobId: number): Promise<void> {
    await this.pool.query(
      `insert into herald.webhook_deliveries (id, job_id)
       values ($1, $2)
       on conflict do nothing`,
      [delivery, jobId],
    );
  }

  /**
   * Claims a webhook signature for this delivery: true if it is new, or last seen more than
   * `windowMs` ago (it is then claimed afresh); false if a delivery with the same signature
   * (the same body) came within the window. Deletes the other signatures older than the
   * window on the way: a replay is judged by the window only, so they are dead weight.
   */
  async claimSignature(signature: Buffer, windowMs: number): Promise<boolean> {
    const { rows } = await this.pool.query(
      `with expired as (
         delete from herald.webhook_signatures
         where received_at < now() - $2 * interval '1 millisecond' and signature <> $1
       )
       insert into herald.webhook_signatures as s (signature)
       values ($1)
       on conflict (signature) do update
         set received_at = now(), job_id = null
         where s.received_at < now() - $2 * interval '1 millisecond'
       returning true as claimed`,
      [signature, windowMs],
    );
    return rows.length === 1;
  }

  /** The job the delivery that claimed `signature` queued: null while it is being queued (or once the job is deleted). */
  async signatureJob(signature: Buffer): Promise<number | null> {
    const { rows } = await this.pool.query<{ jobId: number | null }>(
      `select job_id as "jobId"
       from herald.webhook_signatures
       where signature = $1`,
      [signature],
    );
    return rows[0]?.jobId ?? null;
  }

  /** Records the job a claimed signature's delivery queued. */
  async recordSignatureJob(signature: Buffer, jobId: number): Promise<void> {
    await this.pool.query(
      `update herald.webhook_signatures
       set job_id = $2
       where signature = $1`,
      [signature, jobId],
    );
  }

  /** Gives up a claim whose delivery queued nothing, so that the sender's retry of the same body is not a duplicate. */
  async releaseSignature(signature: Buffer): Promise<void> {
    await this.pool.query(
      `delete from herald.webhook_signatures
       where signature = $1 and job_id is null`,
      [signature],
    );
  }
}
