import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { changedSettings, defaults, loadConfig, redactConfig, resolveConfig, resolvedTable, SETTINGS } from '../src/config.ts';
import { HeraldError } from '../src/errors.ts';

describe('config', () => {
  it('defaults apply when nothing is set, and the result is frozen', () => {
    const c = loadConfig({}, {});
    expect(c.port).toBe(8080);
    expect(c.databaseUrl).toBeUndefined();
    expect(c.maxClientQueueBytes).toBe(1024 * 1024);
    expect(c.pollMaxLimit).toBe(1000);
    expect(Object.isFrozen(c)).toBe(true);
  });

  it('flags win over env, env wins over defaults', () => {
    expect(loadConfig({}, { PORT: '9000' }).port).toBe(9000);
    expect(loadConfig({ port: '9100' }, { PORT: '9000' }).port).toBe(9100);
    expect(loadConfig({}, { HERALD_PUBLISH_TOKENS: 'a, b,,' }).publishTokens).toEqual(['a', 'b']);
  });

  it('a bad setting stops start-up with a message naming the key and variable, never the secret value', () => {
    const attempt = () => loadConfig({}, { PORT: 'eighty', HERALD_POLL_MAX_LIMIT: '0', DATABASE_URL: 'not a url with password hunter2' });
    expect(attempt).toThrow(HeraldError);
    try {
      attempt();
    } catch (err) {
      const msg = (err as HeraldError).message;
      expect((err as HeraldError).code).toBe('HERALD_ERR_CONFIG');
      expect(msg).toContain('port (PORT="eighty")');
      expect(msg).toContain('pollMaxLimit (HERALD_POLL_MAX_LIMIT="0")');
      expect(msg).toContain('databaseUrl (DATABASE_URL=<hidden>)');
      expect(msg).not.toContain('hunter2');
    }
  });

  it('checks combinations', () => {
    expect(() => loadConfig({}, { HERALD_POLL_DEFAULT_LIMIT: '500', HERALD_POLL_MAX_LIMIT: '100' })).toThrow(
      /pollDefaultLimit \(500\) must not exceed pollMaxLimit \(100\)/,
    );
  });

  it('redactConfig hides secrets', () => {
    const r = redactConfig(loadConfig({}, { HERALD_PUBLISH_TOKENS: 'sekrit', DATABASE_URL: 'postgres://u:pw@h/db' }));
    expect(JSON.stringify(r)).not.toMatch(/sekrit|pw@/);
    expect(r.port).toBe(8080);
  });

  it('resolveConfig reports where each value came from: flag, env or default', () => {
    const { config, sources } = resolveConfig({ port: '9100' }, { PORT: '9000', HOST: '127.0.0.1', HERALD_DATA_DIR: '' });
    expect(config.port).toBe(9100);
    expect(sources.port).toBe('flag');
    expect(sources.host).toBe('env');
    // An empty variable counts as unset.
    expect(sources.dataDir).toBe('default');
    expect(sources.logLevel).toBe('default');
  });

  it('an invalid configuration is reported on one line', () => {
    expect(() => loadConfig({}, { PORT: 'eighty', HERALD_POLL_MAX_LIMIT: '0' })).toThrow(
      /^invalid configuration: [^\n]*port \(PORT="eighty"\)[^\n]*; pollMaxLimit/,
    );
  });

  it('redaction hides only the password of DATABASE_URL, and hides tokens whole', () => {
    const r = redactConfig(
      loadConfig(
        {},
        {
          DATABASE_URL: 'postgres://alice:hunter2@db.example:6432/app',
          HERALD_READ_TOKENS: 'r1,r2',
          HERALD_HEALTHCHECK_URL: 'https://hc-ping.com/uuid-secret',
        },
      ),
    );
    expect(r.databaseUrl).toBe('postgres://alice:***@db.example:6432/app');
    expect(r.readTokens).toEqual(['[redacted]', '[redacted]']);
    expect(r.healthcheckUrl).toBe('[redacted]');
    expect(JSON.stringify(r)).not.toMatch(/hunter2|r1|uuid-secret/);
    // A URL without a password has nothing to hide.
    expect(redactConfig(loadConfig({}, { DATABASE_URL: 'postgres://db.example/app' })).databaseUrl).toBe('postgres://db.example/app');
  });

  it('herald config --resolved shows each value with its source, tells an empty list from a set one, and never a secret', () => {
    const table = resolvedTable(
      resolveConfig(
        { port: '9100' },
        { DATABASE_URL: 'postgres://alice:hunter2@db.example/app', HERALD_PUBLISH_TOKENS: 'sekrit', HERALD_PRIVATE_TOPIC_PREFIXES: 'private:' },
      ),
    );
    const row = (variable: string) =>
      table
        .split('\n')
        .find((l) => l.startsWith(`${variable} `))
        ?.split(/\s{2,}/);
    expect(table.split('\n')[0]).toMatch(/^VARIABLE\s+VALUE\s+SOURCE$/);
    expect(row('PORT')).toEqual(['PORT', '9100', 'flag']);
    expect(row('DATABASE_URL')).toEqual(['DATABASE_URL', 'postgres://alice:***@db.example/app', 'env']);
    expect(row('HERALD_PUBLISH_TOKENS')).toEqual(['HERALD_PUBLISH_TOKENS', '["[redacted]"]', 'env']);
    expect(row('HERALD_READ_TOKENS')).toEqual(['HERALD_READ_TOKENS', '[]', 'default']);
    expect(row('HERALD_PRIVATE_TOPIC_PREFIXES')).toEqual(['HERALD_PRIVATE_TOPIC_PREFIXES', '["private:"]', 'env']);
    expect(row('HERALD_HEALTHCHECK_URL')).toEqual(['HERALD_HEALTHCHECK_URL', '(unset)', 'default']);
    expect(table).not.toMatch(/hunter2|sekrit/);
    expect(table.split('\n')).toHaveLength(Object.keys(SETTINGS).length + 1);
  });

  it('the start-up line lists only settings that differ from their defaults, redacted', () => {
    const changed = changedSettings(loadConfig({}, { PORT: '9000', HOST: '0.0.0.0', HERALD_PUBLISH_TOKENS: 'sekrit' }));
    expect(changed).toEqual({ PORT: 9000, HERALD_PUBLISH_TOKENS: ['[redacted]'] });
    expect(changedSettings(loadConfig({}, {}))).toEqual({});
  });

  it('a HERALD_* variable no setting reads is reported with the closest setting', () => {
    const { unknown } = resolveConfig({}, { HERALD_PORTT: '9000', HERALD_PUBLISH_TOKEN: 'x', HERALD_WORKERS: '2', PATH: '/bin', HOME: '/root' });
    expect(unknown).toEqual([
      { variable: 'HERALD_PORTT', closest: 'PORT' },
      { variable: 'HERALD_PUBLISH_TOKEN', closest: 'HERALD_PUBLISH_TOKENS' },
    ]);
  });

  it('README documents every environment variable with its default', async () => {
    const readme = await readFile(new URL('../README.md', import.meta.url), 'utf8');
    for (const [key, s] of Object.entries(SETTINGS)) {
      expect(readme, `README lacks ${s.env}`).toContain(`\`${s.env}\``);
      const d = defaults[key as keyof typeof defaults];
      if (typeof d === 'number') expect(readme).toMatch(new RegExp(`\\| \`${s.env}\` \\| \`${key}\` \\| ${d} \\|`));
    }
  });
});
