-- 013_emit_checks_once: `herald.emit` in a producer's transaction checks each event once, and
-- the commit trigger does less while it holds the id lock (issue 15 point 3, after 012). Same
-- functions, same signatures, same results, same errors; the migration is not breaking.
--
-- Where the time went. Instructions per transaction of one backend (callgrind, `postgres
-- --single`, so without the protocol; `begin; select herald.emit(...); commit` against the
-- bench's `begin; insert; notify; commit`): after 012, 488k for emit against 270k for the plain
-- INSERT + NOTIFY. 226k of emit's went to CHECK constraints, not to their rules, which take
-- under a microsecond: PostgreSQL prepares a table's CHECK expressions again at every statement
-- that inserts into it, reading each back from its stored node text, and
-- `check (herald.valid_topic(topic))` also inlines that SQL function there, which parses and
-- analyses its body every time (103k of the 226k). emit's event went through them twice: into
-- herald.pending (113k), then into herald.events (113k) while holding the id lock.
--
-- What changes:
-- - herald.pending has no CHECK constraints. emit() and emit_many() check topic and type
--   themselves, with the same rules (herald.valid_topic(), a type of 1-128 bytes), in
--   PL/pgSQL, where the check is planned once per session. A bad event fails the emit with the
--   error the constraint raised: SQLSTATE 23514, `new row for relation "pending" violates
--   check constraint "pending_topic_check"` (or `pending_type_check`), and the same schema,
--   table and constraint fields. A NULL topic or type still fails on NOT NULL. Herald's own
--   staging (submit_job, the job store) builds its topics; a row inserted into herald.pending
--   directly is still checked, by herald.events' constraints, at COMMIT.
-- - herald.events keeps its checks, for every writer: the commit trigger, herald.append, and
--   whoever inserts directly (producers hold INSERT on it, see docs/operations.md). The topic
--   check is the same rule written out instead of a call to herald.valid_topic(), so nothing
--   is inlined per statement (99k instead of 113k; test/db/topic-check.test.ts holds the two
--   spellings to the same answers). NOT VALID: every existing row passed the same rule through
--   the old constraint, and re-reading the whole log would hold this migration's ACCESS
--   EXCLUSIVE lock, and stop readers, for as long.
-- - The commit trigger deletes the staged row before it takes the lock, and takes the lock and
--   rings the doorbell inside the INSERT (a MATERIALIZED CTE the insert reads from): the INSERT
--   is planned and its executor started before the lock is taken, and the two PERFORM
--   statements, each a plan of its own, are gone. nextval() and clock_timestamp() are in the
--   projection above the CTE scan, so they run only once the lock is held.
--
-- Result: emit 488k -> 370k instructions per transaction (emit() itself 153k -> 56k; the
-- commit trigger 248k -> 227k, of which the checks under the lock 113k -> 99k); the plain
-- baseline with herald.events' new check 270k -> 259k. The bench's baseline table now copies
-- herald.events' checks as they are spelled (bench/appends.bench.ts), so its ratio compares
-- the append path and not the spelling. Throughput (`npm run bench appends`, 8 producers, on
-- 2 cores shared with other work; 25 pairs each, before and after alternating): herald.emit in
-- a transaction ÷ BEGIN; INSERT; NOTIFY; COMMIT 0.69 -> 0.74 (pooled medians), short of the
-- 0.8 target there: the lock hand-off and the scheduler weigh more than the statements on that
-- machine (BENCHMARKS.md, "SQL producers", second step).
-- Rejected, measured: a PL/pgSQL check function on herald.events (single events 305k, but 4k
-- more per row: +7% for a 100-event herald.append, all of it under the id lock); a
-- `RETURN`-bodied valid_topic() (its stored body is read back as a whole Query: no cheaper);
-- dropping the function's `SET enable_seqscan` (0.25 us a call).
--
-- Invariants kept: ids are taken and `at` is read only while holding the id lock, which is
-- released after the commit is visible (ids follow commit order; `at` rises with id); every
-- staged row is moved exactly once, in emit order; nothing in herald.pending is committed;
-- every row of herald.events satisfies the topic and type rules.

alter table herald.pending
  drop constraint pending_topic_check,
  drop constraint pending_type_check;

alter table herald.events
  drop constraint events_topic_check,
  add constraint events_topic_check
    check (topic ~ '^[a-z0-9._-]+(:[a-z0-9._-]+)*$' and octet_length(topic) <= 256) not valid;

-- Raises the error herald.pending's constraints raised, for a topic or type they would have
-- refused. Returns true when either is NULL: the INSERT's NOT NULL reports that, as before.
create function herald.refuse_staged(topic text, type text) returns boolean
language plpgsql as $$
declare
  con text := case when not herald.valid_topic(topic) then 'pending_topic_check' else 'pending_type_check' end;
begin
  if topic is null or type is null then
    return true;
  end if;
  raise exception 'new row for relation "pending" violates check constraint "%"', con
    using errcode = 'check_violation', schema = 'herald', table = 'pending', constraint = con,
      detail = format('topic %s, type %s', quote_literal(topic), quote_literal(type));
end $$;

create or replace function herald.emit(topic text, type text, data jsonb default '{}'::jsonb) returns void
language plpgsql as $$
begin
  -- Positional: the parameters share the columns' names.
  if not (herald.valid_topic($1) and octet_length($2) between 1 and 128) then
    perform herald.refuse_staged($1, $2);
  end if;
  insert into herald.pending (topic, type, data) values ($1, $2, coalesce($3, 'null'::jsonb));
end $$;

-- The CASE calls refuse_staged() only for an event the rules do not pass: it raises, or keeps
-- the row for NOT NULL to refuse.
create or replace function herald.emit_many(events jsonb) returns void
language plpgsql as $$
begin
  insert into herald.pending (topic, type, data)
  select e.topic, e.type, e.data
  from (
    select x->>'topic' as topic, x->>'type' as type, coalesce(x->'data', 'null'::jsonb) as data, ord
    from jsonb_array_elements($1) with ordinality as t(x, ord)
  ) e
  where case
    when herald.valid_topic(e.topic) and octet_length(e.type) between 1 and 128 then true
    else herald.refuse_staged(e.topic, e.type)
  end
  order by e.ord;
end $$;

-- As in 012, fired once per staged row in insertion order; see there for the two paths.
create or replace function herald.tg_pending__assign_ids() returns trigger
language plpgsql
set enable_seqscan = off
as $$
declare
  last_seq bigint := currval('herald.pending_seq_seq');
begin
  if new.seq >= last_seq then
    -- Before the lock. Nothing found: an earlier firing moved it with the rest of its batch.
    delete from herald.pending where seq = new.seq;
    if not found then
      return null;
    end if;
    with locked as materialized (select herald.lock_ids(), herald.ring())
    insert into herald.events (id, topic, type, data, at)
    select nextval('herald.event_id_seq'), new.topic, new.type, new.data, clock_timestamp() from locked;
    return null;
  end if;
  perform from herald.pending where seq = new.seq;
  if not found then
    return null;
  end if;
  -- The ORDER BY is below nextval(): ids are drawn in emit order. One `at` for the batch,
  -- read once (an initplan) when the first row is projected, after the lock.
  with moved as (
    delete from herald.pending p where p.seq between new.seq and last_seq returning p.seq, p.topic, p.type, p.data
  ), locked as materialized (select herald.lock_ids(), herald.ring())
  insert into herald.events (id, topic, type, data, at)
  select nextval('herald.event_id_seq'), m.topic, m.type, m.data, (select clock_timestamp())
  from locked, (select * from moved order by seq) m;
  return null;
end $$;
