/**
 * The last step of `npm run build`: bundles the pages' scripts (web/src/*.ts, using the client
 * library) into dist/web/*.js. Done ahead of time, never at start-up or per request: `herald
 * serve` only warns when the bundles are missing (src/ never imports scripts/).
 */
import { readdir } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

/** Bundles every web/src/*.ts page script, minified ES2022, into `outdir` (default dist/web). */
export async function buildWeb(outdir = `${ROOT}dist/web`): Promise<void> {
  const entries = (await readdir(`${ROOT}web/src`)).filter((f) => f.endsWith('.ts')).map((f) => `${ROOT}web/src/${f}`);
  await build({
    entryPoints: entries,
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    minify: true,
    // The client loads `ws` only where there is no global WebSocket, which browsers always have.
    external: ['ws'],
    outdir,
    logLevel: 'warning',
  });
}

if (import.meta.url === `file://${process.argv[1]}`) {
  await buildWeb();
  console.log('built dist/web');
}
