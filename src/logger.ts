/** Structured logs (pino). Secrets never reach here: config is logged through redactConfig. */
import { pino } from 'pino';

export type Logger = pino.Logger;

export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: 'herald' },
      // Belt and braces: if a header object is ever logged, its credentials are not.
      redact: ['req.headers.authorization', 'headers.authorization', '*.token', 'token'],
    },
    destination ?? pino.destination({ dest: 1, sync: false }),
  );
}
