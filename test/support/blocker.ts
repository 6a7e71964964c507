/**
 * Holds `herald.versions` in a lock that every publish's insert waits on, so a publish job
 * stays mid-transaction (running, its log partly written) until release().
 */
import pg from 'pg';

export async function blockPublishes(databaseUrl: string): Promise<{ release(): Promise<void> }> {
  const c = new pg.Client({ connectionString: databaseUrl });
  c.on('error', () => undefined);
  await c.connect();
  await c.query('begin');
  await c.query('lock table herald.versions in share row exclusive mode');
  return {
    async release() {
      await c.query('commit');
      await c.end();
    },
  };
}
