/**
 * The registry's API under /api/v1: submit registry operations as jobs, read jobs and their
 * logs (the generic reads of jobs/routes.ts), read packages, and the component status.
 * Bodies and queries are parsed with the job types' zod schemas (job-types.ts); permissions
 * are checked at submission (clear 401/403/404 at once); publish checks ownership again
 * inside its transaction, where a concurrent first publish could race it.
 */
import { type Request, type Response, Router } from 'express';
import type pg from 'pg';
import type { Config } from '../config.ts';
import { coerceError, HeraldError } from '../errors.ts';
import type { Hub } from '../events/hub.ts';
import type { Listener } from '../events/listener.ts';
import type { Exporter } from '../exporter/exporter.ts';
import { jsonBody } from '../http/json-input.ts';
import type { Metrics } from '../http/metrics.ts';
import { createJobReadRoutes, parse, type ReadableTopics } from '../jobs/routes.ts';
import type { JobStore, SubmitOptions } from '../jobs/store.ts';
import type { WorkerPool } from '../jobs/worker-pool.ts';
import { assertPackageName } from './archive.ts';
import { IdempotencyStore } from './idempotency.ts';
import { type JobPayloadInput, type RegistryJobType, SUBMISSION_BODIES, submitJob, versionField } from './job-types.ts';
import * as registry from './store.ts';
import { requireUser, type TokenStore, type User } from './tokens.ts';
import { readArchive } from './upload.ts';

/** The settings the routes read (the whole Config satisfies it). */
export type RegistryRouteSettings = Pick<Config, 'maxArchiveBytes' | 'jobMaxAttempts' | 'unpublishWindowMs' | 'workers'>;

/** What the registry's API uses. */
export interface RegistryRoutesDeps {
  readonly jobs: JobStore;
  readonly tokens: TokenStore;
  /** For the registry store's reads (packages, archives, permissions). */
  readonly pool: pg.Pool;
  readonly settings: RegistryRouteSettings;
  /** The local worker pool, if this process runs one (for /status). */
  readonly workers: WorkerPool | null;
  /** The exporter, for its lag in /status. */
  readonly exporter: Pick<Exporter, 'state' | 'position'>;
  /** /status reports these gateway parts of this process. */
  readonly listener: Pick<Listener, 'state' | 'reconnects'>;
  readonly hub: Pick<Hub, 'head' | 'size'>;
  readonly metrics: Pick<Metrics, 'wsConnections'>;
  /** The gateway's read rules: a job's record and log lines are readable where its `job:<id>` is. */
  readonly readable: ReadableTopics;
}

type Role = 'owner' | 'trustee';

/** A parsed JSON submission: the package it acts on, its payload, dedupe key and own check. */
interface Prepared<T extends RegistryJobType> {
  name: string;
  payload: JobPayloadInput<T>;
  dedupeKey: string;
  check?: () => Promise<void>;
}

const single = (v: unknown, field: string): string | undefined => {
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw new HeraldError('HERALD_ERR_BAD_REQUEST', `${field} must be given once`);
  return v;
};

const actorOf = (u: User): User => ({ name: u.name, trustee: u.trustee });

function idempotencyKey(req: Request): string | undefined {
  const k = req.headers['idempotency-key'];
  if (k === undefined) return undefined;
  if (typeof k !== 'string' || k.length === 0 || Buffer.byteLength(k) > 255)
    throw new HeraldError('HERALD_ERR_BAD_REQUEST', 'Idempotency-Key must be 1–255 bytes');
  return k;
}

