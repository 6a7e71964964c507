/**
 * A deterministic text snapshot of the `herald` schema, read from the catalogs, committed as
 * sql/schema.sql so that each migration's effect on the schema is a reviewable diff
 * (graphile-worker commits the output of `pg_dump --schema-only` for the same reason). The
 * embedded PostgreSQL ships no pg_dump, hence this: tables with their columns, constraints,
 * indexes, functions, triggers, sequences and views, each kind sorted by name, every
 * definition in PostgreSQL's own words (pg_get_constraintdef, pg_get_indexdef, …).
 *
 * It is a snapshot to read, not a script to restore: kinds are grouped, not ordered by
 * dependency. Owners, privileges and data are left out (they depend on the installation),
 * except the list of applied migrations. Any other kind of object in the schema (a domain, a
 * policy, a comment, …) makes the dump throw rather than silently leave it out: extend it here.
 */
import type pg from 'pg';

/** The schema Herald's migrations create. */
const SCHEMA = 'herald';

/** Objects in the schema that the dump does not describe; each row names one. */
const UNCOVERED_SQL = `
  select 'relation ' || c.relname || ' of kind ' || c.relkind::text as what
  from pg_class c
  where c.relnamespace = $1::regnamespace and (c.relkind not in ('r', 'S', 'v', 'i') or c.relispartition)
  union all
  select 'type ' || t.typname
  from pg_type t
  where t.typnamespace = $1::regnamespace and (t.typtype in ('d', 'e', 'r', 'm') or (t.typtype = 'b' and t.typelem = 0))
  union all
  select 'routine ' || p.proname || ' of kind ' || p.prokind::text
  from pg_proc p
  where p.pronamespace = $1::regnamespace and p.prokind not in ('f', 'p')
  union all
  select 'policy ' || pol.polname
  from pg_policy pol join pg_class c on c.oid = pol.polrelid
  where c.relnamespace = $1::regnamespace
  union all
  select 'rule ' || r.rulename
  from pg_rewrite r join pg_class c on c.oid = r.ev_class
  where c.relnamespace = $1::regnamespace and r.rulename <> '_RETURN'
  union all
  select 'comment on ' || c.relname
  from pg_description d join pg_class c on d.classoid = 'pg_class'::regclass and d.objoid = c.oid
  where c.relnamespace = $1::regnamespace
  union all
  select 'comment on function ' || p.proname
  from pg_description d join pg_proc p on d.classoid = 'pg_proc'::regclass and d.objoid = p.oid
  where p.pronamespace = $1::regnamespace
  union all
  select 'operator ' || o.oprname from pg_operator o where o.oprnamespace = $1::regnamespace
  union all
  select 'collation ' || co.collname from pg_collation co where co.collnamespace = $1::regnamespace
  union all
  select 'statistics ' || s.stxname from pg_statistic_ext s where s.stxnamespace = $1::regnamespace
  order by 1`;

const TABLES_SQL = `
  select c.oid::regclass::text as name,
    c.relpersistence = 'u' as unlogged, c.relrowsecurity as row_security, c.reloptions as options
  from pg_class c
  where c.relnamespace = $1::regnamespace and c.relkind = 'r'
  order by c.relname`;

const COLUMNS_SQL = `
  select c.oid::regclass::text as "table",
    quote_ident(a.attname) as name,
    format_type(a.atttypid, a.atttypmod) as type,
    case when a.attcollation <> t.typcollation then a.attcollation::regcollation::text end as collation,
    pg_get_expr(d.adbin, d.adrelid) as expr,
    a.attgenerated as generated, a.attidentity as identity, a.attnotnull as not_null
  from pg_attribute a
  join pg_class c on c.oid = a.attrelid
  join pg_type t on t.oid = a.atttypid
  left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
  where c.relnamespace = $1::regnamespace and c.relkind = 'r' and a.attnum > 0 and not a.attisdropped
  order by c.relname, a.attnum`;

// 'n' (NOT NULL, catalogued from PostgreSQL 18) is left to the column; 't' (a constraint
// trigger) is listed with the triggers.
const CONSTRAINTS_SQL = `
  select format('alter table %s add constraint %I %s;', c.oid::regclass, con.conname,
    pg_get_constraintdef(con.oid, true)) as line
  from pg_constraint con join pg_class c on c.oid = con.conrelid
  where c.relnamespace = $1::regnamespace and con.contype in ('c', 'f', 'p', 'u', 'x')
  order by c.relname, con.conname`;

// Indexes that back a primary key, unique or exclusion constraint come with the constraint.
const INDEXES_SQL = `
  select pg_get_indexdef(i.indexrelid) || ';' as line
  from pg_index i
  join pg_class ic on ic.oid = i.indexrelid
  join pg_class c on c.oid = i.indrelid
  where c.relnamespace = $1::regnamespace
    and not exists (
      select 1 from pg_constraint con
      where con.conindid = i.indexrelid and con.conrelid = i.indrelid and con.contype in ('p', 'u', 'x'))
  order by c.relname, ic.relname`;

const FUNCTIONS_SQL = `
  select rtrim(pg_get_functiondef(p.oid), E'\\n') || ';' as line
  from pg_proc p
  where p.pronamespace = $1::regnamespace and p.prokind in ('f', 'p')
  order by p.proname, pg_get_function_identity_arguments(p.oid)`;

const TRIGGERS_SQL = `
  select pg_get_triggerdef(tg.oid, true) || ';' as line
  from pg_trigger tg join pg_class c on c.oid = tg.tgrelid
  where c.relnamespace = $1::regnamespace and not tg.tgisinternal
  order by c.relname, tg.tgname`;

