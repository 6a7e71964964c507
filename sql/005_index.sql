-- 005_index: the mirror of an upstream package index (crates.io-index format), its fetch
-- cache, and webhook deliveries seen.

create table herald.index_versions (
  -- Lower-cased name: the index's own key (paths are lower-case; `Inflector` lives at in/fl/inflector).
  lname text not null,
  -- The name as upstream spells it.
  name text not null,
  vers text not null,
  cksum text not null,
  yanked boolean not null,
  -- The whole upstream line, unknown fields included.
  entry jsonb not null,
  synced_at timestamptz not null default now(),
  primary key (lname, vers)
);

-- Conditional-request state per index file (sparse HTTP sources).
create table herald.index_files (
  path text primary key,
  etag text,
  last_modified text,
  fetched_at timestamptz not null default now()
);

create table herald.webhook_deliveries (
  id text primary key check (octet_length(id) between 1 and 200),
  job_id bigint references herald.jobs (id) on delete set null,
  received_at timestamptz not null default now()
);

-- At most one index sync waits: further triggers while one is queued fold into it (one may
-- also be running: it has the global lock key `index`).
create unique index jobs_index_sync_queued_idx on herald.jobs (type) where type = 'index-sync' and status = 'queued';
