-- 007_version_tombstones: an unpublished version's number can never be published again
-- (its archive was served as immutable; different bytes under the same name would poison
-- every cache that kept the first).
create table herald.version_tombstones (
  package text not null,
  version text not null,
  unpublished_at timestamptz not null default now(),
  primary key (package, version)
);
