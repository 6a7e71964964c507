-- 004_exports: what the exporter wrote to which bucket, and its durable cursors.

-- GC waits a grace period after moderation, as after deletion.
alter table herald.packages add column moderated_at timestamptz;

-- One cursor per exporter (consumer = 'exporter:<runtimeVersion>'): the last event id whose
-- effects are in the bucket. Advanced only after the writes succeed.
create table herald.export_cursors (
  consumer text primary key,
  position bigint not null default 0,
  updated_at timestamptz not null default now()
);

-- Every object written, with its content hash and the release that wrote it. Skipping
-- unchanged content, the rollout rule (never overwrite latest/ written by a newer release)
-- and GC are all decided from here, never from bucket listings.
create table herald.export_objects (
  bucket text not null,
  key text not null,
  prefix text not null,
  package text not null,
  sha256 text not null,
  writer_version text not null,
  written_at timestamptz not null default now(),
  primary key (bucket, key)
);
create index export_objects_package_idx on herald.export_objects (bucket, package);
create index export_objects_prefix_idx on herald.export_objects (bucket, prefix);
