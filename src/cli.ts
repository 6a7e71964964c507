/**
 * The `herald` command: serve | worker | migrate | emit | tail | token create | export | config. Flags override environment
 * variables, which override defaults (src/config.ts).
 */
import { Command, Option } from 'commander';
import { loadConfig, redactConfig, settingsTable, type ConfigInput } from './config.ts';
import { migrate } from './db/migrate.ts';
import { createPool } from './db/pool.ts';
import { HeraldError } from './errors.ts';
import { EventLog } from './events/log.ts';
import { parseSince } from './gateway/protocol.ts';
import { startHerald } from './herald.ts';
import { createLogger } from './logger.ts';
import { TokenStore } from './registry/tokens.ts';

interface CommonFlags {
  port?: string;
  host?: string;
  databaseUrl?: string;
  dataDir?: string;
  logLevel?: string;
}

function configFrom(flags: CommonFlags) {
  const input: ConfigInput = {
    port: flags.port,
    host: flags.host,
    databaseUrl: flags.databaseUrl,
    dataDir: flags.dataDir,
    logLevel: flags.logLevel,
  };
  return loadConfig(input);
}

const withCommon = (cmd: Command) =>
  cmd
    .addOption(new Option('--database-url <url>', 'PostgreSQL URL (env DATABASE_URL; unset: embedded PostgreSQL)'))
    .addOption(new Option('--data-dir <dir>', 'local state directory (env HERALD_DATA_DIR)'))
    .addOption(new Option('--log-level <level>', 'log level (env LOG_LEVEL)'));

async function needDatabase(flags: CommonFlags) {
  const config = configFrom(flags);
  if (!config.databaseUrl) {
    throw new HeraldError('HERALD_ERR_CONFIG', 'this command needs DATABASE_URL (or --database-url); `herald serve` starts the embedded database');
  }
  const logger = createLogger(config.logLevel === 'info' ? 'warn' : config.logLevel);
  return { config, logger, pool: createPool(config.databaseUrl, 2, logger) };
}

export function buildCli(): Command {
  const program = new Command('herald')
    .description('Realtime event gateway for PostgreSQL')
    .showHelpAfterError()
    .addHelpText('after', `\nConfiguration (environment variables; flags win):\n${settingsTable()}\n`);

  withCommon(program.command('serve').description('run the gateway (WebSocket, SSE, long-poll, job API, workers) on PORT'))
    .addOption(new Option('-p, --port <port>', 'HTTP port (env PORT)'))
    .addOption(new Option('--host <host>', 'interface to bind (env HOST)'))
    .action(async (flags: CommonFlags) => {
      const config = configFrom(flags);
      const logger = createLogger(config.logLevel);
      logger.info({ config: redactConfig(config) }, 'starting herald');
      const herald = await startHerald(config, { logger });
      console.log(`herald listening on ${herald.url}`);
      let firstSignalAt = 0;
      const stop = (signal: string) => {
        // One Ctrl-C reaches this process twice (from the terminal's process group and
        // relayed by tsx/npm), so only a signal a second or more after the first forces exit.
        if (firstSignalAt > 0) {
          if (Date.now() - firstSignalAt < 1000) return;
          logger.warn({ signal }, 'second signal: exiting now');
          process.exit(1);
        }
        firstSignalAt = Date.now();
        logger.info({ signal }, 'shutting down');
        herald.close().then(
          () => process.exit(0),
          (err: unknown) => {
            logger.error({ err }, 'shutdown failed');
            process.exit(1);
          },
        );
      };
      process.on('SIGINT', () => stop('SIGINT'));
      process.on('SIGTERM', () => stop('SIGTERM'));
    });

  withCommon(program.command('worker').description('run job workers only (no HTTP); HERALD_WORKERS sets how many')).action(async (flags: CommonFlags) => {
    const config = configFrom(flags);
    if (!config.databaseUrl) throw new HeraldError('HERALD_ERR_CONFIG', 'herald worker needs DATABASE_URL (or --database-url): it joins an existing deployment');
    const logger = createLogger(config.logLevel);
    const herald = await startHerald(config, { logger, http: false, runExporter: false });
    console.log(`herald worker ${herald.workers?.id ?? '(none)'} running ${config.workers} workers`);
    const stop = () => void herald.close().then(() => process.exit(0));
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
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
          console.log(`export: ${counts.written} written, ${counts.skipped} unchanged, ${counts.deleted} deleted in ${((Date.now() - t0) / 1000).toFixed(1)} s (${herald.bucket.id})`);
        }
        if (flags.gc) {
          const r = await herald.exporter.gc();
          console.log(`gc: ${r.deletedObjects} objects deleted; old prefixes removed: ${r.deletedPrefixes.join(', ') || 'none'}; ${r.strays.length} stray objects reported`);
        }
      } finally {
        await herald.close();
      }
    });

  const token = program.command('token').description('manage API tokens');
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
    .description('follow the event log live over WebSocket, printing one JSON event per line (resumes across disconnects)')
    .option('--url <url>', 'Herald base URL', 'http://localhost:8080')
    .option('-t, --topic <topic...>', 'topic or prefix* to follow (repeatable)', ['*'])
    .option('--since <id|now>', 'start after this event id', 'now')
    .option('--token <token>', 'read token for private topics (or HERALD_TOKEN)')
    .action(async (opts: { url: string; topic: string[]; since: string; token?: string }) => {
      const since = parseSince(opts.since, '--since');
      const { connect } = await import('./client/index.ts');
      type HeraldConnection = ReturnType<typeof connect>;
      await new Promise<void>((resolve, reject) => {
        const conn: HeraldConnection = connect({
          url: opts.url,
          topics: opts.topic,
          since,
          token: opts.token ?? loadConfig().clientToken,
          onEvent: (e) => console.log(JSON.stringify(e)),
          onStateChange: (s) => console.error(`herald tail: ${s}${conn?.position !== undefined ? ` (position ${conn.position})` : ''}`),
          onError: (err) => reject(new Error(`${err.code}: ${err.message}`)),
        });
        const stop = () => {
          conn.close();
          resolve();
        };
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
      });
    });

  program
    .command('config')
    .description('print every setting with its default, or the resolved values with --resolved')
    .option('--resolved', 'print the values this environment resolves to (secrets hidden)')
    .action((opts: { resolved?: boolean }) => {
      console.log(opts.resolved ? JSON.stringify(redactConfig(loadConfig()), null, 2) : settingsTable());
    });

  return program;
}

export async function main(argv: string[]): Promise<void> {
  try {
    await buildCli().parseAsync(argv);
  } catch (err) {
    const message = err instanceof HeraldError ? err.message : err instanceof Error ? (err.stack ?? err.message) : String(err);
    console.error(`herald: ${message}`);
    process.exit(err instanceof HeraldError && err.code === 'HERALD_ERR_CONFIG' ? 78 : 1);
  }
}

if (process.argv[1] && import.meta.url.endsWith(process.argv[1].split('/').pop()!)) {
  void main(process.argv);
}
