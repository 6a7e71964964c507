/**
 * TakedownStore: every query on herald.takedown_requests (sql/006_takedown.sql). The
 * requester's contact details live here, readable by trustees only; the public job carries
 * the package name alone.
 */
import type pg from 'pg';

/** A takedown request from the web form, as recorded beside its job. */
export interface TakedownRequest {
  jobId: number;
  package: string;
  requesterName: string;
  requesterEmail: string;
  reason: string;
}

/** Every query on herald.takedown_requests. */
export class TakedownStore {
  constructor(private readonly pool: pg.Pool) {}

  /** Records a request for trustees to review. */
  async record(r: TakedownRequest): Promise<void> {
    await this.pool.query(
      `insert into herald.takedown_requests (job_id, package, requester_name, requester_email, reason)
       values ($1, $2, $3, $4, $5)`,
      [r.jobId, r.package, r.requesterName, r.requesterEmail, r.reason],
    );
  }
}
