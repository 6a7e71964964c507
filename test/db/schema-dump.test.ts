import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { SCHEMA_DUMP_FILE, SQL_DIR } from '../../src/db/migrate.ts';
import { dumpSchema } from '../../src/db/schema-dump.ts';
import { useTestPool } from '../support/db.ts';

// A clone of the template, which the test setup migrates from an empty database with
// src/db/migrate.ts at every run: the schema every migration in sql/ produces.
const t = useTestPool();

describe('schema dump', () => {
  it('sql/schema.sql is the schema the migrations produce (run `npm run schema:dump` after adding a migration)', async (ctx) => {
    const committed = await readFile(path.join(SQL_DIR, SCHEMA_DUMP_FILE), 'utf8');
    // The committed dump comes from the embedded PostgreSQL; another major version (through
    // TEST_DATABASE_URL) spells some definitions differently.
    const { rows } = await t.pool.query(`select current_setting('server_version_num')::int / 10000 as major`);
    const dumpedFrom = /^-- Read from PostgreSQL (\d+)\.$/m.exec(committed)?.[1];
    if (dumpedFrom !== String(rows[0].major)) ctx.skip(`sql/${SCHEMA_DUMP_FILE} was read from PostgreSQL ${dumpedFrom}, this server is ${rows[0].major}`);
    const dumped = await dumpSchema(t.pool);
    // vitest prints the two texts as a line diff under this message.
    expect(dumped, `sql/${SCHEMA_DUMP_FILE} differs from the schema the migrations produce: run \`npm run schema:dump\` and commit the result`).toBe(committed);
  });

  it('is the same text twice over (nothing in it depends on time, oids or the session)', async () => {
    await t.pool.query('set search_path = herald, public');
    expect(await dumpSchema(t.pool)).toBe(await dumpSchema(t.pool));
  });

  it('describes a change a migration makes, in its place', async () => {
    const before = await dumpSchema(t.pool);
    await t.pool.query(`
      create table herald.zz_probe (id bigint primary key, note text collate "C" default 'x');
      create index zz_probe_note_idx on herald.zz_probe (note);
      create view herald.zz_probe_view as select id from herald.zz_probe`);
    try {
      const after = await dumpSchema(t.pool);
      // Each addition in its section, last in it (zz sorts last), and nothing else changed.
      const expected = before
        .replace(
          '\n\n-- Constraints\n',
          `\n\ncreate table herald.zz_probe (\n  id bigint not null,\n  note text collate "C" default 'x'::text\n);\n\n-- Constraints\n`,
        )
        .replace('\n\n-- Indexes\n', '\nalter table herald.zz_probe add constraint zz_probe_pkey PRIMARY KEY (id);\n\n-- Indexes\n')
        .replace(
          '\n\n-- Functions\n',
          '\nCREATE INDEX zz_probe_note_idx ON herald.zz_probe USING btree (note);\n\n-- Views\n\ncreate view herald.zz_probe_view as\n SELECT id\n   FROM herald.zz_probe;\n\n-- Functions\n',
        );
      expect(after).toBe(expected);
    } finally {
      await t.pool.query('drop view herald.zz_probe_view; drop table herald.zz_probe');
    }
  });

  it('refuses a kind of object it does not describe instead of leaving it out', async () => {
    await t.pool.query(`create domain herald.zz_positive as integer check (value > 0)`);
    try {
      await expect(dumpSchema(t.pool)).rejects.toThrow('the schema dump does not describe type zz_positive: extend src/db/schema-dump.ts');
    } finally {
      await t.pool.query('drop domain herald.zz_positive');
    }
  });
});
