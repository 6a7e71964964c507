/** Docker does not run here: check that the compose file parses and wires the right parts. */
import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';

interface Service {
  image?: string;
  build?: string | { context: string };
  command?: unknown;
  entrypoint?: unknown;
  working_dir?: string;
  volumes?: string[];
  environment: Record<string, string>;
  ports?: string[];
  healthcheck?: { test: string[]; disable?: boolean };
  depends_on?: Record<string, { condition: string }>;
  stop_signal?: string;
}

describe('docker-compose.yml', () => {
  it('runs PostgreSQL 17 and Herald on 8080 with DATABASE_URL pointing at it and health checks', async () => {
    const doc = parse(await readFile(new URL('../docker-compose.yml', import.meta.url), 'utf8')) as { services: Record<string, Service> };
    const { postgres, herald } = doc.services;
    expect(postgres!.image).toBe('postgres:17');
    expect(postgres!.healthcheck!.test.join(' ')).toContain('pg_isready');
    const env = postgres!.environment;
    expect(herald!.ports).toEqual(['8080:8080']);
    expect(herald!.environment.PORT).toBe('8080');
    const url = new URL(herald!.environment.DATABASE_URL!);
    expect(url.protocol).toBe('postgres:');
    expect(url.hostname).toBe('postgres');
    expect(url.port).toBe('5432');
    expect(url.username).toBe(env.POSTGRES_USER);
    expect(url.password).toBe(env.POSTGRES_PASSWORD);
    expect(url.pathname).toBe(`/${env.POSTGRES_DB}`);
    expect(herald!.depends_on!.postgres!.condition).toBe('service_healthy');
    // Herald's own health check is the image's HEALTHCHECK (test/dockerfile.test.ts); an
    // override here must still ask /readyz, and must not turn it off.
    if (herald!.healthcheck) {
      expect(herald!.healthcheck.disable).not.toBe(true);
      expect(herald!.healthcheck.test.join(' ')).toContain('/readyz');
    }
    expect(herald!.stop_signal ?? 'SIGTERM').toBe('SIGTERM');
  });

  it('builds Herald from the Dockerfile and runs the image as built: no install at start, no source mounted over it', async () => {
    const doc = parse(await readFile(new URL('../docker-compose.yml', import.meta.url), 'utf8')) as { services: Record<string, Service> };
    const herald = doc.services.herald!;
    const context = typeof herald.build === 'string' ? herald.build : herald.build?.context;
    expect(context).toBe('.');
    expect(herald.image ?? '').not.toMatch(/^node:/);
    // The image's ENTRYPOINT and CMD run it: nothing here may replace them with `npm ci`, tsx and co.
    expect(herald.command).toBeUndefined();
    expect(herald.entrypoint).toBeUndefined();
    expect(herald.working_dir).toBeUndefined();
    for (const v of herald.volumes ?? []) {
      const target = v.split(':')[1] ?? v;
      expect(target, `volume ${v}`).not.toMatch(/^\/app(\/|$)|node_modules/);
    }
  });
});
