/** Herald itself, in its own process, on the bench database. */
import { loadConfig } from '../../src/config.ts';
import { startHerald } from '../../src/herald.ts';
import { serve, stats } from './ipc.ts';

const herald = await startHerald(
  loadConfig(
    {
      port: 0,
      host: '127.0.0.1',
      databaseUrl: process.env.BENCH_DATABASE_URL,
      logLevel: 'warn',
      retentionMaxAgeMs: 0,
      wsPingIntervalMs: 600_000,
      ...JSON.parse(process.env.BENCH_HERALD_CONFIG ?? '{}'),
    },
    {},
  ),
  { skipMigrations: true },
);
serve({
  url: () => herald.url,
  stats,
  connections: () => herald.websockets.size,
  /** The Listener's head: the highest id published to subscribers. */
  head: () => herald.ctx.hub.head,
  /** Subscriptions that fell back to table reads so far (a burst a client could not keep up with). */
  fallbacks: async () => (await herald.ctx.metrics.slowConsumerFallbacks.get()).values[0]?.value ?? 0,
});
