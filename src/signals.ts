/**
 * Stop signals for the long-running commands (`herald serve`, `herald worker`): SIGTERM (an
 * orchestrator, `docker stop`, npm relaying its own) and SIGINT (Ctrl-C) each start one
 * orderly close(), after which the process exits 0, or 1 if the close failed.
 *
 * The handlers go in before start-up, not after it: a signal during the seconds an embedded
 * PostgreSQL takes to start would otherwise kill Node at once (the default action), which
 * skips the 'exit' hook that stops that PostgreSQL and leaves it holding its port and data
 * directory. A signal during start-up is remembered, and the close runs as soon as there is
 * something to close.
 *
 * SIGHUP is left alone on purpose: `nohup herald serve` ignores it, and a handler here would
 * undo that.
 */
import { EXIT_CODES } from './errors.ts';
import type { Logger } from './logger.ts';

/** The signals that start an orderly stop (SIGHUP is left alone: see above). */
export const STOP_SIGNALS = ['SIGTERM', 'SIGINT'] as const;
/** One of STOP_SIGNALS. */
export type StopSignal = (typeof STOP_SIGNALS)[number];

/**
 * A signal this soon after the first is the same request delivered twice, not a second one:
 * one Ctrl-C reaches Herald from the terminal (it signals the whole foreground process group)
 * and again from npm, which relays SIGINT and SIGTERM to its script. 1 s is far above that
 * relay's delay and below a person pressing Ctrl-C again because shutdown seems stuck.
 */
export const SAME_REQUEST_WINDOW_MS = 1000;

/**
 * starting → running (started) → stopping (first signal);
 * starting → stop-requested (first signal) → stopping (started).
 * In stopping or stop-requested, a signal outside the window exits at once with status 1.
 */
export type StopState = 'starting' | 'running' | 'stop-requested' | 'stopping';

/** The handle installStopSignals() returns. */
export interface StopSignals {
  /** Where the stop state machine is (see StopState). */
  readonly state: StopState;
  /** Start-up is done and `close` ends the process's work; a signal received during start-up runs it now. */
  started(close: () => Promise<void>): void;
}

/** What the stop-signal handlers use, narrowed so tests can pass stand-ins. */
export interface StopSignalsDeps {
  /** Gets one line per signal received. */
  logger: Logger;
  /** The process to listen on and exit (tests pass a stand-in). */
  process?: Pick<NodeJS.EventEmitter, 'on'> & { exit(code: number): void };
  /** Monotonic clock in ms. */
  now?: () => number;
}

/** Installs the SIGTERM/SIGINT handlers for a long-running command; call `started()` once it runs. */
export function handleStopSignals(deps: StopSignalsDeps): StopSignals {
  const { logger } = deps;
  const proc = deps.process ?? process;
  const now = deps.now ?? (() => performance.now());
  let state: StopState = 'starting';
  let close: (() => Promise<void>) | undefined;
  let firstSignalAt = 0;

  const shutDown = () => {
    state = 'stopping';
    close!().then(
      () => proc.exit(EXIT_CODES.ok),
      (err: unknown) => {
        logger.error({ err }, 'shutdown failed');
        proc.exit(EXIT_CODES.failure);
      },
    );
  };

  const processOnSignal = (signal: StopSignal) => {
    switch (state) {
      case 'starting':
        firstSignalAt = now();
        state = 'stop-requested';
        logger.info({ signal }, 'stop requested during start-up: shutting down once started');
        return;
      case 'running':
        firstSignalAt = now();
        logger.info({ signal }, 'shutting down');
        shutDown();
        return;
      case 'stop-requested':
      case 'stopping':
        if (now() - firstSignalAt < SAME_REQUEST_WINDOW_MS) return;
        // The 'exit' hooks still run: an embedded PostgreSQL is sent its fast-shutdown signal.
        logger.warn({ signal }, 'second signal: exiting now, before shutdown finished');
        proc.exit(EXIT_CODES.failure);
        return;
    }
  };
  for (const signal of STOP_SIGNALS) proc.on(signal, () => processOnSignal(signal));

  return {
    get state() {
      return state;
    },
    started(fn) {
      if (close) throw new Error('started() was already called');
      close = fn;
      if (state === 'stop-requested') shutDown();
      else state = 'running';
    },
  };
}