// Identity columns' sequences belong to their column ("generated always as identity").
const SEQUENCES_SQL = `
  select format('create sequence %s as %s start with %s increment by %s minvalue %s maxvalue %s cache %s%s%s;',
    c.oid::regclass, format_type(s.seqtypid, null), s.seqstart, s.seqincrement,
    s.seqmin, s.seqmax, s.seqcache, case when s.seqcycle then ' cycle' else '' end,
    (select format(' owned by %s.%I', oc.oid::regclass, a.attname)
     from pg_depend dep
     join pg_class oc on oc.oid = dep.refobjid
     join pg_attribute a on a.attrelid = dep.refobjid and a.attnum = dep.refobjsubid
     where dep.classid = 'pg_class'::regclass and dep.objid = c.oid and dep.deptype = 'a')) as line
  from pg_sequence s join pg_class c on c.oid = s.seqrelid
  where c.relnamespace = $1::regnamespace
    and not exists (
      select 1 from pg_depend dep
      where dep.classid = 'pg_class'::regclass and dep.objid = c.oid and dep.deptype = 'i')
  order by c.relname`;

const VIEWS_SQL = `
  select format('create view %s as%s%s;', c.oid::regclass, E'\\n',
    rtrim(pg_get_viewdef(c.oid, true), ';')) as line
  from pg_class c
  where c.relnamespace = $1::regnamespace and c.relkind = 'v'
  order by c.relname`;

interface TableRow {
  name: string;
  unlogged: boolean;
  row_security: boolean;
  options: string[] | null;
}

interface ColumnRow {
  table: string;
  name: string;
  type: string;
  collation: string | null;
  expr: string | null;
  generated: string;
  identity: string;
  not_null: boolean;
}

/**
 * The snapshot of the `herald` schema on `pool`'s database as text (sql/schema.sql's content).
 * Throws when the schema holds a kind of object the dump does not describe.
 */
export async function dumpSchema(pool: pg.Pool): Promise<string> {
  const client = await pool.connect();
  try {
    await client.query('begin');
    // Every name from pg_get_*, format_type and ::regclass comes schema-qualified, whatever the
    // caller's search_path.
    await client.query('set local search_path = pg_catalog');
    const uncovered = await client.query<{ what: string }>(UNCOVERED_SQL, [SCHEMA]);
    if (uncovered.rows.length > 0) {
      throw new Error(`the schema dump does not describe ${uncovered.rows.map((r) => r.what).join(', ')}: extend src/db/schema-dump.ts`);
    }
    const lines = async (sql: string) => (await client.query<{ line: string }>(sql, [SCHEMA])).rows.map((r) => r.line);
    const tables = (await client.query<TableRow>(TABLES_SQL, [SCHEMA])).rows;
    const columns = (await client.query<ColumnRow>(COLUMNS_SQL, [SCHEMA])).rows;
    const migrations = await client.query<{ id: number; name: string; breaking: boolean }>(`
      select id, name, coalesce((to_jsonb(m) ->> 'breaking')::boolean, false) as breaking
      from herald.migrations m
      order by id`);
    const sections: [string, string[]][] = [
      ['Sequences', await lines(SEQUENCES_SQL)],
      ['Tables', tables.map((t) => tableDefinition(t, columns))],
      ['Constraints', await lines(CONSTRAINTS_SQL)],
      ['Indexes', await lines(INDEXES_SQL)],
      ['Views', await lines(VIEWS_SQL)],
      ['Functions', await lines(FUNCTIONS_SQL)],
      ['Triggers', await lines(TRIGGERS_SQL)],
    ];
    const version = await client.query<{ major: number }>(`select current_setting('server_version_num')::int / 10000 as major`);
    const out = [
      '-- The herald schema after every migration in sql/, read from the catalogs by',
      '-- src/db/schema-dump.ts. Generated by `npm run schema:dump`: do not edit. A migration that',
      '-- changes the schema updates this file in the same change (test/db/schema-dump.test.ts',
      '-- fails otherwise), so its effect is a reviewable diff. A snapshot to read, not a script',
      '-- to restore: kinds are grouped and sorted by name, not ordered by dependency.',
      '--',
      // pg_get_*def spell some definitions differently from one major version to the next.
      `-- Read from PostgreSQL ${version.rows[0]!.major}.`,
      '--',
      '-- Applied migrations (id, name, breaking):',
      ...migrations.rows.map((m) => `--   ${String(m.id).padStart(3, '0')} ${m.name}${m.breaking ? ' (breaking)' : ''}`),
      '',
      `create schema ${SCHEMA};`,
    ];
    for (const [title, items] of sections) {
      if (items.length === 0) continue;
      out.push('', `-- ${title}`, '', ...items.flatMap((item, i) => (i > 0 && item.includes('\n') ? ['', item] : [item])));
    }
    await client.query('commit');
    return `${out.join('\n')}\n`;
  } catch (err) {
    await client.query('rollback').catch(() => undefined);
    throw err;
  } finally {
    client.release();
  }
}

function tableDefinition(table: TableRow, columns: ColumnRow[]): string {
  const cols = columns
    .filter((c) => c.table === table.name)
    .map((c) => {
      let def = `  ${c.name} ${c.type}`;
      if (c.collation) def += ` collate ${c.collation}`;
      if (c.generated === 's') def += ` generated always as (${c.expr}) stored`;
      else if (c.expr !== null) def += ` default ${c.expr}`;
      if (c.identity) def += ` generated ${c.identity === 'a' ? 'always' : 'by default'} as identity`;
      if (c.not_null) def += ' not null';
      return def;
    });
  const options = table.options ? ` with (${table.options.join(', ')})` : '';
  const rls = table.row_security ? `\nalter table ${table.name} enable row level security;` : '';
  return `create ${table.unlogged ? 'unlogged ' : ''}table ${table.name} (\n${cols.join(',\n')}\n)${options};${rls}`;
}
