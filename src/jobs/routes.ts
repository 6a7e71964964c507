/**
 * The job API under /api/v1: submit registry operations as jobs, read jobs and their logs,
 * read packages, and the component status. Bodies and queries are parsed with zod;
 * permissions are checked at submission (clear 401/403/404 at once); publish checks
 * ownership again inside its transaction, where a concurrent first publish could race it.
 */
import busboy from 'busboy';
import { type Request, type Response, Router } from 'express';
import semver from 'semver';
import { z } from 'zod';
import type { HeraldContext } from '../context.ts';
import { HeraldError } from '../errors.ts';
import { jsonBody } from '../gateway/json-input.ts';
import { parseSince } from '../gateway/protocol.ts';
import { assertPackageName } from '../registry/archive.ts';
import * as registry from '../registry/store.ts';
import { requireUser, type TokenStore, type User } from '../registry/tokens.ts';
import { JOB_STATUSES, type JobStore, LOG_LEVELS, type LogLevel } from './store.ts';
import type { WorkerPool } from './worker-pool.ts';
import type { Exporter } from '../exporter/exporter.ts';

export interface JobRoutesDeps {
  ctx: HeraldContext;
  jobs: JobStore;
  tokens: TokenStore;
  /** The local worker pool, if this process runs one (for /status). */
  workers: WorkerPool | null;
  /** The exporter, for its lag in /status. */
  exporter?: Exporter;
}

const ARCHIVE_TYPES = ['application/gzip', 'application/x-gzip', 'application/octet-stream', 'application/x-tar+gzip'];
const versionField = z.string().refine((v) => semver.valid(v) === v, 'must be a semver 2.0 version such as 1.2.3');
const nameField = z.string().transform((n) => assertPackageName(n));

const bodies = {
  unpublish: z.object({ name: nameField, version: versionField, reason: z.string().min(1).max(1000) }).strict(),
  transfer: z.object({ name: nameField, newOwner: z.string().regex(/^[a-z0-9][a-z0-9_-]{0,63}$/, 'must be a user name') }).strict(),
  retract: z.object({ name: nameField, version: versionField, retracted: z.boolean().default(true) }).strict(),
  moderate: z.object({ name: nameField, moderated: z.boolean().default(true), reason: z.string().min(1).max(1000) }).strict(),
  advisory: z
    .object({
      name: nameField,
      id: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, 'must be 1–64 of [A-Za-z0-9._-]'),
      summary: z.string().min(1).max(4096),
      affected: z
        .string()
        .min(1)
        .max(1024)
        .refine((r) => semver.validRange(r) !== null, 'must be a semver range such as ">=1.0.0 <1.4.2"'),
    })
    .strict(),
};

function parse<T extends z.ZodType>(schema: T, value: unknown, what: string): z.output<T> {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  throw new HeraldError('HERALD_ERR_BAD_REQUEST', `${what}: ${issue?.path.join('.') || 'body'}: ${issue?.message ?? 'invalid'}`);
}

const idParam = (raw: unknown) => {
  const s = String(raw);
  if (!/^[1-9][0-9]{0,15}$/.test(s))
    throw new HeraldError('HERALD_ERR_BAD_REQUEST', `job id must be a positive integer; got ${JSON.stringify(s.slice(0, 40))}`);
  return Number(s);
};

const single = (v: unknown, field: string): string | undefined => {
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw new HeraldError('HERALD_ERR_BAD_REQUEST', `${field} must be given once`);
  return v;
};

/** Reads the archive from a raw body or from the `archive` part of a multipart form. */
function readArchive(req: Request, limit: number): Promise<{ archive: Buffer; fields: Record<string, string> }> {
  return new Promise((resolve, reject) => {
    const type = req.headers['content-type'] ?? '';
    const tooBig = () => new HeraldError('HERALD_ERR_PAYLOAD_TOO_LARGE', `the archive is larger than ${limit} bytes`);
    if (Number(req.headers['content-length'] ?? 0) > limit + 64 * 1024) return reject(tooBig());
    // The body is stored as it arrives, so it must arrive as itself: a Content-Encoding would
    // have to be undone first, and compressing a .tar.gz again gains nothing.
    const encoding = req.headers['content-encoding']?.trim().toLowerCase();
    if (encoding && encoding !== 'identity') {
      const shown = JSON.stringify(encoding.slice(0, 40));
      return reject(new HeraldError('HERALD_ERR_UNSUPPORTED_MEDIA_TYPE', `Content-Encoding ${shown} is not supported here: send the archive without one`));
    }
    if (type.startsWith('multipart/form-data')) {
      let bb: busboy.Busboy;
      try {
        bb = busboy({ headers: req.headers, limits: { files: 1, fileSize: limit, fields: 10, fieldSize: 1024 } });
      } catch {
        return reject(new HeraldError('HERALD_ERR_BAD_REQUEST', 'malformed multipart body'));
      }
      const fields: Record<string, string> = {};
      let archive: Buffer | null = null;
      let failed: HeraldError | null = null;
      bb.on('field', (k, v) => (fields[k] = v));
      bb.on('file', (field, stream) => {
        const chunks: Buffer[] = [];
        stream.on('data', (c: Buffer) => chunks.push(c));
        stream.on('limit', () => (failed = tooBig()));
        stream.on('close', () => {
          if (field === 'archive') archive = Buffer.concat(chunks);
        });
      });
      bb.on('error', () => reject(new HeraldError('HERALD_ERR_BAD_REQUEST', 'malformed multipart body')));
      bb.on('close', () => {
        if (failed) return reject(failed);
        if (!archive) return reject(new HeraldError('HERALD_ERR_BAD_REQUEST', 'the multipart form needs a file field named "archive"'));
        resolve({ archive, fields });
      });
      req.pipe(bb);
      return;
    }
    if (!ARCHIVE_TYPES.some((t) => type.startsWith(t))) {
      return reject(new HeraldError('HERALD_ERR_UNSUPPORTED_MEDIA_TYPE', `send the .tar.gz as the body (${ARCHIVE_TYPES[0]}) or as multipart/form-data`));
    }
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (c: Buffer) => {
      size += c.length;
      if (size > limit) {
        // Stop reading and answer 413 (as body-parser does); destroying the socket instead
        // would leave the client with a reset rather than the error.
        req.off('data', onData);
        req.pause();
        chunks.length = 0;
        reject(tooBig());
      } else chunks.push(c);
    };
    req.on('data', onData);
    req.on('end', () => resolve({ archive: Buffer.concat(chunks), fields: {} }));
    req.on('error', () => reject(new HeraldError('HERALD_ERR_BAD_REQUEST', 'the request body could not be read')));
  });
}

