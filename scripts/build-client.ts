/**
 * `npm run build:client`: bundles src/client into dist/client/index.js (ESM, no
 * dependencies but `ws`, which Node loads lazily and browsers never touch). Run by
 * `prepack`, and by the web pages' build.
 */
import { build } from 'esbuild';

export async function buildClient(outfile = 'dist/client/index.js'): Promise<void> {
  await build({
    entryPoints: [new URL('../src/client/index.ts', import.meta.url).pathname],
    bundle: true,
    format: 'esm',
    platform: 'neutral',
    target: 'es2022',
    external: ['ws'],
    outfile,
    logLevel: 'warning',
  });
}

if (import.meta.url === `file://${process.argv[1]}`) {
  await buildClient(process.argv[2]);
  console.log(`built ${process.argv[2] ?? 'dist/client/index.js'}`);
}
