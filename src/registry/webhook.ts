/**
 * `POST /_/index-webhook`: a signed trigger for an index sync. The raw body (at most
 * `maxBytes`) must carry `X-Hub-Signature-256: sha256=<hex HMAC-SHA256>` under one of the
 * configured secrets (two allow rotation), compared in constant time. Deliveries already
 * seen (`X-GitHub-Delivery`) are acknowledged and not re-run. The payload itself is ignored:
 * any delivery means "sync now". Answers `202 {jobId}` at once.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import express, { type Request, type Response, Router } from 'express';
import type pg from 'pg';
import { HeraldError } from '../errors.ts';
import type { JobJson, JobStore } from '../jobs/store.ts';

const SIGNATURE_RE = /^sha256=([0-9a-f]{64})$/;

/** True if `header` is `sha256=<hex>` of `body` under any of `secrets` (all compared, no early exit). */
export function verifySignature(secrets: readonly string[], body: Buffer, header: string | undefined): boolean {
  const m = header === undefined ? null : SIGNATURE_RE.exec(header.trim().toLowerCase());
  if (!m) return false;
  const given = Buffer.from(m[1]!, 'hex');
  let ok = false;
  for (const secret of secrets) {
    const expected = createHmac('sha256', secret).update(body).digest();
    ok = timingSafeEqual(expected, given) || ok;
  }
  return ok;
}

/** Queues an index sync, folding into one already waiting. */
export async function requestIndexSync(jobs: JobStore, reason: string): Promise<JobJson> {
  // One attempt: a failed sync is not re-queued (that could collide with the one sync allowed
  // to wait); the next trigger or the periodic fallback runs it again, idempotently.
  const { job } = await jobs.submit({ type: 'index-sync', payload: { reason }, lockKey: 'index', maxAttempts: 1, coalesceQueued: true });
  return job;
}

export function createWebhookRoutes(opts: { pool: pg.Pool; jobs: JobStore; secrets: readonly string[]; maxBytes: number }): Router {
  const router = Router();
  // Any content type: the signature covers the raw bytes, whatever they are.
  const raw = express.raw({ type: () => true, limit: opts.maxBytes });
  router.post('/_/index-webhook', raw, async (req: Request, res: Response) => {
    const body = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
    if (opts.secrets.length > 0 && !verifySignature(opts.secrets, body, req.get('x-hub-signature-256'))) {
      throw new HeraldError('HERALD_ERR_UNAUTHORIZED', 'X-Hub-Signature-256 is missing or does not match the body');
    }
    const delivery = req.get('x-github-delivery');
    if (delivery !== undefined && (delivery.length === 0 || Buffer.byteLength(delivery) > 200))
      throw new HeraldError('HERALD_ERR_BAD_REQUEST', 'X-GitHub-Delivery must be 1–200 bytes');
    if (delivery) {
      const seen = await opts.pool.query<{ job_id: number | null }>('select job_id from herald.webhook_deliveries where id = $1', [delivery]);
      if (seen.rows[0]) {
        res.status(200).json({ jobId: seen.rows[0].job_id, duplicate: true });
        return;
      }
    }
    const job = await requestIndexSync(opts.jobs, delivery ? `webhook ${delivery}` : 'webhook');
    if (delivery) await opts.pool.query('insert into herald.webhook_deliveries (id, job_id) values ($1, $2) on conflict do nothing', [delivery, job.id]);
    res.status(202).json({ jobId: job.id });
  });
  return router;
}
