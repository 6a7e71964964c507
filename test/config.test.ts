import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { defaults, loadConfig, redactConfig, SETTINGS } from '../src/config.ts';
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
    expect(() => loadConfig({}, { HERALD_POLL_DEFAULT_LIMIT: '500', HERALD_POLL_MAX_LIMIT: '100' })).toThrow(/pollDefaultLimit \(500\) must not exceed pollMaxLimit \(100\)/);
  });

  it('redactConfig hides secrets', () => {
    const r = redactConfig(loadConfig({}, { HERALD_PUBLISH_TOKENS: 'sekrit', DATABASE_URL: 'postgres://u:pw@h/db' }));
    expect(JSON.stringify(r)).not.toMatch(/sekrit|pw@/);
    expect(r.port).toBe(8080);
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
