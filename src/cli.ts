/**
 * The `herald` command: serve | worker | migrate | emit | tail | token create|list|revoke | export | config. Flags override environment
 * variables, which override defaults (src/config.ts).
 */
import { Command, CommanderError, Option } from 'commander';
import type { HeraldClientError, WebSocketConstructor } from 'herald-client';
import { changedSettings, loadConfig, resolveConfig, resolvedTable, settingsTable, type UnknownVariable } from './config.ts';
import { waitForDatabase } from './db/connect.ts';
import { migrate } from './db/migrate.ts';
import { createPool } from './db/pool.ts';
import { EXIT_CODES, exitCodeOf, HeraldError } from './errors.ts';
import { EventLog } from './events/log.ts';
import { parseSince } from './gateway/protocol.ts';
import { startHerald } from './herald.ts';
import { createLogger, type Logger } from './logger.ts';
import { type TokenInfo, TokenStore } from './registry/tokens.ts';
import { handleStopSignals } from './signals.ts';

interface CommonFlags {
  port?: string;
  host?: string;
  databaseUrl?: string;
  dataDir?: string;
  logLevel?: string;
}

/** The log level of the command being run, once its configuration is resolved: main() shows stacks only at debug. */
let commandLogLevel: string | undefined;

function resolveFrom(flags: CommonFlags) {
  const resolved = resolveConfig({
    port: flags.port,
    host: flags.host,
    databaseUrl: flags.databaseUrl,
    dataDir: flags.dataDir,
    logLevel: flags.logLevel,
  });
  commandLogLevel = resolved.config.logLevel;
  return resolved;
}

function configFrom(flags: CommonFlags) {
  return resolveFrom(flags).config;
}

const unknownMessage = ({ variable, closest }: UnknownVariable) => `${variable} is not a Herald setting and is ignored; did you mean ${closest}?`;

/** A typo in a variable name silently keeps the default: say so, and carry on. */
function warnUnknown(logger: Logger, unknown: UnknownVariable[]) {
  for (const u of unknown) logger.warn({ variable: u.variable, closest: u.closest }, unknownMessage(u));
}

const withCommon = (cmd: Command) =>
  cmd
    .addOption(new Option('--database-url <url>', 'PostgreSQL URL (env DATABASE_URL; unset: embedded PostgreSQL)'))
    .addOption(new Option('--data-dir <dir>', 'local state directory (env HERALD_DATA_DIR)'))
    .addOption(new Option('--log-level <level>', 'log level (env LOG_LEVEL)'));

async function needDatabase(flags: CommonFlags) {
  const { config, unknown } = resolveFrom(flags);
  if (!config.databaseUrl) {
    throw new HeraldError('HERALD_ERR_CONFIG', 'this command needs DATABASE_URL (or --database-url); `herald serve` starts the embedded database');
  }
  const logger = createLogger(config.logLevel === 'info' ? 'warn' : config.logLevel, undefined, config.logFormat);
  warnUnknown(logger, unknown);
  await waitForDatabase(config.databaseUrl, { budgetMs: config.dbConnectTimeoutMs, logger });
  return { config, logger, pool: createPool(config.databaseUrl, 2, logger) };
}

