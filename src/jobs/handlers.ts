/**
 * The registry's job handlers. Each checks what it can before touching the store, logs
 * what it does, and applies its effects in one transaction (JobContext.commit) together
 * with the job's success and the `package:<name>` event.
 */
import type pg from 'pg';
import type { Config } from '../config.ts';
import { openIndexSource } from '../registry/index-source.ts';
import { syncIndex } from '../registry/index-sync.ts';
import { HeraldError } from '../errors.ts';
import { assertManifestMatches, inspectArchive } from '../registry/archive.ts';
import * as registry from '../registry/store.ts';
import type { User } from '../registry/tokens.ts';
import type { ClaimedJob } from './store.ts';
import type { JobHandler } from './worker-pool.ts';

interface Payload {
  name: string;
  version?: string;
  [k: string]: unknown;
}

const payloadOf = (job: ClaimedJob) => job.payload as Payload;

/** The submitter, as the job recorded it at submission (permissions were checked then; publish re-checks ownership in its transaction). */
function submitter(job: ClaimedJob): User {
  const p = job.payload as { actor?: { name: string; trustee: boolean } };
  if (!p.actor) throw new HeraldError('HERALD_ERR_BAD_REQUEST', 'job has no submitter');
  return p.actor;
}

export function createRegistryHandlers(config: Config, pool: pg.Pool): Record<string, JobHandler> {
  return {
    // A takedown request from the web form: recorded for trustees (contact details in
    // herald.takedown_requests, not in the public job), acknowledged in the job log.
    takedown: {
      async run(job, jc) {
        await jc.log('info', `takedown request for ${String((job.payload as { package?: unknown }).package)} recorded; awaiting trustee review`);
        await jc.commit(async () => ({ state: 'awaiting-review' }));
      },
    },
    'index-sync': {
      async run(_job, jc) {
        if (!config.indexSourceUrl) throw new HeraldError('HERALD_ERR_BAD_REQUEST', 'no index source is configured (HERALD_INDEX_SOURCE_URL)');
        const source = openIndexSource(config.indexSourceUrl, config.indexNames, pool, config.indexFetchConcurrency);
        await jc.log('info', `syncing from ${source.id}`);
        const result = await syncIndex(pool, source, (level, message) => jc.log(level, message));
        await jc.commit(async () => result);
      },
    },
    publish: {
      async run(job, jc) {
        const { name, version } = payloadOf(job);
        await jc.log('info', `publishing ${name}@${version}`);
        const archive = await jc.input();
        if (!archive) throw new HeraldError('HERALD_ERR_BAD_REQUEST', 'the job has no archive');
        await jc.log('debug', `checking the archive (${archive.length} bytes)`);
        const info = await inspectArchive(archive, {
          maxCompressedBytes: config.maxArchiveBytes,
          maxUncompressedBytes: config.maxArchiveUncompressedBytes,
          maxFiles: config.maxArchiveFiles,
        });
        assertManifestMatches(info.manifest, { name, version });
        await jc.log('info', `archive ok: ${info.files} files, ${info.uncompressedBytes} bytes unpacked, sha256 ${info.sha256}`);
        const deps = Object.keys(info.manifest.dependencies);
        if (deps.length) await jc.log('info', `dependencies: ${deps.map((d) => `${d}@${info.manifest.dependencies[d]}`).join(', ')}`);
        const user = submitter(job);
        await jc.log('info', `recording ${name}@${version}`);
        await jc.commit((tx) => registry.publishVersion(tx, user, info, archive));
      },
    },
    unpublish: {
      async run(job, jc) {
        const { name, version, reason } = payloadOf(job) as Payload & { reason: string };
        await jc.log('info', `unpublishing ${name}@${version}: ${reason}`);
        await jc.commit((tx) => registry.unpublishVersion(tx, name, version!));
      },
    },
    transfer: {
      async run(job, jc) {
        const { name, newOwner } = payloadOf(job) as Payload & { newOwner: string };
        await jc.log('info', `transferring ${name} to ${newOwner}`);
        await jc.commit((tx) => registry.transferPackage(tx, name, newOwner));
      },
    },
    retract: {
      async run(job, jc) {
        const { name, version, retracted } = payloadOf(job) as Payload & { retracted: boolean };
        await jc.log('info', `${retracted ? 'retracting' : 'un-retracting'} ${name}@${version}`);
        await jc.commit((tx) => registry.retractVersion(tx, name, version!, retracted));
      },
    },
    moderate: {
      async run(job, jc) {
        const { name, moderated, reason } = payloadOf(job) as Payload & { moderated: boolean; reason: string };
        await jc.log('info', `${moderated ? 'moderating' : 'restoring'} ${name}: ${reason}`);
        await jc.commit((tx) => registry.moderatePackage(tx, name, moderated));
      },
    },
    advisory: {
      async run(job, jc) {
        const { name, id, summary, affected } = payloadOf(job) as Payload & registry.AdvisoryInput;
        await jc.log('info', `advisory ${id} for ${name} (${affected})`);
        await jc.commit((tx) => registry.upsertAdvisory(tx, name, { id, summary, affected }));
      },
    },
  };
}
