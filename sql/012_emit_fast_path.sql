-- 012_emit_fast_path: less work for `herald.emit` in a producer's transaction, and none of it
-- repeated per call (issue 15 point 3). Same functions, same signatures, same results; only
-- how they get there changes, so the migration is not breaking.
--
-- Where the time went (8 producers, one event per transaction, 0.64x plain INSERT+NOTIFY):
-- - emit() and emit_many() were SQL functions that PostgreSQL plans again on every call
--   (PostgreSQL 17 caches no plan for a non-inlinable SQL function across statements). In
--   PL/pgSQL the INSERT's plan is cached for the session.
-- - The commit trigger found this transaction's staged rows with `seq >= new.seq`. herald.pending
--   is nearly always empty by its statistics, so the cached plan was a sequential scan; deleted
--   rows are pruned but their space is reused only after a vacuum (pruning does not update the
--   free-space map), so every commit read every page written since the last autovacuum, up to a
--   minute of traffic. The trigger now runs with enable_seqscan off: the primary key is always
--   used, whatever the statistics say.
-- - Under the id lock it called herald.take_ids() (a PL/pgSQL call, and a setval() per
--   multi-event transaction) and herald.ring(). Now the doorbell rings before the lock (NOTIFY
--   only queues the notification until COMMIT), and the ids come from nextval() row by row in
--   the INSERT itself: nobody else takes ids while we hold the lock, so they are still
--   contiguous and in emit order.
-- - Every transaction built an array of its staged rows and unnested it again. One staged
--   event (the usual case) is now deleted by primary key and NEW inserted as it is; several
--   move in one DELETE … RETURNING feeding the INSERT.
--
-- Invariants kept: ids are taken and `at` is read only while holding the id lock, which is
-- released after the commit is visible (ids follow commit order; `at` rises with id, which
-- retention relies on); every staged row is moved exactly once, in emit order; nothing in
-- herald.pending is ever committed.

create or replace function herald.emit(topic text, type text, data jsonb default '{}'::jsonb) returns void
language plpgsql as $$
begin
  -- Positional: the parameters share the columns' names.
  insert into herald.pending (topic, type, data) values ($1, $2, coalesce($3, 'null'::jsonb));
end $$;

create or replace function herald.emit_many(events jsonb) returns void
language plpgsql as $$
begin
  insert into herald.pending (topic, type, data)
  select e->>'topic', e->>'type', coalesce(e->'data', 'null'::jsonb)
  from jsonb_array_elements($1) with ordinality as t(e, ord)
  order by ord;
end $$;

-- The staged rows' sequence: the trigger reads currval() of it (this session's last staged
-- row). Named here so that a rename fails this migration rather than every commit.
select 'herald.pending_seq_seq'::regclass;

-- Deferred to COMMIT, fired once per staged row in insertion order (see 001_events.sql).
-- currval() of the staging sequence is the last row this session staged, so:
-- - NEW is that row: the transaction's last (usually its only) staged event. Move it alone:
--   one DELETE feeding one INSERT of NEW. If an earlier firing already moved it (the
--   transaction staged several), the delete finds nothing, and neither does the insert; the
--   lock is then already held, and a second doorbell in one transaction folds into the first.
-- - NEW is an earlier row: the first such firing moves every row from NEW up to currval() in
--   one statement; each later firing finds its own row gone with one primary-key probe (a
--   range probe per firing would read every already-moved entry again: quadratic in a big
--   batch).
-- Both paths delete the staged rows under the lock, in the statement that inserts them (an
-- unlogged table, no WAL): cheaper, for one row or a thousand, than a statement to collect
-- them first and another to insert them.
-- Other sessions' rows in that range are invisible to this transaction (they never commit).
create or replace function herald.tg_pending__assign_ids() returns trigger
language plpgsql
set enable_seqscan = off
as $$
declare
  last_seq bigint := currval('herald.pending_seq_seq');
begin
  if new.seq >= last_seq then
    perform herald.ring();
    perform herald.lock_ids();
    -- One statement: its delete finds nothing if an earlier firing moved the row already.
    with moved as (delete from herald.pending where seq = new.seq returning 1)
    insert into herald.events (id, topic, type, data, at)
    select nextval('herald.event_id_seq'), new.topic, new.type, new.data, clock_timestamp() from moved;
    return null;
  end if;
  perform from herald.pending where seq = new.seq;
  if not found then
    return null;
  end if;
  perform herald.ring();
  perform herald.lock_ids();
  -- The ORDER BY is below nextval(): ids are drawn in emit order. One `at` for the batch,
  -- read once (an initplan) after the lock.
  with moved as (
    delete from herald.pending p where p.seq between new.seq and last_seq returning p.seq, p.topic, p.type, p.data
  )
  insert into herald.events (id, topic, type, data, at)
  select nextval('herald.event_id_seq'), m.topic, m.type, m.data, (select clock_timestamp())
  from (select * from moved order by seq) m;
  return null;
end $$;

-- Submit from SQL: the same job and events as before (003_jobs.sql), with job_json built once
-- and the two events staged by one INSERT.
create or replace function herald.submit_job(type text, payload jsonb default '{}', lock_key text default null, max_attempts integer default 3)
returns bigint
language plpgsql as $$
declare
  id bigint;
  job jsonb;
begin
  insert into herald.jobs as j (type, payload, lock_key, max_attempts)
  values ($1, coalesce($2, '{}'), $3, $4)
  returning j.id, herald.job_json(j) into id, job;
  insert into herald.pending (topic, type, data)
  values ('job:' || id, 'status', job), ('jobs', 'created', job);
  return id;
end $$;