/** The `herald` command tree (commander), built fresh for each run and for the help tests. */
export function buildCli(): Command {
  const program = new Command('herald')
    // Usage errors throw (subcommands inherit this) so main() can exit with EXIT_CODES.usage.
    .exitOverride()
    .description('Realtime event gateway for PostgreSQL')
    .showHelpAfterError()
    .addHelpText('after', `\nConfiguration (environment variables; flags win):\n${settingsTable()}\n`);

  withCommon(program.command('serve').description('run the gateway (WebSocket, SSE, long-poll, job API, workers) on PORT'))
    .addOption(new Option('-p, --port <port>', 'HTTP port (env PORT)'))
    .addOption(new Option('--host <host>', 'interface to bind (env HOST)'))
    .action(async (flags: CommonFlags) => {
      const { config, unknown } = resolveFrom(flags);
      const logger = createLogger(config.logLevel, undefined, config.logFormat);
      warnUnknown(logger, unknown);
      // Only what differs from the defaults: the whole table is `herald config --resolved`.
      logger.info({ settings: changedSettings(config) }, 'starting herald');
      // Before start-up: a signal while the embedded PostgreSQL starts must stop it too.
      const signals = handleStopSignals({ logger });
      // startHerald (the gateway) logs `herald listening on <url>` once it serves.
      const herald = await startHerald(config, { logger });
      signals.started(herald.close);
    });

  withCommon(program.command('worker').description('run job workers only (no HTTP); HERALD_WORKERS sets how many')).action(async (flags: CommonFlags) => {
    const { config, unknown } = resolveFrom(flags);
    if (!config.databaseUrl)
      throw new HeraldError('HERALD_ERR_CONFIG', 'herald worker needs DATABASE_URL (or --database-url): it joins an existing deployment');
    const logger = createLogger(config.logLevel, undefined, config.logFormat);
    warnUnknown(logger, unknown);
    const signals = handleStopSignals({ logger });
    const herald = await startHerald(config, { logger, http: false, runExporter: false });
    const id = herald.workers?.id ?? '(none)';
    logger.info({ workerId: id, workers: config.workers }, `herald worker ${id} running ${config.workers} workers`);
    signals.started(herald.close);
  });

  withCommon(program.command('export').description('regenerate the exported static API (--full) and/or collect garbage (--gc)'))
    .option('--full', 'export every package now, with progress and a summary')
    .option('--gc', 'delete old release prefixes and the objects of packages deleted or moderated past the grace period')
    .action(async (flags: CommonFlags & { full?: boolean; gc?: boolean }) => {
      if (!flags.full && !flags.gc) throw new HeraldError('HERALD_ERR_BAD_REQUEST', 'say what to do: --full, --gc, or both');
      const config = configFrom(flags);
      if (!config.databaseUrl) throw new HeraldError('HERALD_ERR_CONFIG', 'herald export needs DATABASE_URL (or --database-url)');
      const herald = await startHerald({ ...config, workers: 0 }, { logger: createLogger('warn'), http: false, runExporter: false });
      try {
        if (flags.full) {
          const t0 = Date.now();
          const tty = process.stderr.isTTY;
          const counts = await herald.exporter.exportAll((done, total) => {
            if (tty || done === total || done % 100 === 0) {
              const width = 30;
              const filled = Math.round((done / Math.max(total, 1)) * width);
              process.stderr.write(`${tty ? '\r' : ''}[${'#'.repeat(filled)}${' '.repeat(width - filled)}] ${done}/${total} packages${tty ? '' : '\n'}`);
            }
          });
          if (tty) process.stderr.write('\n');
          console.log(
            `export: ${counts.written} written, ${counts.skipped} unchanged, ${counts.deleted} deleted in ${((Date.now() - t0) / 1000).toFixed(1)} s (${herald.bucket.id})`,
          );
        }
        if (flags.gc) {
          const r = await herald.exporter.gc();
          console.log(
            `gc: ${r.deletedObjects} objects deleted; old prefixes removed: ${r.deletedPrefixes.join(', ') || 'none'}; ${r.strays.length} stray objects reported`,
          );
        }
      } finally {
        await herald.close();
      }
    });

  const token = program.command('token').description("manage the job API's user tokens (create, list, revoke); needs DATABASE_URL");
  withCommon(token.command('create').description('create a token for a user (created if new); the token is printed once'))
    .requiredOption('--user <name>', 'user name')
    .option('--trustee', 'grant the trustee role')
    .action(async (flags: CommonFlags & { user: string; trustee?: boolean }) => {
      const { pool } = await needDatabase(flags);
      try {
        console.log(await new TokenStore(pool).create(flags.user, Boolean(flags.trustee)));
      } finally {
        await pool.end();
      }
    });
  withCommon(token.command('list').description('list tokens: id, user, role, prefix, created, last used (never the token or its hash)'))
    .option('--user <name>', "only this user's tokens")
    .option('--all', 'include revoked tokens')
    .action(async (flags: CommonFlags & { user?: string; all?: boolean }) => {
      const { pool } = await needDatabase(flags);
      try {
        const tokens = await new TokenStore(pool).list({ user: flags.user, includeRevoked: flags.all });
        console.log(tokens.length ? tokenTable(tokens, Boolean(flags.all)) : 'no tokens (`herald token create --user NAME` makes one)');
      } finally {
        await pool.end();
      }
    });
  withCommon(token.command('revoke').description('revoke a token at once, by its id or prefix from `herald token list`'))
    .argument('<id|prefix>', 'token id, or its prefix (hrld_ and at least 4 more characters), or the whole token')
    .action(async (ref: string, flags: CommonFlags) => {
      const { pool } = await needDatabase(flags);
      try {
        const { token: t, alreadyRevoked } = await new TokenStore(pool).revoke(ref);
        const what = `token ${t.id} of ${t.user}${t.prefix ? ` (${t.prefix}…)` : ''}`;
        console.log(alreadyRevoked ? `${what} was already revoked at ${isoSeconds(t.revokedAt!)}` : `revoked ${what}`);
      } finally {
        await pool.end();
      }
    });

  withCommon(program.command('migrate').description('apply pending migrations and exit')).action(async (flags: CommonFlags) => {
    const { logger, pool } = await needDatabase(flags);
    try {
      const applied = await migrate(pool, logger);
      console.log(applied.length ? `applied migrations ${applied.join(', ')}` : 'schema is up to date');
    } finally {
      await pool.end();
    }
  });

  withCommon(program.command('emit').description('append one event to the log and print its id'))
    .argument('<topic>', 'topic, e.g. package:left-pad')
    .argument('<type>', 'event type, e.g. published')
    .argument('[data]', 'JSON data', 'null')
    .action(async (topic: string, type: string, data: string, flags: CommonFlags) => {
      let parsed: unknown;
      try {
        parsed = JSON.parse(data);
      } catch {
        throw new HeraldError('HERALD_ERR_BAD_REQUEST', `data is not valid JSON: ${data.slice(0, 80)}`);
      }
      const { pool } = await needDatabase(flags);
      try {
        console.log(await new EventLog(pool).emit({ topic, type, data: parsed }));
      } finally {
        await pool.end();
      }
    });

  program
    .command('tail')
    .description('follow the event log live over WebSocket, one JSON event per line on stdout; reconnects and resumes by itself, saying why on stderr')
    .option('--url <url>', 'Herald base URL, or ws(s)://host/v1/ws (env HERALD_URL; one of the two is required)')
    .option('-t, --topic <topic...>', 'topic or prefix* to follow (repeatable)', ['*'])
    .option('--since <id|now>', 'start after this event id', 'now')
    .option('--token <token>', 'read token for private topics (env HERALD_TOKEN)')
    .action(async (opts: { url?: string; topic: string[]; since: string; token?: string }) => {
      const say = (line: string) => process.stderr.write(`herald tail: ${line}\n`);
      const config = loadConfig();
      const url = opts.url ?? config.serverUrl;
      // Never a default server: tailing localhost:8080 by surprise looks like an empty log.
      if (!url || !/^(https?|wss?):\/\/[^/]/.test(url)) {
        say(url ? `--url must be an http(s):// or ws(s):// URL; got ${JSON.stringify(url.slice(0, 80))}` : NO_URL);
        process.exitCode = EXIT_CODES.usage;
        return;
      }
      const since = parseSince(opts.since, '--since');
      const { connect } = await import('herald-client');
      // Always `ws`, not Node 22's global WebSocket: that one hides a refused upgrade's status
      // and never reports a failed first connection, so tail could neither say why nor stop.
      const { WebSocket } = await import('ws');
      type HeraldConnection = ReturnType<typeof connect>;
      const fatal = await new Promise<HeraldClientError | null>((resolve) => {
        const conn: HeraldConnection = connect({
          url,
          topics: opts.topic,
          since,
          token: opts.token ?? config.clientToken,
          WebSocket: WebSocket as unknown as WebSocketConstructor,
          onEvent: (e) => console.log(JSON.stringify(e)),
          onStateChange: (s) => {
            if (s === 'open') say(`open (position ${conn.position})`);
          },
          onReconnect: ({ delayMs, reason }) => say(`reconnecting in ${(delayMs / 1000).toFixed(1)} s (${reason})`),
          onError: (err) => resolve(err),
        });
        const stop = () => {
          conn.close();
          resolve(null);
        };
        // `on`, not `once`: the same Ctrl-C relayed again by npm must not kill tail mid-exit.
        process.on('SIGINT', stop);
        process.on('SIGTERM', stop);
      });
      if (fatal) {
        say(`${fatal.code}: ${fatal.message.replace(/\s+/g, ' ')}`);
        process.exitCode = EXIT_CODES.failure;
      }
    });

  withCommon(program.command('config').description('print every setting with its default, or the resolved values with --resolved'))
    .option('--resolved', 'print the value of every setting in this environment and where it came from (flag, env, default); secrets redacted')
    .addOption(new Option('-p, --port <port>', 'HTTP port (env PORT)'))
    .addOption(new Option('--host <host>', 'interface to bind (env HOST)'))
    .action((opts: CommonFlags & { resolved?: boolean }) => {
      if (!opts.resolved) {
        console.log(settingsTable());
        return;
      }
      const resolved = resolveFrom(opts);
      console.log(resolvedTable(resolved));
      for (const u of resolved.unknown) console.error(`herald: warning: ${unknownMessage(u)}`);
    });

  return program;
}

