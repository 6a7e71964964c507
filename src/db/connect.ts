/**
 * waitForDatabase(): start-up's first contact with PostgreSQL. A database that is still
 * starting (compose, Kubernetes, a failover) is normal, so connection failures are retried on
 * the shared backoff curve for a total budget (HERALD_DB_CONNECT_TIMEOUT_MS), with one warning
 * per failed attempt saying why. When the budget runs out the error names host:port/database
 * and the last reason, never the password, and the CLI exits with status 69.
 */
import pg from 'pg';
import { backoffMs } from '../backoff.ts';
import { HeraldError } from '../errors.ts';
import type { Logger } from '../logger.ts';

// 250 ms, doubling to 5 s: a container that is still starting is usually up within a few
// seconds, so the early attempts are close together; past that, one attempt every few
// seconds keeps the log readable for the rest of the budget.
const FIRST_RETRY_MS = 250;
const RETRY_CAP_MS = 5000;
// One attempt may not take longer than this, nor than what is left of the budget; a host that
// drops packets otherwise holds an attempt for the kernel's TCP timeout (minutes).
const ATTEMPT_TIMEOUT_MS = 10_000;
const MIN_ATTEMPT_TIMEOUT_MS = 1000;

/** How long waitForDatabase() keeps trying, and where it says why an attempt failed. */
export interface WaitForDatabaseOptions {
  /** Total time to keep trying, in ms; 0 makes a single attempt. */
  budgetMs: number;
  /** Gets one warning per failed attempt and one info line on a late success. */
  logger: Logger;
}

/** `host:port/database` of a PostgreSQL URL, for messages: no user, no password. */
export function describeDatabase(url: string): string {
  try {
    const u = new URL(url);
    const database = decodeURIComponent(u.pathname.slice(1)) || decodeURIComponent(u.username) || 'postgres';
    return `${u.hostname || 'localhost'}:${u.port || '5432'}/${database}`;
  } catch {
    return 'the database';
  }
}

// Node's errno codes read as jargon (and Node 20's happy-eyeballs AggregateError has an empty
// message): say what they mean. PostgreSQL's own messages (wrong password, no such database,
// starting up) are already plain and never contain the password, so they are kept.
const REASONS: Record<string, string> = {
  ECONNREFUSED: 'connection refused',
  ENOTFOUND: 'host not found',
  EAI_AGAIN: 'host name lookup failed',
  ETIMEDOUT: 'connection timed out',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
  ECONNRESET: 'connection reset',
};

function reasonOf(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && REASONS[code]) return REASONS[code];
  const message = err instanceof Error ? err.message : String(err);
  if (/timeout/i.test(message)) return 'connection timed out';
  return message || (typeof code === 'string' ? code : 'unknown error');
}

/** Resolves once a connection to `url` succeeds; throws HERALD_ERR_DATABASE_UNREACHABLE when the budget is spent. */
export async function waitForDatabase(url: string, opts: WaitForDatabaseOptions): Promise<void> {
  const target = describeDatabase(url);
  const started = Date.now();
  for (let attempt = 0; ; attempt++) {
    const left = opts.budgetMs - (Date.now() - started);
    const client = new pg.Client({
      connectionString: url,
      connectionTimeoutMillis: Math.max(MIN_ATTEMPT_TIMEOUT_MS, Math.min(ATTEMPT_TIMEOUT_MS, left)),
      application_name: 'herald',
    });
    // A failed connect also emits 'error'; the rejection below is where it is handled.
    client.on('error', () => undefined);
    try {
      await client.connect();
      await client.end();
      if (attempt > 0) opts.logger.info({ database: target, attempts: attempt + 1 }, `connected to the database at ${target}`);
      return;
    } catch (err) {
      await client.end().catch(() => undefined);
      const reason = reasonOf(err);
      const elapsedMs = Date.now() - started;
      if (elapsedMs >= opts.budgetMs) {
        const tries = `${attempt + 1} attempt${attempt ? 's' : ''} in ${(elapsedMs / 1000).toFixed(1)} s`;
        throw new HeraldError(
          'HERALD_ERR_DATABASE_UNREACHABLE',
          `cannot connect to the database at ${target}: ${reason} (${tries}; check DATABASE_URL and that PostgreSQL is running there, or wait longer with HERALD_DB_CONNECT_TIMEOUT_MS)`,
          {},
          { cause: err },
        );
      }
      // The last wait is cut short so that the last attempt falls at the end of the budget.
      const delayMs = Math.min(backoffMs(attempt, RETRY_CAP_MS, FIRST_RETRY_MS), opts.budgetMs - elapsedMs);
      opts.logger.warn(
        { database: target, attempt: attempt + 1, reason, retryInMs: delayMs },
        `cannot connect to the database at ${target}: ${reason}; retrying`,
      );
      await new Promise((resolve) => setTimeout(resolve, delayMs));
    }
  }
}
