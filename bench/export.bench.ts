/**
 * Exporter: a full export of PACKAGES × VERSIONS into a filesystem bucket (packages/s), a
 * no-change re-export, and publish-to-object-visible latency in continuous mode (HTTP
 * publish → job → event → exporter → listing visible in the bucket).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { createPool } from '../src/db/pool.ts';
import { loadConfig } from '../src/config.ts';
import { startHerald } from '../src/herald.ts';
import { createLogger } from '../src/logger.ts';
import { buildArchive } from '../src/registry/archive.ts';
import { benchDatabase, percentile, printTable, type Row } from './support.ts';

const PACKAGES = Number(process.env.BENCH_EXPORT_PACKAGES ?? 2000);
const VERSIONS = 5;
const PUBLISHES = Number(process.env.BENCH_EXPORT_PUBLISHES ?? 50);

export async function run(): Promise<Row[]> {
  const db = await benchDatabase();
  const dir = await mkdtemp(path.join(os.tmpdir(), 'herald-bench-bucket-'));
  const pool = createPool(db.url, 4, createLogger('silent'));
  try {
    // The registry, made directly in SQL: the benchmark measures the exporter, not publishing.
    const archive = await buildArchive({ 'manifest.json': '{}', 'index.js': 'export {};\n'.repeat(50) });
    await pool.query(`insert into herald.packages (name) select 'pkg-' || g from generate_series(1, $1) g`, [PACKAGES]);
    await pool.query(
      `insert into herald.versions (package, version, manifest, archive, size, sha256)
       select 'pkg-' || g, v || '.0.0', jsonb_build_object('name', 'pkg-' || g, 'version', v || '.0.0'), $2, $3, repeat('a', 64)
       from generate_series(1, $1) g, generate_series(1, ${VERSIONS}) v`,
      [PACKAGES, archive, archive.length],
    );
    const config = loadConfig(
      {
        port: 0,
        host: '127.0.0.1',
        databaseUrl: db.url,
        logLevel: 'warn',
        workers: 2,
        exporter: true,
        exportBucketUrl: `file://${dir}`,
        runtimeVersion: '2026.11.22',
        retentionMaxAgeMs: 0,
      },
      {},
    );
    const herald = await startHerald(config, { skipMigrations: true, logger: createLogger('warn'), runExporter: false });
    const rows: Row[] = [];
    try {
      const t0 = performance.now();
      const full = await herald.exporter.exportAll();
      const fullS = (performance.now() - t0) / 1000;
      rows.push({
        run: `full export, ${PACKAGES} packages × ${VERSIONS} versions`,
        seconds: fullS,
        'packages/s': PACKAGES / fullS,
        written: full.written,
        unchanged: full.skipped,
      });
      const t1 = performance.now();
      const again = await herald.exporter.exportAll();
      const againS = (performance.now() - t1) / 1000;
      rows.push({ run: 're-export, nothing changed', seconds: againS, 'packages/s': PACKAGES / againS, written: again.written, unchanged: again.skipped });
    } finally {
      await herald.close();
    }

    // Continuous mode: a fresh process whose exporter follows the log.
    const live = await startHerald(config, { skipMigrations: true, logger: createLogger('warn') });
    try {
      await new Promise((r) => setTimeout(r, 500));
      const token = await live.tokens.create('bench', false);
      const latencies: number[] = [];
      for (let i = 0; i < PUBLISHES; i++) {
        const name = `live-${i}`;
        const body = await buildArchive({ 'manifest.json': JSON.stringify({ name, version: '1.0.0', dependencies: {} }) });
        const t = performance.now();
        const res = await fetch(`${live.url}/api/v1/publish?name=${name}&version=1.0.0`, {
          method: 'POST',
          headers: { authorization: `Bearer ${token}`, 'content-type': 'application/gzip' },
          body: new Uint8Array(body),
        });
        if (res.status !== 201) throw new Error(`publish failed: ${res.status}`);
        for (;;) {
          const o = await live.bucket.get(`latest/api/packages/${name}`);
          if (o && (JSON.parse(gunzipSync(o.body).toString()) as { latest: string }).latest === '1.0.0') break;
          await new Promise((r) => setTimeout(r, 2));
        }
        latencies.push(performance.now() - t);
      }
      latencies.sort((a, b) => a - b);
      rows.push({
        run: `continuous: publish → listing visible (${PUBLISHES} publishes)`,
        seconds: '',
        'packages/s': '',
        written: `p50 ${percentile(latencies, 50).toFixed(1)} ms`,
        unchanged: `p99 ${percentile(latencies, 99).toFixed(1)} ms`,
      });
    } finally {
      await live.close();
    }
    printTable('Exporter (filesystem bucket)', rows);
    return rows;
  } finally {
    await pool.end();
    await db.stop();
    await rm(dir, { recursive: true, force: true });
  }
}
