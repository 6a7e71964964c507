/** Starts a real Herald (HTTP server, Listener, pool) on a test database, with captured logs. */
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { type ConfigInput, loadConfig } from '../../src/config.ts';
import { type Herald, type StartOptions, startHerald } from '../../src/herald.ts';
import { createLogger } from '../../src/logger.ts';

export interface TestHerald extends Herald {
  /** Every log line written so far, as JSON text. */
  logs: string[];
}

export const TEST_PUBLISH_TOKEN = 'test-publisher-token-0123456789';

export async function startTestHerald(databaseUrl: string, overrides: ConfigInput = {}, options: StartOptions = {}): Promise<TestHerald> {
  // No process.env: tests are hermetic whatever the developer's shell exports.
  const config = loadConfig(
    {
      port: 0,
      host: '127.0.0.1',
      databaseUrl,
      logLevel: 'info',
      dbPoolMax: 20,
      publishTokens: [TEST_PUBLISH_TOKEN],
      retentionMaxAgeMs: 0,
      shutdownGraceMs: 500,
      // Never the repository's ./.herald: a private data directory (and bucket) per instance.
      dataDir: mkdtempSync(path.join(os.tmpdir(), 'herald-data-')),
      exporter: false,
      ...overrides,
    },
    {},
  );
  const logs: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      logs.push(chunk.toString('utf8'));
      cb();
    },
  });
  const herald = await startHerald(config, { logger: createLogger(config.logLevel, sink), skipMigrations: true, ...options });
  return Object.assign(herald, { logs });
}

/** POST /v1/events with the test token. */
export async function publish(url: string, body: unknown, token = TEST_PUBLISH_TOKEN): Promise<Response> {
  return fetch(`${url}/v1/events`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify(body),
  });
}

/** Resolves when `predicate` holds, polling every few ms; rejects after `timeoutMs`. */
export async function until(predicate: () => boolean | Promise<boolean>, timeoutMs = 10_000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
