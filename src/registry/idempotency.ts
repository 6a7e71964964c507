/**
 * `Idempotency-Key` on registry submissions, scoped to the subject that sends it: the same
 * user, key and request get the job the first one got (200); another user's key is another
 * key; the same key with a different request is `422 idempotency_key_reused`. The binding of
 * (subject, key) to its first request lives in herald.idempotency_keys
 * (sql/011_idempotency_and_webhook_replay.sql); the job is found through the job store's own
 * idempotency key, given a digest of (subject, key), whose unique index settles two equal
 * requests racing each other.
 */
import { createHash } from 'node:crypto';
import type pg from 'pg';
import { HeraldError } from '../errors.ts';

/** A submission in the form its key is bound to: what it asks for, not how it was sent. */
export interface KeyedRequest {
  /** The job type, which is the route. */
  readonly type: string;
  /** The job's payload; its `actor` is the subject, already the key's scope, and is left out. */
  readonly payload: Readonly<Record<string, unknown>>;
  /** The uploaded archive (publish), compared by its sha256. */
  readonly archive?: Buffer;
}

const sha256 = (data: string | Buffer) => createHash('sha256').update(data).digest();

/**
 * The sha256 of a request's canonical form: the route, the checked payload (its keys in the
 * schema's order, so equal requests serialise equally however their JSON was written) and
 * the archive's digest. A multipart upload and a raw one of the same archive are one request.
 */
function requestDigest(r: KeyedRequest): Buffer {
  const { actor: _subject, ...payload } = r.payload;
  return sha256(JSON.stringify([r.type, payload, r.archive ? sha256(r.archive).toString('hex') : null]));
}

/**
 * The job store's idempotency key for a subject's key: hex sha256 of both, NUL-separated (a
 * user name has no NUL), so keys of different subjects never meet and any key fits the
 * column's 255 bytes.
 */
function jobIdempotencyKey(subject: string, key: string): string {
  return sha256(`${subject}\0${key}`).toString('hex');
}

/** Every query on herald.idempotency_keys. */
export class IdempotencyStore {
  constructor(private readonly pool: pg.Pool) {}

  /**
   * Binds the subject's key to this request if it is new, and returns the job store's key to
   * submit under. Throws `idempotency_key_reused` if the key is bound to another request,
   * however long ago; a binding is never undone, so of two different requests racing with
   * one key, exactly one gets through.
   */
  async claim(subject: string, key: string, request: KeyedRequest): Promise<string> {
    const digest = requestDigest(request);
    const inserted = await this.pool.query(
      `insert into herald.idempotency_keys (subject, key, request_sha256)
       values ($1, $2, $3)
       on conflict do nothing`,
      [subject, key, digest],
    );
    if (inserted.rowCount === 0) {
      // A second statement, with a snapshot that sees the row the insert collided with.
      const { rows } = await this.pool.query<{ request_sha256: Buffer }>(
        `select request_sha256
         from herald.idempotency_keys
         where subject = $1 and key = $2`,
        [subject, key],
      );
      if (!rows[0]?.request_sha256.equals(digest)) {
        throw new HeraldError(
          'HERALD_ERR_IDEMPOTENCY_KEY_REUSED',
          'this Idempotency-Key was first sent with a different request (another route, package or body): send a new key with a new request',
        );
      }
    }
    return jobIdempotencyKey(subject, key);
  }
}
