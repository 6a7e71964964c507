/** Tiny request/response over a child process's IPC channel, for the bench peers. */
import type { ChildProcess } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { Session } from 'node:inspector/promises';

export interface Stats {
  cpuUserUs: number;
  cpuSystemUs: number;
  rss: number;
}

/**
 * CPU so far and RSS. With `gc`, collects garbage first (peers run with --expose-gc) so RSS
 * is comparable; CPU windows skip it, or the forced collection would count as work.
 */
export function stats(msg: { gc?: unknown } = {}): Stats {
  if (msg.gc !== false) (globalThis as { gc?: () => void }).gc?.();
  const c = process.cpuUsage();
  return { cpuUserUs: c.user, cpuSystemUs: c.system, rss: process.memoryUsage.rss() };
}

/** In a peer: answer requests `{id, cmd, ...}` with `{id, result}` or `{id, error}`. */
export function serve(own: Record<string, (msg: Record<string, unknown>) => unknown>): void {
  const handlers: Record<string, (msg: Record<string, unknown>) => unknown> = { ...profiling(), ...own };
  process.on('message', async (msg: { id: number; cmd: string } & Record<string, unknown>) => {
    try {
      const handler = handlers[msg.cmd];
      if (!handler) throw new Error(`unknown command ${msg.cmd}`);
      process.send!({ id: msg.id, result: await handler(msg) });
    } catch (err) {
      process.send!({ id: msg.id, error: (err as Error).message });
    }
  });
  process.send!({ ready: true });
}

/** In the orchestrator: a client for a peer started with fork(). */
export function peer(child: ChildProcess) {
  let next = 1;
  const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  const ready = new Promise<void>((resolve, reject) => {
    child.on('message', (m: { id?: number; ready?: boolean; result?: unknown; error?: string }) => {
      if (m.ready) return resolve();
      const p = pending.get(m.id!);
      if (!p) return;
      pending.delete(m.id!);
      if (m.error) p.reject(new Error(m.error));
      else p.resolve(m.result);
    });
    child.on('exit', (code) => reject(new Error(`peer exited with ${code}`)));
  });
  return {
    ready,
    call<T>(cmd: string, args: Record<string, unknown> = {}): Promise<T> {
      const id = next++;
      return new Promise<T>((resolve, reject) => {
        pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
        child.send({ id, cmd, ...args });
      });
    },
    kill() {
      child.kill('SIGKILL');
    },
  };
}

/**
 * `profileStart` / `profileStop {file}`: a V8 CPU profile of a window of a peer's work (for
 * `BENCH_CPU_PROF`), opened in Chrome DevTools or summarized by bench/profile-summary.ts.
 */
function profiling(): Record<string, (msg: Record<string, unknown>) => unknown> {
  let session: Session | null = null;
  return {
    profileStart: async () => {
      session = new Session();
      session.connect();
      await session.post('Profiler.enable');
      await session.post('Profiler.setSamplingInterval', { interval: 100 });
      await session.post('Profiler.start');
      return null;
    },
    profileStop: async ({ file }) => {
      if (!session) throw new Error('profileStart first');
      const { profile } = await session.post('Profiler.stop');
      session.disconnect();
      session = null;
      await writeFile(file as string, JSON.stringify(profile));
      return file;
    },
  };
}
