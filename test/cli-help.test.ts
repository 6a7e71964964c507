/**
 * The CLI's help is part of its surface: every command says what it does in `herald --help`
 * and `herald <command> --help`, and README.md's CLI section lists every command.
 */
import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { buildCli } from '../src/cli.ts';

/** Every command under `cmd`, as its words after `herald` (`['token', 'revoke']`). */
function commands(cmd: Command, prefix: string[] = []): { words: string[]; cmd: Command }[] {
  return cmd.commands.flatMap((c) => {
    const words = [...prefix, c.name()];
    return [{ words, cmd: c }, ...commands(c, words)];
  });
}

const all = commands(buildCli());
const leaves = all.filter((c) => c.cmd.commands.length === 0);

describe('herald --help', () => {
  it('knows the commands this test expects (a new command needs a README line too)', () => {
    expect(all.map((c) => c.words.join(' ')).sort()).toEqual(
      ['config', 'emit', 'export', 'migrate', 'serve', 'tail', 'token', 'token create', 'token list', 'token revoke', 'worker'].sort(),
    );
  });

  it.for(all.map((c) => c.words.join(' ')))('`herald %s --help` starts with a description of what the command does', (words) => {
    const { cmd } = all.find((c) => c.words.join(' ') === words)!;
    expect(cmd.description().length).toBeGreaterThan(15);
    // Commander wraps long lines to the terminal width.
    const help = cmd.helpInformation().replace(/\s+/g, ' ');
    expect(help).toContain(`Usage: herald ${words}`);
    expect(help).toContain(cmd.description());
  });

  it('the top-level help lists every command with its description', () => {
    const help = buildCli().helpInformation();
    for (const { words, cmd } of all.filter((c) => c.words.length === 1)) {
      expect(help).toMatch(new RegExp(`\\n  ${words[0]}\\b`));
      expect(help.replace(/\s+/g, ' ')).toContain(cmd.description());
    }
  });

  it('says where `herald tail` gets its server, with no default URL', () => {
    const tail = all.find((c) => c.words.join(' ') === 'tail')!.cmd.helpInformation();
    expect(tail).toContain('HERALD_URL');
    expect(tail).not.toContain('localhost:8080');
  });

  it("README.md's CLI section names every command", async () => {
    const readme = await readFile(new URL('../README.md', import.meta.url), 'utf8');
    const start = readme.indexOf('\n## CLI\n');
    expect(start, 'README.md has a "## CLI" section').toBeGreaterThan(0);
    const end = readme.indexOf('\n## ', start + 1);
    const section = readme.slice(start, end < 0 ? undefined : end);
    for (const { words } of leaves) expect(section, `README CLI section lacks herald ${words.join(' ')}`).toContain(`\`herald ${words.join(' ')}`);
  });
});
