/**
 * Structured logs (pino) on stdout: one JSON object per line for machines (pipes, files, log
 * collectors), or pino-pretty's readable lines on a terminal. Nothing else is written to
 * stdout by a serving process, so its output is always one or the other, never mixed.
 * Secrets never reach here: config is logged through redactConfig/changedSettings, and the
 * access log (http/access-log.ts) redacts query secrets and never logs headers.
 */
import { pino } from 'pino';
import { isColorSupported, prettyFactory } from 'pino-pretty';

/** The logger every part takes (pino's, one per process plus its children). */
export type Logger = pino.Logger;

/** `auto` picks `pretty` when stdout is a terminal, `json` otherwise (HERALD_LOG_FORMAT). */
export type LogFormat = 'auto' | 'json' | 'pretty';

/** The format `auto` stands for, given whether the output is a terminal. */
export function resolveLogFormat(format: LogFormat, isTTY: boolean): 'json' | 'pretty' {
  return format === 'auto' ? (isTTY ? 'pretty' : 'json') : format;
}

/**
 * A stream that pretty-prints each JSON line synchronously, in this process. pino-pretty's
 * own stream (or a transport) would format on later ticks, losing the last lines when the
 * CLI calls process.exit() right after logging.
 */
function prettyStream(out: { write(s: string): unknown }, colorize: boolean): pino.DestinationStream {
  // One line per entry: an access-log entry spread over six lines buries everything else.
  const format = prettyFactory({ colorize, singleLine: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname,service,reqId' });
  return { write: (line: string) => void out.write(format(line)) };
}

/**
 * A logger at `level` writing to `destination` (default: stdout) in `format`. With `auto`,
 * a given destination is taken as not a terminal.
 */
export function createLogger(level: string, destination?: pino.DestinationStream, format: LogFormat = 'auto'): Logger {
  const terminal = destination === undefined && process.stdout.isTTY === true;
  const stream =
    resolveLogFormat(format, terminal) === 'pretty'
      ? // Colour only on a terminal, and not under NO_COLOR (isColorSupported reads it).
        prettyStream(destination ?? process.stdout, terminal && isColorSupported)
      : // Synchronous, as pino's own default: with an asynchronous destination the lines logged
        // just before process.exit() (the last retry before a start-up failure, `herald
        // stopped`) were lost or reordered under load. It costs one write(2) per line, and the
        // busiest logger, the access log, writes one line per HTTP request, not per event.
        (destination ?? pino.destination({ dest: 1, sync: true }));
  return pino(
    {
      level,
      base: { service: 'herald' },
      // Belt and braces: if a header object is ever logged, its credentials are not.
      redact: ['req.headers.authorization', 'headers.authorization', '*.token', 'token'],
    },
    stream,
  );
}
