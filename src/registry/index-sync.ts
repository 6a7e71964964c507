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

type Row = { lname: string; name: string; vers: string; cksum: string; yanked: boolean; entry: Record<string, unknown> };

export async function syncIndex(pool: pg.Pool, source: IndexSource, log: (level: LogLevel, message: string) => Promise<void>): Promise<SyncResult> {
  const result: SyncResult = { files: 0, unchangedFiles: 0, versions: 0, added: 0, yanked: 0, unyanked: 0, problems: 0 };
  const upstream = new Map<string, Row>();
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

  const mirror = new Map<string, boolean>();
  for (const r of (await pool.query<{ lname: string; vers: string; yanked: boolean }>('select lname, vers, yanked from herald.index_versions')).rows) {
    mirror.set(`${r.lname}\0${r.vers}`, r.yanked);
  }
  const adds: Row[] = [];
  const flips: Row[] = [];
  for (const [key, row] of upstream) {
    const known = mirror.get(key);
    if (known === undefined) adds.push(row);
    else if (known !== row.yanked) flips.push(row);
  }
  await log('info', `${adds.length} new versions, ${flips.length} yank changes`);

  for (let i = 0; i < adds.length; i += BATCH) {
    const { rows } = await pool.query<{ n: number }>(
      `with input as (select * from jsonb_to_recordset($1::jsonb) as x(lname text, name text, vers text, cksum text, yanked boolean, entry jsonb)),
       ins as (
         insert into herald.index_versions (lname, name, vers, cksum, yanked, entry)
         select lname, name, vers, cksum, yanked, entry from input
         on conflict do nothing
         returning lname, name, vers, cksum, yanked
       ),
       ev as (
         select herald.emit('package:' || lname, 'index-version', jsonb_build_object('name', name, 'vers', vers, 'cksum', cksum, 'yanked', yanked)) from ins
       )
       select (select count(*)::int from ev) as n`,
      [JSON.stringify(adds.slice(i, i + BATCH))],
    );
    result.added += rows[0]!.n;
    await log('debug', `recorded ${Math.min(i + BATCH, adds.length)}/${adds.length} new versions`);
  }
  for (let i = 0; i < flips.length; i += BATCH) {
    const { rows } = await pool.query<{ yanked: number; unyanked: number }>(
      `with input as (select * from jsonb_to_recordset($1::jsonb) as x(lname text, vers text, yanked boolean, entry jsonb)),
       upd as (
         update herald.index_versions v set yanked = i.yanked, entry = i.entry, synced_at = now()
         from input i where v.lname = i.lname and v.vers = i.vers and v.yanked is distinct from i.yanked
         returning v.lname, v.name, v.vers, v.yanked
       ),
       ev as (
         select yanked, herald.emit('package:' || lname, case when yanked then 'index-yank' else 'index-unyank' end,
                                    jsonb_build_object('name', name, 'vers', vers, 'yanked', yanked)) from upd
       )
       select count(*) filter (where yanked)::int as yanked, count(*) filter (where not yanked)::int as unyanked from ev`,
      [JSON.stringify(flips.slice(i, i + BATCH))],
    );
    result.yanked += rows[0]!.yanked;
    result.unyanked += rows[0]!.unyanked;
  }
  await source.commit?.();
  // A summary on `index`, only when something changed: a no-op sync emits nothing.
  if (result.added + result.yanked + result.unyanked > 0) {
    await pool.query(`select herald.emit('index', 'synced', $1::jsonb)`, [JSON.stringify(result)]);
  }
  await log('info', `sync done: ${result.added} added, ${result.yanked} yanked, ${result.unyanked} un-yanked, ${result.problems} bad lines skipped`);
  return result;
}

function toRow(e: IndexEntry): Row {
  return { lname: e.name.toLowerCase(), name: e.name, vers: e.vers, cksum: e.cksum, yanked: e.yanked, entry: e.raw };
}