/** The /api/v1 router: submissions, job reads, package reads and /status. */
export function createRegistryRoutes(deps: RegistryRoutesDeps): Router {
  const { jobs, tokens, pool, settings } = deps;
  const keys = new IdempotencyStore(pool);
  const router = Router();
  const json = jsonBody(64 * 1024);

  /**
   * Submits a registry job under the package's lock key and answers 201 (new) or 200 (the same
   * job). An Idempotency-Key is bound to the submitter and this request first (idempotency.ts).
   */
  async function submit<T extends RegistryJobType>(
    res: Response,
    type: T,
    payload: JobPayloadInput<T>,
    o: Omit<SubmitOptions, 'type' | 'payload' | 'maxAttempts' | 'lockKey' | 'submittedBy'> & { name: string; submittedBy: string },
  ): Promise<void> {
    const { name, idempotencyKey: key, ...options } = o;
    const idempotencyKey = key === undefined ? undefined : await keys.claim(options.submittedBy, key, { type, payload, archive: options.archive });
    const { job, created } = await submitJob(jobs, type, payload, {
      ...options,
      idempotencyKey,
      lockKey: `package:${name}`,
      maxAttempts: settings.jobMaxAttempts,
    });
    res.status(created ? 201 : 200).json({ jobId: job.id, status: job.status });
  }

  async function manage(user: User, name: string, allow: Role[]): Promise<Role> {
    const role = await registry.canManage(pool, name, user);
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
    const { archive, fields } = await readArchive(req, settings.maxArchiveBytes);
    const name = assertPackageName(single(req.query.name, 'name') ?? fields.name);
    const version = parse(versionField, single(req.query.version, 'version') ?? fields.version, 'version');
    const role = await registry.canManage(pool, name, user);
    if (role !== 'new' && role !== 'owner') throw new HeraldError('HERALD_ERR_FORBIDDEN', `${user.name} does not own ${name}`);
    await submit(
      res,
      'publish',
      { name, version, size: archive.length, actor: actorOf(user) },
      { name, dedupeKey: `publish:${name}@${version}`, idempotencyKey: key, submittedBy: user.name, archive },
    );
  });

  router.post('/unpublish', json, async (req, res) => {
    const user = requireUser(await tokens.authenticate(req.headers.authorization));
    const b = parse(SUBMISSION_BODIES.unpublish, req.body, 'unpublish');
    const role = await manage(user, b.name, ['owner', 'trustee']);
    const at = await registry.versionPublishedAt(pool, b.name, b.version);
    if (!at) throw new HeraldError('HERALD_ERR_NOT_FOUND', `${b.name}@${b.version} does not exist`);
    if (role === 'owner' && !user.trustee && Date.now() - at.getTime() > settings.unpublishWindowMs) {
      throw new HeraldError('HERALD_ERR_FORBIDDEN', `owners may unpublish within ${settings.unpublishWindowMs} ms of publishing; ask a trustee`);
    }
    await submit(
      res,
      'unpublish',
      { ...b, actor: actorOf(user) },
      { name: b.name, dedupeKey: `unpublish:${b.name}@${b.version}`, idempotencyKey: idempotencyKey(req), submittedBy: user.name },
    );
  });

  /**
   * The JSON submissions that need only a role. `prepare` parses the body (400 first); then a
   * trustee-only type refuses others before the package is looked up, the role is checked,
   * then the type's own check runs, and the job is submitted under the prepared dedupe key.
   */
  function roleSubmission<T extends 'transfer' | 'retract' | 'moderate' | 'advisory'>(
    type: T,
    allow: Role[],
    prepare: (body: unknown, actor: User) => Prepared<T>,
  ): void {
    router.post(`/${type}`, json, async (req, res) => {
      const user = requireUser(await tokens.authenticate(req.headers.authorization));
      const p = prepare(req.body, actorOf(user));
      if (allow.length === 1 && allow[0] === 'trustee' && !user.trustee) throw new HeraldError('HERALD_ERR_FORBIDDEN', `${type} is for trustees`);
      await manage(user, p.name, allow);
      await p.check?.();
      await submit(res, type, p.payload, { name: p.name, dedupeKey: p.dedupeKey, idempotencyKey: idempotencyKey(req), submittedBy: user.name });
    });
  }
  roleSubmission('transfer', ['owner', 'trustee'], (body, actor) => {
    const b = parse(SUBMISSION_BODIES.transfer, body, 'transfer');
    return {
      name: b.name,
      payload: { ...b, actor },
      dedupeKey: `transfer:${b.name}:${b.newOwner}`,
      check: async () => {
        if (!(await tokens.userExists(b.newOwner))) throw new HeraldError('HERALD_ERR_NOT_FOUND', `user ${b.newOwner} does not exist`);
      },
    };
  });
  roleSubmission('retract', ['owner', 'trustee'], (body, actor) => {
    const b = parse(SUBMISSION_BODIES.retract, body, 'retract');
    return { name: b.name, payload: { ...b, actor }, dedupeKey: `retract:${b.name}@${b.version}:${b.retracted}` };
  });
  roleSubmission('moderate', ['trustee'], (body, actor) => {
    const b = parse(SUBMISSION_BODIES.moderate, body, 'moderate');
    return { name: b.name, payload: { ...b, actor }, dedupeKey: `moderate:${b.name}:${b.moderated}` };
  });
  roleSubmission('advisory', ['owner', 'trustee'], (body, actor) => {
    const b = parse(SUBMISSION_BODIES.advisory, body, 'advisory');
    return { name: b.name, payload: { ...b, actor }, dedupeKey: `advisory:${b.name}:${b.id}` };
  });

  router.use(createJobReadRoutes(jobs, deps.readable));

  router.get('/packages/:name', async (req, res) => {
    const name = assertPackageName(req.params.name);
    const pkg = await registry.getPackage(pool, name);
    if (!pkg) throw new HeraldError('HERALD_ERR_NOT_FOUND', `package ${name} does not exist`);
    res.json(pkg);
  });

  router.get('/packages/:name/:version/archive', async (req, res) => {
    const name = assertPackageName(req.params.name);
    const version = parse(versionField, req.params.version, 'version');
    const a = await registry.getArchive(pool, name, version);
    if (!a) throw new HeraldError('HERALD_ERR_NOT_FOUND', `${name}@${version} does not exist`);
    res.type('application/gzip').set('x-checksum-sha256', a.sha256).send(a.archive);
  });

  router.get('/status', async (_req, res) => {
    const { listener, hub, metrics, workers, exporter } = deps;
    let database = 'ok';
    let counts = null;
    try {
      counts = await jobs.counts();
    } catch (err) {
      database = `error: ${coerceError(err).message}`;
    }
    const healthy = database === 'ok' && listener.state === 'listening';
    res.status(healthy ? 200 : 503).json({
      status: healthy ? 'ok' : 'degraded',
      database,
      listener: { state: listener.state, head: hub.head, reconnects: listener.reconnects },
      clients: { websockets: (await metrics.wsConnections.get()).values[0]?.value ?? 0, subscribers: hub.size },
      workers: workers ? { state: workers.state, size: settings.workers, running: workers.running } : { state: 'none', size: 0, running: 0 },
      jobs: counts,
      exporter: { state: exporter.state, position: exporter.position, lag: Math.max(0, hub.head - exporter.position) },
    });
  });

  return router;
}
