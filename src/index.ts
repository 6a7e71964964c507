/**
 * Herald as a library: start a gateway in your own process (the `herald` command does the
 * same from the environment). The client is its own package, `herald-client`.
 */
export { defaults, loadConfig, SETTINGS, type Config, type ConfigInput } from './config.ts';
export { HeraldError } from './errors.ts';
export { startHerald, type Herald, type StartOptions } from './herald.ts';
export type { JobHandler } from './jobs/worker-pool.ts';
