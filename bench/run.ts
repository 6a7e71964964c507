/**
 * `npm run bench [name…]`: runs the benchmarks (all by default) against a private
 * embedded PostgreSQL and prints one table each. Record results in BENCHMARKS.md with the
 * command that produced them. EXPERIMENTS run only when named: they measure designs Herald
 * does not use, to show what bounds the ones it does.
 */
import os from 'node:os';

const BENCHES: Record<string, () => Promise<unknown>> = {
  appends: async () => (await import('./appends.bench.ts')).run(),
  publish: async () => (await import('./publish.bench.ts')).run(),
  fanout: async () => (await import('./fanout.bench.ts')).run(),
  jobs: async () => (await import('./jobs.bench.ts')).run(),
  chatty: async () => (await import('./chatty.bench.ts')).run(),
  export: async () => (await import('./export.bench.ts')).run(),
  index: async () => (await import('./index.bench.ts')).run(),
  reconnect: async () => (await import('./reconnect.bench.ts')).run(),
  catchup: async () => (await import('./catchup.bench.ts')).run(),
  attack: async () => (await import('./attack.bench.ts')).run(),
};
const EXPERIMENTS: Record<string, () => Promise<unknown>> = {
  'write-limits': async () => (await import('./write-limits.bench.ts')).run(),
};
const ALL = { ...BENCHES, ...EXPERIMENTS };

const wanted = process.argv.slice(2).filter((a) => !a.startsWith('-'));
const names = wanted.length ? wanted : Object.keys(BENCHES);
const unknown = names.filter((n) => !ALL[n]);
if (unknown.length) {
  console.error(`unknown bench: ${unknown.join(', ')} (have: ${Object.keys(BENCHES).join(', ')}; by name only: ${Object.keys(EXPERIMENTS).join(', ')})`);
  process.exit(2);
}
console.log(`# Herald benchmarks — ${new Date().toISOString()} — node ${process.version}, ${os.cpus().length} × ${os.cpus()[0]?.model ?? 'cpu'}`);
for (const name of names) {
  console.log(`\n## ${name}`);
  await ALL[name]!();
}