const NO_URL = 'no server to follow: pass --url <url> or set HERALD_URL';

/** A time as `2026-11-22T10:04:05Z`: to the second, in UTC. */
const isoSeconds = (d: Date) => d.toISOString().replace(/\.\d+Z$/, 'Z');

/** `herald token list` as aligned columns; never the token or its hash. */
function tokenTable(tokens: TokenInfo[], withRevoked: boolean): string {
  const rows = tokens.map((t) => [
    String(t.id),
    t.user,
    t.trustee ? 'trustee' : 'user',
    t.prefix ? `${t.prefix}…` : '(none)',
    isoSeconds(t.createdAt),
    t.lastUsedAt ? isoSeconds(t.lastUsedAt) : 'never',
    ...(withRevoked ? [t.revokedAt ? isoSeconds(t.revokedAt) : '-'] : []),
  ]);
  const header = ['ID', 'USER', 'ROLE', 'PREFIX', 'CREATED', 'LAST USED', ...(withRevoked ? ['REVOKED'] : [])];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const pad = (cell: string, i: number) => cell.padEnd(widths[i]!);
  const line = (r: string[]) => r.map(pad).join('  ').trimEnd();
  return [header, ...rows].map(line).join('\n');
}

/** Whether the command runs at LOG_LEVEL=debug (or trace), even when it failed before resolving its configuration. */
function showsStacks(): boolean {
  let level = commandLogLevel;
  if (level === undefined) {
    try {
      level = loadConfig().logLevel;
    } catch {
      // The configuration itself is what failed: no level to go by.
    }
  }
  return level === 'debug' || level === 'trace';
}

/** Runs the command line `argv`, exiting with EXIT_CODES on failure (one line on stderr, never a stack unless at debug). */
export async function main(argv: string[]): Promise<void> {
  try {
    await buildCli().parseAsync(argv);
  } catch (err) {
    // Commander has already printed its message (and the help, or the version).
    if (err instanceof CommanderError) process.exit(err.exitCode === 0 ? EXIT_CODES.ok : EXIT_CODES.usage);
    // One line on stderr, whatever failed; the stack only for an unexpected error, at debug.
    console.error(`herald: ${err instanceof Error ? err.message : String(err)}`);
    const code = exitCodeOf(err);
    if (code === EXIT_CODES.failure && err instanceof Error && err.stack && showsStacks()) console.error(err.stack);
    process.exit(code);
  }
}

if (process.argv[1] && import.meta.url.endsWith(process.argv[1].split('/').pop()!)) {
  void main(process.argv);
}