export function createJobRoutes({ ctx, jobs, tokens, workers, exporter }: JobRoutesDeps): Router {
  const router = Router();
  const json = jsonBody(64 * 1024);
  const { config } = ctx;
  const actor = (u: User) => ({ name: u.name, trustee: u.trustee });
  const idempotencyKey = (req: Request) => {
    const k = req.headers['idempotency-key'];
    if (k === undefined) return undefined;
    if (typeof k !== 'string' || k.length === 0 || Buffer.byteLength(k) > 255)
      throw new HeraldError('HERALD_ERR_BAD_REQUEST', 'Idempotency-Key must be 1–255 bytes');
    return k;
  };

  async function submit(res: Response, o: Parameters<JobStore['submit']>[0]) {
    const { job, created } = await jobs.submit(o);
    res.status(created ? 201 : 200).json({ jobId: job.id, status: job.status });
  }

  async function manage(user: User, name: string, allow: ('owner' | 'trustee')[]) {
    const role = await registry.canManage(ctx.pool, name, user);
    if (role === 'new') throw new HeraldError('HERALD_ERR_NOT_FOUND', `package ${name} does not exist`);
    // A trustee acts as a trustee on packages it also owns.
    if (user.trustee && allow.includes('trustee')) return 'trustee';
    if (role === false || !allow.includes(role)) {
      throw new HeraldError('HERALD_ERR_FORBIDDEN', `${user.name} may not do this to ${name} (needs ${allow.join(' or ')})`);
    }
    return role;
  }

  router.post('/publish', async (req, res) => {
    const user = requireUser(await tokens.authenticate(req.headers.authorization));
    const key = idempotencyKey(req);
    const { archive, fields } = await readArchive(req, config.maxArchiveBytes);
    const name = assertPackageName(single(req.query.name, 'name') ?? fields.name);
    const version = parse(versionField, single(req.query.version, 'version') ?? fields.version, 'version');
    const role = await registry.canManage(ctx.pool, name, user);
    if (role !== 'new' && role !== 'owner') throw new HeraldError('HERALD_ERR_FORBIDDEN', `${user.name} does not own ${name}`);
    await submit(res, {
      type: 'publish',
      payload: { name, version, size: archive.length, actor: actor(user) },
      lockKey: `package:${name}`,
      dedupeKey: `publish:${name}@${version}`,
      idempotencyKey: key,
      submittedBy: user.name,
      maxAttempts: config.jobMaxAttempts,
      archive,
    });
  });

  router.post('/unpublish', json, async (req, res) => {
    const user = requireUser(await tokens.authenticate(req.headers.authorization));
    const b = parse(bodies.unpublish, req.body, 'unpublish');
    const role = await manage(user, b.name, ['owner', 'trustee']);
    const at = await registry.versionPublishedAt(ctx.pool, b.name, b.version);
    if (!at) throw new HeraldError('HERALD_ERR_NOT_FOUND', `${b.name}@${b.version} does not exist`);
    if (role === 'owner' && !user.trustee && Date.now() - at.getTime() > config.unpublishWindowMs) {
      throw new HeraldError('HERALD_ERR_FORBIDDEN', `owners may unpublish within ${config.unpublishWindowMs} ms of publishing; ask a trustee`);
    }
    await submit(res, {
      type: 'unpublish',
      payload: { ...b, actor: actor(user) },
      lockKey: `package:${b.name}`,
      dedupeKey: `unpublish:${b.name}@${b.version}`,
      idempotencyKey: idempotencyKey(req),
      submittedBy: user.name,
      maxAttempts: config.jobMaxAttempts,
    });
  });

  const simple = (type: 'transfer' | 'retract' | 'moderate' | 'advisory', allow: ('owner' | 'trustee')[], dedupe: (b: Record<string, unknown>) => string) => {
    router.post(`/${type}`, json, async (req, res) => {
      const user = requireUser(await tokens.authenticate(req.headers.authorization));
      const b = parse(bodies[type], req.body, type) as { name: string } & Record<string, unknown>;
      if (allow.length === 1 && allow[0] === 'trustee' && !user.trustee) throw new HeraldError('HERALD_ERR_FORBIDDEN', `${type} is for trustees`);
      await manage(user, b.name, allow);
      if (type === 'transfer' && !(await tokens.userExists(b.newOwner as string)))
        throw new HeraldError('HERALD_ERR_NOT_FOUND', `user ${String(b.newOwner)} does not exist`);
      await submit(res, {
        type,
        payload: { ...b, actor: actor(user) },
        lockKey: `package:${b.name}`,
        dedupeKey: dedupe(b),
        idempotencyKey: idempotencyKey(req),
        submittedBy: user.name,
        maxAttempts: config.jobMaxAttempts,
      });
    });
  };
  simple('transfer', ['owner', 'trustee'], (b) => `transfer:${b.name}:${b.newOwner}`);
  simple('retract', ['owner', 'trustee'], (b) => `retract:${b.name}@${b.version}:${b.retracted}`);
  simple('moderate', ['trustee'], (b) => `moderate:${b.name}:${b.moderated}`);
  simple('advisory', ['owner', 'trustee'], (b) => `advisory:${b.name}:${b.id}`);

  router.get('/jobs', async (req, res) => {
    const q = parse(
      z.object({
        type: z
          .string()
          .regex(/^[a-z][a-z0-9-]{0,63}$/)
          .optional(),
        status: z.enum(JOB_STATUSES).optional(),
        since: z
          .string()
          .regex(/^(0|[1-9][0-9]{0,15})$/)
          .default('0'),
        limit: z.coerce.number().int().min(1).max(1000).default(100),
      }),
      req.query,
      'query',
    );
    res.json(await jobs.list({ type: q.type, status: q.status, since: Number(q.since), limit: q.limit }));
  });

  router.get('/jobs/:id', async (req, res) => {
    const job = await jobs.get(idParam(req.params.id));
    if (!job) throw new HeraldError('HERALD_ERR_NOT_FOUND', `no job ${req.params.id}`);
    res.json(job);
  });

  router.get('/jobs/:id/logs', async (req, res) => {
    const id = idParam(req.params.id);
    const q = parse(
      z.object({
        since: z.string().optional(),
        after: z.iso.datetime({ offset: true }).optional(),
        level: z.enum(Object.keys(LOG_LEVELS) as [LogLevel, ...LogLevel[]]).default('debug'),
        limit: z.coerce.number().int().min(1).max(1000).default(100),
      }),
      req.query,
      'query',
    );
    if (!(await jobs.get(id))) throw new HeraldError('HERALD_ERR_NOT_FOUND', `no job ${id}`);
    const since = q.since === undefined || q.since === '' ? 0 : parseSince(q.since, 'since', false);
    res.json(await jobs.logs(id, { since: since as number, after: q.after ? new Date(q.after) : undefined, level: q.level, limit: q.limit }));
  });

  router.get('/packages/:name', async (req, res) => {
    const name = assertPackageName(req.params.name);
    const pkg = await registry.getPackage(ctx.pool, name);
    if (!pkg) throw new HeraldError('HERALD_ERR_NOT_FOUND', `package ${name} does not exist`);
    res.json(pkg);
  });

  router.get('/packages/:name/:version/archive', async (req, res) => {
    const name = assertPackageName(req.params.name);
    const version = parse(versionField, req.params.version, 'version');
    const a = await registry.getArchive(ctx.pool, name, version);
    if (!a) throw new HeraldError('HERALD_ERR_NOT_FOUND', `${name}@${version} does not exist`);
    res.type('application/gzip').set('x-checksum-sha256', a.sha256).send(a.archive);
  });

  router.get('/status', async (_req, res) => {
    let database = 'ok';
    let counts = null;
    try {
      counts = await jobs.counts();
    } catch (err) {
      database = `error: ${(err as Error).message}`;
    }
    const listener = ctx.listener.state;
    const healthy = database === 'ok' && listener === 'listening';
    res.status(healthy ? 200 : 503).json({
      status: healthy ? 'ok' : 'degraded',
      database,
      listener: { state: listener, head: ctx.hub.head, reconnects: ctx.listener.reconnects },
      clients: { websockets: (await ctx.metrics.wsConnections.get()).values[0]?.value ?? 0, subscribers: ctx.hub.size },
      workers: workers ? { state: workers.state, size: config.workers, running: workers.running } : { state: 'none', size: 0, running: 0 },
      jobs: counts,
      exporter: exporter ? { state: exporter.state, position: exporter.position, lag: Math.max(0, ctx.hub.head - exporter.position) } : null,
    });
  });

  return router;
}
