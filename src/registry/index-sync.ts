/**
 * Index sync: load the whole upstream index, load the mirrored state, and apply only the
 * differences with idempotent statements (`INSERT … ON CONFLICT DO NOTHING RETURNING`,
 * conditional `UPDATE … RETURNING`). Events are emitted from what those statements return,
 * in the same statement, so running the same sync twice, or two at once from two
 * processes, leaves the same state and never emits a change twice.
 */
import type pg from 'pg';
import type { LogLevel } from '../jobs/store.ts';
import { type IndexEntry, type LineProblem, parseIndexFile } from './index-format.ts';
import type { IndexSource } from './index-source.ts';
import { type IndexRow, IndexStore } from './index-store.ts';

/** What a sync read and changed (the job's result, and the `index` `synced` event's data). */
export interface SyncResult {
  files: number;
  unchangedFiles: number;
  versions: number;
  added: number;
  yanked: number;
  unyanked: number;
  problems: number;
}

const BATCH = 1000;

/** Brings the mirror in line with `source` (see the file header); `log` reports progress. */
export async function syncIndex(pool: pg.Pool, source: IndexSource, log: (level: LogLevel, message: string) => Promise<void>): Promise<SyncResult> {
  const index = new IndexStore(pool);
  const result: SyncResult = { files: 0, unchangedFiles: 0, versions: 0, added: 0, yanked: 0, unyanked: 0, problems: 0 };
  const upstream = new Map<string, IndexRow>();
  const problems: LineProblem[] = [];
  for await (const file of source.files()) {
    result.files++;
    if (file.text === null) {
      result.unchangedFiles++;
      continue;
    }
    const parsed = parseIndexFile(file.path, file.text);
    problems.push(...parsed.problems);
    for (const e of parsed.entries) {
      const key = `${e.name.toLowerCase()}\0${e.vers}`;
      if (upstream.has(key)) {
        problems.push({ file: file.path, line: 0, message: `duplicate version ${e.name} ${e.vers}` });
        continue;
      }
      upstream.set(key, toRow(e));
    }
    if (result.files % 2000 === 0) await log('info', `read ${result.files} index files, ${upstream.size} versions`);
  }
  result.versions = upstream.size;
  result.problems = problems.length;
  for (const p of problems.slice(0, 200)) await log('warn', `${p.file}:${p.line}: ${p.message} (skipped)`);
  if (problems.length > 200) await log('warn', `${problems.length - 200} more bad lines not listed`);
  await log('info', `read ${result.files} files (${result.unchangedFiles} unchanged), ${upstream.size} versions; comparing with the mirror`);

  const mirror = await index.mirror();
  const adds: IndexRow[] = [];
  const flips: IndexRow[] = [];
  for (const [key, row] of upstream) {
    const known = mirror.get(key);
    if (known === undefined) adds.push(row);
    else if (known !== row.yanked) flips.push(row);
  }
  await log('info', `${adds.length} new versions, ${flips.length} yank changes`);

  for (let i = 0; i < adds.length; i += BATCH) {
    result.added += await index.addVersions(adds.slice(i, i + BATCH));
    await log('debug', `recorded ${Math.min(i + BATCH, adds.length)}/${adds.length} new versions`);
  }
  for (let i = 0; i < flips.length; i += BATCH) {
    const changed = await index.applyYanks(flips.slice(i, i + BATCH));
    result.yanked += changed.yanked;
    result.unyanked += changed.unyanked;
  }
  await source.commit?.();
  // A summary on `index`, only when something changed: a no-op sync emits nothing.
  if (result.added + result.yanked + result.unyanked > 0) {
    await index.emitSynced(result);
  }
  await log('info', `sync done: ${result.added} added, ${result.yanked} yanked, ${result.unyanked} un-yanked, ${result.problems} bad lines skipped`);
  return result;
}

function toRow(e: IndexEntry): IndexRow {
  return { lname: e.name.toLowerCase(), name: e.name, vers: e.vers, cksum: e.cksum, yanked: e.yanked, entry: e.raw };
}
