/** Index sync: a generated crates.io-format index of PACKAGES packages; full sync, then a no-change re-sync. */
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createPool } from '../src/db/pool.ts';
import { createLogger } from '../src/logger.ts';
import { indexPath } from '../src/registry/index-format.ts';
import { DirectorySource } from '../src/registry/index-source.ts';
import { syncIndex } from '../src/registry/index-sync.ts';
import { benchDatabase, printTable, type Row } from './support.ts';

const PACKAGES = Number(process.env.BENCH_INDEX_PACKAGES ?? 10_000);

export async function run(): Promise<Row[]> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'herald-bench-index-'));
  const db = await benchDatabase();
  const pool = createPool(db.url, 4, createLogger('silent'));
  try {
    let versions = 0;
    for (let i = 0; i < PACKAGES; i++) {
      const name = `crate-${i.toString(36)}`;
      const n = 1 + (i % 10);
      const lines = Array.from({ length: n }, (_, v) => {
        versions++;
        return JSON.stringify({
          name,
          vers: `0.${v}.0`,
          deps: [{ name: 'dep', req: '^1', features: [], optional: false, default_features: true, target: null, kind: 'normal' }],
          cksum: createHash('sha256').update(`${name}${v}`).digest('hex'),
          features: {},
          yanked: v === 3,
        });
      });
      const file = path.join(dir, indexPath(name));
      await mkdir(path.dirname(file), { recursive: true });
      await writeFile(file, `${lines.join('\n')}\n`);
    }
    const quiet = async () => undefined;
    const t0 = performance.now();
    const full = await syncIndex(pool, new DirectorySource(dir), quiet);
    const fullS = (performance.now() - t0) / 1000;
    const t1 = performance.now();
    const again = await syncIndex(pool, new DirectorySource(dir), quiet);
    const againS = (performance.now() - t1) / 1000;
    const rows: Row[] = [
      { run: `full sync, ${PACKAGES} packages, ${versions} versions`, seconds: fullS, added: full.added, 'versions/s': versions / fullS },
      { run: 'no-change re-sync', seconds: againS, added: again.added, 'versions/s': versions / againS },
    ];
    printTable('Index sync (directory source)', rows);
    return rows;
  } finally {
    await pool.end();
    await db.stop();
    await rm(dir, { recursive: true, force: true });
  }
}
