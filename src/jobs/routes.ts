/**
 * The generic job reads (mounted under /api/v1 by whoever runs jobs): list jobs, one job,
 * and its log lines, each in the shape the job's events carry. Submitting jobs is the
 * product's business (the registry's routes); reading them is the same for every job type.
 */
import type { Request } from 'express';
import { Router } from 'express';
import { QUERY } from 'herald-client/protocol';
import { z } from 'zod';
import { formatZodIssue, HeraldError } from '../errors.ts';
import { JOB_STATUSES, JOB_TYPE_RE, type JobStore, LOG_LEVELS, type LogLevel } from './store.ts';
import { clientKey } from '../events/catch-up-reads.ts';

/** Parses `value` with `schema`, or throws bad_request naming `what` and the first problem's path. */
export function parse<T extends z.ZodType>(schema: T, value: unknown, what: string): z.output<T> {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  throw new HeraldError('HERALD_ERR_BAD_REQUEST', `${what}: ${formatZodIssue(r.error, 'body')}`);
}

// Job and log line ids: bigint in the database, read as JS numbers (db/pool.ts), so at most
// 16 digits and no leading zeros (one spelling per id).
const ID_RE = /^[1-9][0-9]{0,15}$/;
const CURSOR_RE = /^(0|[1-9][0-9]{0,15})$/;

/** A job id from the path: a positive integer without leading zeros, else bad_request. */
export function parseJobId(raw: unknown): number {
  const s = String(raw);
  if (!ID_RE.test(s)) throw new HeraldError('HERALD_ERR_BAD_REQUEST', `job id must be a positive integer; got ${JSON.stringify(s.slice(0, 40))}`);
  return Number(s);
}

const listQuery = z.object({
  type: z.string().regex(JOB_TYPE_RE).optional(),
  status: z.enum(JOB_STATUSES).optional(),
  since: z.string().regex(CURSOR_RE).default('0'),
  limit: z.coerce.number().int().min(1).max(1000).default(100),
});

const logsQuery = z.object({
  // Checked after the job exists (logCursor), as docs/jobs.md promises.
  since: z.string().optional(),
  after: z.iso.datetime({ offset: true }).optional(),
  level: z.enum(Object.keys(LOG_LEVELS) as [LogLevel, ...LogLevel[]]).default('debug'),
  limit: z.coerce.number().int().min(1).max(1000).default(100),
});

/** A log line cursor: empty or absent is 0 (lines from the start, docs/jobs.md), else a log line id. */
function logCursor(raw: string | undefined): number {
  if (raw === undefined || raw === '') return 0;
  if (!CURSOR_RE.test(raw)) {
    throw new HeraldError('HERALD_ERR_BAD_REQUEST', `since must be a log line id (an integer from 0); got ${JSON.stringify(raw.slice(0, 40))}`);
  }
  return Number(raw);
}

/**
 * Which of the exact `topics` the client behind `request` may read, in order: the gateway's
 * read rules (GatewayServices.readable), so a job's record and log lines are exactly as
 * readable as its `job:<id>` events. Throws 401, token_expired or unavailable.
 */
export type ReadableTopics = (
  request: { authorization: string | undefined; token: unknown; address: string },
  topics: readonly string[],
  signal?: AbortSignal,
) => Promise<boolean[]>;

/** The job's topic: its record and log lines are read under its events' rules. */
export const jobTopic = (id: number): string => `job:${id}`;

/** GET jobs, jobs/<id> and jobs/<id>/logs, for any job type; each job only where its `job:<id>` is readable. */
export function createJobReadRoutes(jobs: JobStore, readable: ReadableTopics): Router {
  const router = Router();

  const readableBy = (req: Request, ids: readonly number[]) => {
    const aborter = new AbortController();
    const abandon = () => aborter.abort();
    req.once('close', abandon);
    const request = { authorization: req.headers.authorization, token: req.query[QUERY.token], address: clientKey(req.socket) };
    return readable(request, ids.map(jobTopic), aborter.signal).finally(() => req.off('close', abandon));
  };

  /** 403 unless the job's topic is readable: asked before the job is looked up, so a private job's existence is not told either. */
  async function assertReadable(req: Request, id: number): Promise<void> {
    const [ok] = await readableBy(req, [id]);
    if (!ok) {
      throw new HeraldError(
        'HERALD_ERR_FORBIDDEN',
        `job ${id} is private (${jobTopic(id)}) and ${req.headers.authorization === undefined && req.query[QUERY.token] === undefined ? 'no token was sent' : 'this token does not grant it'}: send a token whose grants cover it`,
      );
    }
  }

  router.get('/jobs', async (req, res) => {
    const q = parse(listQuery, req.query, 'query');
    const page = await jobs.list({ type: q.type, status: q.status, since: Number(q.since), limit: q.limit });
    // A page lists the readable jobs among those examined; `next` moves past all of them,
    // so a page may be shorter than `limit` (even empty) with more to come.
    const ok = await readableBy(
      req,
      page.jobs.map((j) => j.id),
    );
    res.json(ok.every(Boolean) ? page : { jobs: page.jobs.filter((_, i) => ok[i]), next: page.next });
  });

  router.get('/jobs/:id', async (req, res) => {
    const id = parseJobId(req.params.id);
    await assertReadable(req, id);
    const job = await jobs.get(id);
    if (!job) throw new HeraldError('HERALD_ERR_NOT_FOUND', `no job ${id}`);
    res.json(job);
  });

  router.get('/jobs/:id/logs', async (req, res) => {
    const id = parseJobId(req.params.id);
    const q = parse(logsQuery, req.query, 'query');
    await assertReadable(req, id);
    // An unknown job is 404 whatever `since` says (docs/jobs.md).
    if (!(await jobs.get(id))) throw new HeraldError('HERALD_ERR_NOT_FOUND', `no job ${id}`);
    const since = logCursor(q.since);
    res.json(await jobs.logs(id, { since, after: q.after ? new Date(q.after) : undefined, level: q.level, limit: q.limit }));
  });

  return router;
}
