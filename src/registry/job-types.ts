/**
 * The registry's job types and one zod schema per payload, used at both ends: a submission
 * is checked before it is stored (submitJob), and a worker checks what it claimed before
 * acting on it (registryHandler). A payload that fails at run time (a hand-written SQL
 * submission, docs/jobs.md "Submitting from SQL") fails the job at once as bad_request.
 */
import semver from 'semver';
import { z } from 'zod';
import { parse } from '../jobs/routes.ts';
import type { ClaimedJob, JobJson, JobStore, SubmitOptions } from '../jobs/store.ts';
import type { JobContext, JobHandler } from '../jobs/worker-pool.ts';
import { assertPackageName } from './archive.ts';
import { USER_NAME_RE } from './names.ts';

/** A version as the API takes it: the canonical semver 2.0 spelling, so a version has one. */
export const versionField = z.string().refine((v) => semver.valid(v) === v, 'must be a semver 2.0 version such as 1.2.3');

/** A package name, checked with assertPackageName (its message names the rule). */
export const nameField = z.string().transform((n) => assertPackageName(n));

/** Who submitted a job, as recorded at submission (permissions were checked then). */
const actor = z.object({ name: z.string(), trustee: z.boolean() }).strict();

/** The JSON bodies of the API's submissions (strict: an unknown field is a 400). */
export const SUBMISSION_BODIES = {
  unpublish: z.object({ name: nameField, version: versionField, reason: z.string().min(1).max(1000) }).strict(),
  transfer: z.object({ name: nameField, newOwner: z.string().regex(USER_NAME_RE, 'must be a user name') }).strict(),
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

/**
 * One payload schema per job type. API submissions add `actor`; a SQL submission may leave it
 * out except for publish, whose ownership check needs it (docs/jobs.md).
 */
export const JOB_PAYLOADS = {
  publish: z.object({ name: nameField, version: versionField, size: z.number().int().nonnegative(), actor }).strict(),
  unpublish: SUBMISSION_BODIES.unpublish.extend({ actor: actor.optional() }),
  transfer: SUBMISSION_BODIES.transfer.extend({ actor: actor.optional() }),
  retract: SUBMISSION_BODIES.retract.extend({ actor: actor.optional() }),
  moderate: SUBMISSION_BODIES.moderate.extend({ actor: actor.optional() }),
  advisory: SUBMISSION_BODIES.advisory.extend({ actor: actor.optional() }),
  // What triggered it (webhook, periodic); SQL submissions may send `{}`.
  'index-sync': z.object({ reason: z.string().optional() }).strict(),
  // The requester's contact details are not here: jobs are public (takedown-store.ts).
  takedown: z.object({ package: nameField }).strict(),
};

/** A registry job type. */
export type RegistryJobType = keyof typeof JOB_PAYLOADS;

/** The checked payload of a job type. */
export type JobPayload<T extends RegistryJobType> = z.output<(typeof JOB_PAYLOADS)[T]>;

/** A payload of a job type as submitted (before defaults apply). */
export type JobPayloadInput<T extends RegistryJobType> = z.input<(typeof JOB_PAYLOADS)[T]>;

// JOB_PAYLOADS seen through a mapped type, so that indexing it with a generic type keeps
// the pairing of a type with its payload (TypeScript's "correlated union" pattern).
const SCHEMAS: { [K in RegistryJobType]: z.ZodType<JobPayload<K>, JobPayloadInput<K>> } = JOB_PAYLOADS;

/** Checks a payload against its type's schema and submits the job. */
export async function submitJob<T extends RegistryJobType>(
  jobs: Pick<JobStore, 'submit'>,
  type: T,
  payload: JobPayloadInput<T>,
  options: Omit<SubmitOptions, 'type' | 'payload'>,
): Promise<{ job: JobJson; created: boolean }> {
  const checked = parse(SCHEMAS[type], payload, `${type} job payload`);
  return jobs.submit({ ...options, type, payload: checked });
}

/** A handler for a registry job type: it runs with the payload checked against the type's schema. */
export function registryHandler<T extends RegistryJobType>(
  type: T,
  run: (payload: JobPayload<T>, jc: JobContext, job: ClaimedJob) => Promise<void>,
): JobHandler {
  return {
    run: (job, jc) => run(parse(SCHEMAS[type], job.payload, `${type} job payload`), jc, job),
  };
}
