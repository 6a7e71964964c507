import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  resolve: {
    // Tests exercise the client's source; test/client/package.test.ts installs the packed build.
    // The subpath comes first: an alias matches a prefix, and `herald-client` alone would
    // turn `herald-client/protocol` into `…/index.ts/protocol`.
    alias: [
      { find: 'herald-client/protocol', replacement: fileURLToPath(new URL('./packages/client/src/protocol.ts', import.meta.url)) },
      { find: 'herald-client', replacement: fileURLToPath(new URL('./packages/client/src/index.ts', import.meta.url)) },
    ],
  },
  test: {
    include: ['test/**/*.test.ts'],
    typecheck: { enabled: true, include: ['test/**/*.test-d.ts'], tsconfig: './tsconfig.json' },
    // build.ts first: tests that run the compiled `herald` (npm start, signals, the packed
    // client) need dist/ to match the source.
    globalSetup: ['test/support/build.ts', 'test/support/global-setup.ts'],
    // Each file gets its own database (a clone of the migrated template), so files run in
    // parallel safely; two workers match the two cores CI has.
    pool: 'forks',
    maxWorkers: 2,
    testTimeout: 60_000,
    hookTimeout: 120_000,
    teardownTimeout: 30_000,
  },
});
