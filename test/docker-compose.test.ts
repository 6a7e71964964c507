/** Docker does not run here: check that the compose file parses and names the right parts. */
import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';

interface Service {
  image: string;
  environment: Record<string, string>;
  ports?: string[];
  healthcheck?: { test: string[] };
  depends_on?: Record<string, { condition: string }>;
}

describe('docker-compose.yml', () => {
  it('runs PostgreSQL 17 and Herald on 8080 with DATABASE_URL pointing at it and health checks', async () => {
    const doc = parse(await readFile(new URL('../docker-compose.yml', import.meta.url), 'utf8')) as { services: Record<string, Service> };
    const { postgres, herald } = doc.services;
    expect(postgres!.image).toBe('postgres:17');
    expect(postgres!.healthcheck!.test.join(' ')).toContain('pg_isready');
    const env = postgres!.environment;
    expect(herald!.image).toMatch(/^node:20/);
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
    expect(herald!.healthcheck!.test.join(' ')).toContain('/readyz');
  });
});
