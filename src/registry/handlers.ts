/**
 * The registry's job handlers. Each gets its payload checked against its type's schema
 * (job-types.ts), checks what it can before touching the store, logs what it does, and
 * applies its effects in one transaction (JobContext.commit) together with the job's success
 * and the `package:<name>` event. A line that only announces that transaction (`retracting …`)
 * is handed to commit(), which writes it in the transaction: one commit per job, not two, and
 * the line appears with the effects. Publish logs its steps as it goes, so they show live.
 */
import type pg from 'pg';
import type { Config } from '../config.ts';
import { HeraldError } from '../errors.ts';
import type { JobHandler } from '../jobs/worker-pool.ts';
import { assertManifestMatches, inspectArchive } from './archive.ts';
import { openIndexSource } from './index-source.ts';
import type { IndexStore } from './index-store.ts';
import { syncIndex } from './index-sync.ts';
import { type RegistryJobType, registryHandler } from './job-types.ts';
import * as registry from './store.ts';

/** The settings the handlers read (the whole Config satisfies it). */
export type HandlerSettings = Pick<
  Config,
  'indexSourceUrl' | 'indexNames' | 'indexFetchConcurrency' | 'maxArchiveBytes' | 'maxArchiveUncompressedBytes' | 'maxArchiveFiles'
>;

/** What the handlers use besides the job's own context. */
export interface HandlerDeps {
  readonly settings: HandlerSettings;
  /** The index tables, for the sparse source's validators. */
  readonly index: IndexStore;
  /** The pool index sync writes through (its statements are idempotent, outside the job's transaction). */
  readonly pool: pg.Pool;
}

/** One handler per registry job type. */
export function createRegistryHandlers({ settings, index, pool }: HandlerDeps): Record<RegistryJobType, JobHandler> {
  return {
    // A takedown request from the web form: recorded for trustees (contact details in
    // herald.takedown_requests, not in the public job), acknowledged in the job log.
    takedown: registryHandler('takedown', async (p, jc) => {
      await jc.commit(async () => ({ state: 'awaiting-review' }), {
        lines: [{ level: 'info', message: `takedown request for ${p.package} recorded; awaiting trustee review` }],
      });
    }),
    'index-sync': registryHandler('index-sync', async (_p, jc) => {
      if (!settings.indexSourceUrl) throw new HeraldError('HERALD_ERR_BAD_REQUEST', 'no index source is configured (HERALD_INDEX_SOURCE_URL)');
      const source = openIndexSource(settings.indexSourceUrl, settings.indexNames, index, settings.indexFetchConcurrency);
      await jc.log('info', `syncing from ${source.id}`);
      const result = await syncIndex(pool, source, (level, message) => jc.log(level, message));
      await jc.commit(async () => result);
    }),
    publish: registryHandler('publish', async ({ name, version, actor }, jc) => {
      await jc.log('info', `publishing ${name}@${version}`);
      const archive = await jc.input();
      if (!archive) throw new HeraldError('HERALD_ERR_BAD_REQUEST', 'the job has no archive');
      await jc.log('debug', `checking the archive (${archive.length} bytes)`);
      const info = await inspectArchive(archive, {
        maxCompressedBytes: settings.maxArchiveBytes,
        maxUncompressedBytes: settings.maxArchiveUncompressedBytes,
        maxFiles: settings.maxArchiveFiles,
      });
      assertManifestMatches(info.manifest, { name, version });
      await jc.log('info', `archive ok: ${info.files} files, ${info.uncompressedBytes} bytes unpacked, sha256 ${info.sha256}`);
      const deps = Object.keys(info.manifest.dependencies);
      if (deps.length) await jc.log('info', `dependencies: ${deps.map((d) => `${d}@${info.manifest.dependencies[d]}`).join(', ')}`);
      await jc.log('info', `recording ${name}@${version}`);
      // The submitter as recorded at submission; publish re-checks ownership in its transaction.
      await jc.commit((tx) => registry.publishVersion(tx, actor, info, archive));
    }),
    unpublish: registryHandler('unpublish', async ({ name, version, reason }, jc) => {
      await jc.commit((tx) => registry.unpublishVersion(tx, name, version), {
        lines: [{ level: 'info', message: `unpublishing ${name}@${version}: ${reason}` }],
      });
    }),
    transfer: registryHandler('transfer', async ({ name, newOwner }, jc) => {
      await jc.commit((tx) => registry.transferPackage(tx, name, newOwner), { lines: [{ level: 'info', message: `transferring ${name} to ${newOwner}` }] });
    }),
    retract: registryHandler('retract', async ({ name, version, retracted }, jc) => {
      await jc.commit((tx) => registry.retractVersion(tx, name, version, retracted), {
        lines: [{ level: 'info', message: `${retracted ? 'retracting' : 'un-retracting'} ${name}@${version}` }],
      });
    }),
    moderate: registryHandler('moderate', async ({ name, moderated, reason }, jc) => {
      await jc.commit((tx) => registry.moderatePackage(tx, name, moderated), {
        lines: [{ level: 'info', message: `${moderated ? 'moderating' : 'restoring'} ${name}: ${reason}` }],
      });
    }),
    advisory: registryHandler('advisory', async ({ name, id, summary, affected }, jc) => {
      await jc.commit((tx) => registry.upsertAdvisory(tx, name, { id, summary, affected }), {
        lines: [{ level: 'info', message: `advisory ${id} for ${name} (${affected})` }],
      });
    }),
  };
}
