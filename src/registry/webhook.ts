/**
 * `POST /_/index-webhook`: a signed trigger for an index sync, mounted only when a secret is
 * configured (without one the route does not exist: 404, as for any unknown path). The raw
 * body (at most `maxBytes`) must carry `X-Hub-Signature-256: sha256=<hex HMAC-SHA256>` under
 * one of the configured secrets (two allow rotation), compared in constant time. A delivery
 * already seen (`X-GitHub-Delivery`), or a body already seen within the replay window (its
 * signature, whatever its delivery id: a captured delivery sent again), is acknowledged as a
 * duplicate and queues nothing. The payload itself is ignored: any delivery means "sync now".
 * Answers `202 {jobId}` at once.
 */
import { createHmac } from 'node:crypto';
import express, { type Request, type Response, Router } from 'express';
import { HeraldError } from '../errors.ts';
import { matchesAny } from '../http/auth.ts';
import type { JobJson, JobStore } from '../jobs/store.ts';
import type { IndexStore } from './index-store.ts';
import { submitJob } from './job-types.ts';

const SIGNATURE_RE = /^sha256=([0-9a-f]{64})$/;

/** The 32 bytes of an `X-Hub-Signature-256: sha256=<hex>` header, or null if it is not one. */
function signatureOf(header: string | undefined): Buffer | null {
  const m = header === undefined ? null : SIGNATURE_RE.exec(header.trim().toLowerCase());
  return m ? Buffer.from(m[1]!, 'hex') : null;
}

/** True if `given` is the HMAC-SHA256 of `body` under any of `secrets` (all compared, no early exit). */
function signedBy(secrets: readonly string[], body: Buffer, given: Buffer): boolean {
  return matchesAny(
    secrets.map((secret) => createHmac('sha256', secret).update(body).digest()),
    given,
  );
}

/** True if `header` is `sha256=<hex>` of `body` under any of `secrets` (all compared, no early exit). */
export function verifySignature(secrets: readonly string[], body: Buffer, header: string | undefined): boolean {
  const given = signatureOf(header);
  return given !== null && signedBy(secrets, body, given);
}

/** Queues an index sync, folding into one already waiting. */
export async function requestIndexSync(jobs: JobStore, reason: string): Promise<JobJson> {
  // One attempt: a failed sync is not re-queued (that could collide with the one sync allowed
  // to wait); the next trigger or the periodic fallback runs it again, idempotently.
  const { job } = await submitJob(jobs, 'index-sync', { reason }, { lockKey: 'index', maxAttempts: 1, coalesceQueued: true });
  return job;
}

/** What the webhook route uses. */
export interface WebhookDeps {
  readonly jobs: JobStore;
  /** Remembers deliveries and signatures seen. */
  readonly index: IndexStore;
  /** HERALD_INDEX_WEBHOOK_SECRETS (none: the route is not mounted). */
  readonly secrets: readonly string[];
  /** The largest body read, in bytes (HERALD_INDEX_WEBHOOK_MAX_BYTES). */
  readonly maxBytes: number;
  /** How long a signature is remembered, in ms (HERALD_INDEX_WEBHOOK_REPLAY_WINDOW_MS). */
  readonly replayWindowMs: number;
}

/** `POST /_/index-webhook` (see the file header). */
export function createWebhookRoutes(opts: WebhookDeps): Router {
  const router = Router();
  // Unsigned, anyone who could reach the route could queue syncs at will: no secret, no route.
  if (opts.secrets.length === 0) return router;
  // Any content type: the signature covers the raw bytes, whatever they are.
  const raw = express.raw({ type: () => true, limit: opts.maxBytes });
  router.post('/_/index-webhook', raw, async (req: Request, res: Response) => {
    const body = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
    const signature = signatureOf(req.get('x-hub-signature-256'));
    if (!signature || !signedBy(opts.secrets, body, signature)) {
      throw new HeraldError('HERALD_ERR_UNAUTHORIZED', 'X-Hub-Signature-256 is missing or does not match the body');
    }
    const delivery = req.get('x-github-delivery');
    if (delivery !== undefined && (delivery.length === 0 || Buffer.byteLength(delivery) > 200))
      throw new HeraldError('HERALD_ERR_BAD_REQUEST', 'X-GitHub-Delivery must be 1–200 bytes');
    if (delivery) {
      const seen = await opts.index.deliveryJob(delivery);
      if (seen) {
        res.status(200).json({ jobId: seen.jobId, duplicate: true });
        return;
      }
    }
    // Claimed before the job is queued, so that of two copies sent at once only one queues.
    if (!(await opts.index.claimSignature(signature, opts.replayWindowMs))) {
      res.status(200).json({ jobId: await opts.index.signatureJob(signature), duplicate: true });
      return;
    }
    let job: JobJson;
    try {
      job = await requestIndexSync(opts.jobs, delivery ? `webhook ${delivery}` : 'webhook');
    } catch (err) {
      // Nothing was queued: the sender's retry of this very body must not be a duplicate. If
      // the database is what failed, this fails too and the claim stays (the periodic sync,
      // or the next push, catches up); the first error is the one to answer with.
      await opts.index.releaseSignature(signature).catch(() => undefined);
      throw err;
    }
    await opts.index.recordSignatureJob(signature, job.id);
    if (delivery) await opts.index.recordDelivery(delivery, job.id);
    res.status(202).json({ jobId: job.id });
  });
  return router;
}
