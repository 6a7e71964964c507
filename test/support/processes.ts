/** Child processes of one test file: the compiled `herald` command, and what to clean up after. */
import type { ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterAll } from 'vitest';

/** The `herald` command as users run it: bin/herald.js, which runs dist/cli.js with plain node. */
export const HERALD_BIN = fileURLToPath(new URL('../../bin/herald.js', import.meta.url));

/**
 * A set for the file's child processes and a list of cleanups; after the file's tests, every
 * child still running is killed and the cleanups run in reverse order. Call at top level.
 */
export function trackProcesses(): { children: Set<ChildProcess>; cleanups: (() => Promise<unknown>)[] } {
  const children = new Set<ChildProcess>();
  const cleanups: (() => Promise<unknown>)[] = [];
  afterAll(async () => {
    for (const c of children) c.kill('SIGKILL');
    for (const c of cleanups.reverse()) await c().catch(() => undefined);
  });
  return { children, cleanups };
}
