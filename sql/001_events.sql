-- 001_events: the event log, its commit-ordered ids, and the NOTIFY doorbell.
--
-- Why ids are not a plain bigserial: a bigserial id is taken at INSERT and becomes visible
-- at COMMIT, so a transaction that took id 7 can commit after one that took id 8; a reader
-- that has seen 8 and asks for `id > 8` never sees 7. Here ids are assigned at the very end
-- of the producing transaction while holding one transaction-level advisory lock. Postgres
-- releases that lock only after the commit is visible to new snapshots, so the next
-- producer assigns its ids after ours are visible: ids follow commit order, and once a
-- reader has seen id N no event with id < N can appear later.
--
-- An advisory lock (not a counter row) because updating one shared row fails with a
-- serialization error under REPEATABLE READ producers; a lock and a sequence do not.
-- NOTIFY already serializes notifying commits (cluster-wide: async.c locks database 0 at
-- pre-commit), so the lock adds little.

create schema if not exists herald;

-- One row: the epoch (random per database: a cursor from a restored or re-initialised
-- database is detected by its epoch) and the retention horizon.
create table herald.meta (
  singleton boolean primary key default true check (singleton),
  epoch uuid not null default gen_random_uuid(),
  -- Highest id removed by retention; the oldest id that can still be read is this + 1.
  pruned_through bigint not null default 0,
  created_at timestamptz not null default now()
);
insert into herald.meta default values;

-- Values are only ever taken under the commit lock, in contiguous blocks.
create sequence herald.event_id_seq as bigint minvalue 1 cache 1;

create function herald.valid_topic(topic text) returns boolean
language sql immutable parallel safe as $$
  select topic ~ '^[a-z0-9._-]+(:[a-z0-9._-]+)*$' and octet_length(topic) <= 256
$$;

create table herald.events (
  id bigint primary key,
  topic text not null check (herald.valid_topic(topic)),
  type text not null check (octet_length(type) between 1 and 128),
  data jsonb not null,
  at timestamptz not null
);
-- Filtered catch-up by exact topic (`job:42`, `package:left-pad`).
create index events_topic_id_idx on herald.events (topic, id);

-- Events staged by herald.emit() inside a producer's transaction. Rows live only inside
-- their own transaction (the commit trigger moves them to herald.events), so nothing here
-- is ever committed: UNLOGGED spares the WAL of that first write.
create unlogged table herald.pending (
  seq bigint generated always as identity primary key,
  topic text not null check (herald.valid_topic(topic)),
  type text not null check (octet_length(type) between 1 and 128),
  data jsonb not null
);

-- The lock every id assignment takes. The key is 'herald' in ASCII; documented in
-- docs/operations.md so applications using advisory locks can avoid it.
create function herald.lock_ids() returns void
language sql as $$ select pg_advisory_xact_lock(114784919972964) $$;

-- Called with the lock held: reserve n contiguous ids and return the first.
create function herald.take_ids(n bigint) returns bigint
language plpgsql as $$
declare
  first_id bigint := nextval('herald.event_id_seq');
begin
  if n > 1 then
    perform setval('herald.event_id_seq', first_id + n - 1);
  end if;
  return first_id;
end $$;

-- The doorbell: constant and tiny; identical payloads in one transaction fold into one
-- notification. Listeners re-read `id > head` from the table; the payload carries nothing.
create function herald.ring() returns void
language sql as $$ select pg_notify('herald_events', '') $$;

-- Deferred to COMMIT: assign ids to everything this transaction staged, in emit order.
-- Deferred triggers fire in insertion order, so the first firing sees this transaction's
-- smallest seq and moves every staged row at once; later firings find nothing. The rows
-- are found by an index range on seq (other transactions' rows are invisible), never by a
-- scan of the table, whose dead tuples pile up between vacuums. The lock is taken only
-- after the rows are in hand, as late as possible.
create function herald.tg_pending__assign_ids() returns trigger
language plpgsql as $$
declare
  staged herald.pending[];
  first_id bigint;
  ts timestamptz;
begin
  with moved as (delete from herald.pending p where p.seq >= new.seq returning p)
  select array_agg(moved.p order by (moved.p).seq) into staged from moved;
  if staged is null then
    return null;
  end if;
  perform herald.lock_ids();
  first_id := herald.take_ids(cardinality(staged));
  ts := clock_timestamp();
  insert into herald.events (id, topic, type, data, at)
    select first_id + u.ord - 1, u.topic, u.type, u.data, ts
    -- unnest() of a row array yields the row's columns, then the ordinality.
    from unnest(staged) with ordinality as u(seq, topic, type, data, ord);
  perform herald.ring();
  return null;
end $$;

create constraint trigger tg_pending__assign_ids
  after insert on herald.pending
  deferrable initially deferred
  for each row execute function herald.tg_pending__assign_ids();

-- Append from SQL inside any transaction; the id is assigned at COMMIT.
create function herald.emit(topic text, type text, data jsonb default '{}'::jsonb) returns void
language sql as $$
  insert into herald.pending (topic, type, data) values (topic, type, coalesce(data, 'null'::jsonb))
$$;

-- Batch form: `events` is a JSON array of {topic, type, data}.
create function herald.emit_many(events jsonb) returns void
language sql as $$
  insert into herald.pending (topic, type, data)
  select e->>'topic', e->>'type', coalesce(e->'data', 'null'::jsonb)
  from jsonb_array_elements(events) with ordinality as t(e, ord)
  order by ord
$$;

-- Append now and return the ids: for callers whose transaction ends right after this
-- statement (Herald's own emit()/emitMany() and POST /v1/events). It takes the id lock at
-- once, so calling it early in a long transaction makes other producers wait.
create function herald.append(events jsonb) returns setof bigint
language plpgsql as $$
declare
  n bigint := jsonb_array_length(events);
  first_id bigint;
  ts timestamptz;
begin
  if n = 0 then
    return;
  end if;
  perform herald.lock_ids();
  first_id := herald.take_ids(n);
  ts := clock_timestamp();
  return query
    insert into herald.events (id, topic, type, data, at)
    select first_id + ord - 1, e->>'topic', e->>'type', coalesce(e->'data', 'null'::jsonb), ts
    from jsonb_array_elements(events) with ordinality as t(e, ord)
    returning id;
  perform herald.ring();
end $$;
