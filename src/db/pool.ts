/** The query pool. One per process; the LISTEN connection is separate (events/listener.ts). */
import pg from 'pg';
import type { Logger } from '../logger.ts';

// int8 (event ids, counts) as JS numbers: ids stay far below 2^53 (a million events a
// second for 285 years), and numbers keep the wire format plain JSON.
const INT8_OID = 20;
const types = {
  getTypeParser(oid: number, format?: 'text' | 'binary') {
    if (oid === INT8_OID) return (v: string) => Number(v);
    return pg.types.getTypeParser(oid, format);
  },
};

/** The query pool type every store takes (pg's own, so callers need not import pg). */
export type Pool = pg.Pool;

/** Per-pool settings beyond the URL and size. */
export interface PoolOptions {
  /** Shown in pg_stat_activity (default `herald`). */
  applicationName?: string;
  /** The server-side `statement_timeout` of every connection, in ms (default: none). */
  statementTimeoutMs?: number;
  /**
   * Plan every parameterized statement once, generically (`plan_cache_mode =
   * force_generic_plan`), instead of PostgreSQL's default of planning each call afresh while a
   * custom plan looks cheaper. For a pool that runs a few fixed hot statements whose custom
   * planning costs more than it saves (the job engine's cycle: 1.4 ms of planning for 1.1 ms of
   * execution). Every parameterized query on the pool is affected, so keep such a pool to
   * those statements.
   */
  genericPlans?: boolean;
}

/** A pool whose idle-client errors (Postgres restarting) are logged instead of crashing. */
export function createPool(connectionString: string, max: number, logger: Logger, options: PoolOptions = {}): pg.Pool {
  const pool = new pg.Pool({
    connectionString,
    max,
    types: types as pg.CustomTypesConfig,
    // A Postgres restart breaks every idle client at once; they are discarded and reopened.
    idleTimeoutMillis: 30_000,
    connectionTimeoutMillis: 10_000,
    application_name: options.applicationName ?? 'herald',
    ...(options.statementTimeoutMs === undefined ? {} : { statement_timeout: options.statementTimeoutMs }),
    ...(options.genericPlans ? { options: '-c plan_cache_mode=force_generic_plan' } : {}),
  });
  pool.on('error', (err) => logger.warn({ err: err.message }, 'idle database client failed; it will be replaced'));
  // pg-pool listens for errors on idle clients only. A checked-out client between two queries
  // when Postgres ends its backend (57P01 from a restart or pg_terminate_backend) would emit
  // 'error' with no listener: an uncaught exception. Its holder sees the failure on its next
  // query (and should release it with release(err)), so the event is only noted here.
  const clientOnError = (err: Error) => logger.debug({ err: err.message }, 'database client failed while checked out');
  pool.on('connect', (client) => client.on('error', clientOnError));
  return pool;
}

/** Runs `fn` in one transaction on one client, rolling back on any throw. */
export async function withTransaction<T>(pool: pg.Pool, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  try {
    await client.query('begin');
    const result = await fn(client);
    await client.query('commit');
    return result;
  } catch (err) {
    await client.query('rollback').catch(() => undefined);
    throw err;
  } finally {
    client.release();
  }
}
