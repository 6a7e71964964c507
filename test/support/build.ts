/**
 * Global setup: makes sure the compiled build (dist/, packages/client/dist/) is no older
 * than the source, running `npm run build` if it is, so tests that start the real `herald`
 * command or pack the client never test a stale build. CI's `npm ci` has just built it.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

function newest(dir: string, ext: RegExp): number {
  let max = 0;
  for (const e of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile() && ext.test(e.name)) max = Math.max(max, statSync(path.join(e.parentPath, e.name)).mtimeMs);
  }
  return max;
}

function oldestOutput(files: string[]): number {
  try {
    return Math.min(...files.map((f) => statSync(path.join(ROOT, f)).mtimeMs));
  } catch {
    return 0;
  }
}

export default function setup() {
  const source = Math.max(
    newest(path.join(ROOT, 'src'), /\.ts$/),
    newest(path.join(ROOT, 'packages/client/src'), /\.ts$/),
    newest(path.join(ROOT, 'web/src'), /\.ts$/),
  );
  const built = oldestOutput(['dist/cli.js', 'dist/web/job.js', 'packages/client/dist/index.js']);
  if (built >= source) return;
  process.stderr.write('test setup: dist/ is older than the source; running `npm run build`\n');
  execFileSync('npm', ['run', '--silent', 'build'], { cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit'] });
}
