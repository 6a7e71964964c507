-- 002_registry: users and tokens, packages, owners, versions with their archives, advisories.

create table herald.users (
  name text primary key check (name ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
  trustee boolean not null default false,
  created_at timestamptz not null default now()
);

-- Tokens are shown once and stored only as SHA-256: a leaked table does not leak tokens.
create table herald.tokens (
  id bigint generated always as identity primary key,
  user_name text not null references herald.users (name) on delete cascade,
  hash bytea not null unique check (octet_length(hash) = 32),
  created_at timestamptz not null default now(),
  last_used_at timestamptz,
  revoked_at timestamptz
);

create table herald.packages (
  name text primary key check (name ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
  created_at timestamptz not null default now(),
  moderated boolean not null default false,
  deleted_at timestamptz
);

create table herald.package_owners (
  package text not null references herald.packages (name) on delete cascade,
  user_name text not null references herald.users (name),
  primary key (package, user_name)
);

create table herald.versions (
  package text not null references herald.packages (name) on delete cascade,
  version text not null check (octet_length(version) <= 256),
  manifest jsonb not null,
  archive bytea not null,
  size integer not null,
  sha256 text not null check (sha256 ~ '^[0-9a-f]{64}$'),
  published_at timestamptz not null default now(),
  published_by text references herald.users (name),
  retracted boolean not null default false,
  primary key (package, version)
);

create table herald.advisories (
  id text primary key check (id ~ '^[A-Za-z0-9._-]{1,64}$'),
  package text not null references herald.packages (name) on delete cascade,
  summary text not null check (octet_length(summary) between 1 and 4096),
  -- A semver range, e.g. ">=1.0.0 <1.4.2".
  affected text not null check (octet_length(affected) between 1 and 1024),
  published_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index advisories_package_idx on herald.advisories (package);

-- The package as `GET /api/v1/packages/<name>` returns it and as `package:<name>` events
-- carry it (one shape for both). No archive bytes: archives have their own route.
create function herald.package_json(pkg text) returns jsonb
language sql stable as $$
  select jsonb_build_object(
    'name', p.name,
    'moderated', p.moderated,
    'deletedAt', to_char(p.deleted_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
    'createdAt', to_char(p.created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
    'owners', coalesce((select jsonb_agg(o.user_name order by o.user_name) from herald.package_owners o where o.package = p.name), '[]'),
    'versions', coalesce((
      select jsonb_agg(jsonb_build_object(
        'version', v.version, 'manifest', v.manifest, 'size', v.size, 'sha256', v.sha256,
        'publishedAt', to_char(v.published_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
        'retracted', v.retracted) order by v.published_at, v.version)
      from herald.versions v where v.package = p.name), '[]'),
    'advisories', coalesce((
      select jsonb_agg(jsonb_build_object(
        'id', a.id, 'summary', a.summary, 'affected', a.affected,
        'publishedAt', to_char(a.published_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
        'updatedAt', to_char(a.updated_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')) order by a.id)
      from herald.advisories a where a.package = p.name), '[]'))
  from herald.packages p where p.name = pkg
$$;
