-- 017_job_logs_checked_per_statement: a log line's job is checked once per statement, not once
-- per line (issue 15, the chatty job). The same rule as the foreign key it replaces, under the
-- same name; older code writes what it wrote, so the migration is not breaking.
--
-- The foreign key from herald.job_logs to herald.jobs checked each inserted line on its own:
-- one lookup of the job, locked FOR KEY SHARE, per line, as an AFTER trigger at the end of the
-- statement. The job engine writes a flush of up to HERALD_JOB_BATCH_MAX lines as one
-- statement ending with herald.append_rows (src/jobs/store.ts), so those checks ran after the
-- id lock was taken, and held it: 500 lines took 13–16 ms a flush with the key, 8.7–9.5 ms
-- without (2026-12-02), ~10 µs a line under the lock every other producer waits for.
--
-- Here a statement's new lines are checked together, from its transition table: their jobs
-- are locked FOR KEY SHARE, as the key locked them, so a job cannot be deleted between the
-- check and the commit, and a job being deleted is waited for; a line whose job is missing
-- fails the statement with the key's error (23503, constraint job_logs_job_id_fkey). The
-- key's ON DELETE CASCADE becomes a statement trigger on herald.jobs. Herald deletes no jobs
-- (docs/operations.md); the cascade is for an operator who does.
--
-- What a declared key did and this does not: TRUNCATE herald.jobs no longer refuses while
-- lines exist (it leaves them), and a job's id changed in place (it is an identity column,
-- so only to a new DEFAULT) is refused by a trigger of its own rather than by the key; and the
-- triggers run with the privileges of the role that writes, where a key's checks ran as the
-- tables' owner (Herald writes both tables as the one role that owns them).
alter table herald.job_logs drop constraint job_logs_job_id_fkey;

create function herald.tg_job_logs__job_exists() returns trigger
language plpgsql as $$
declare
  wanted bigint;
  locked bigint;
  missing bigint;
begin
  select count(distinct a.job_id) into wanted from added a;
  if wanted = 0 then
    return null;
  end if;
  select count(*) into locked from (
    select 1 from herald.jobs j where j.id in (select a.job_id from added a) for key share of j
  ) x;
  if locked < wanted then
    select a.job_id into missing from added a where not exists (select 1 from herald.jobs j where j.id = a.job_id) limit 1;
    raise exception 'insert or update on table "job_logs" violates foreign key constraint "job_logs_job_id_fkey"'
      using errcode = 'foreign_key_violation', schema = 'herald', table = 'job_logs', constraint = 'job_logs_job_id_fkey',
        detail = format('Key (job_id)=(%s) is not present in table "jobs".', missing);
  end if;
  return null;
end $$;

-- A trigger with a transition table names one event.
create trigger tg_job_logs__job_exists_insert after insert on herald.job_logs
  referencing new table as added for each statement execute function herald.tg_job_logs__job_exists();
create trigger tg_job_logs__job_exists_update after update on herald.job_logs
  referencing new table as added for each statement execute function herald.tg_job_logs__job_exists();

create function herald.tg_jobs__delete_logs() returns trigger
language plpgsql as $$
begin
  delete from herald.job_logs l using gone g where l.job_id = g.id;
  return null;
end $$;

create trigger tg_jobs__delete_logs after delete on herald.jobs
  referencing old table as gone for each statement execute function herald.tg_jobs__delete_logs();

create function herald.tg_jobs__id_fixed() returns trigger
language plpgsql as $$
begin
  raise exception 'herald.jobs.id cannot change (job %)', old.id
    using errcode = 'foreign_key_violation', schema = 'herald', table = 'jobs';
end $$;

-- Only an UPDATE that sets id fires it: the engine's updates never do.
create trigger tg_jobs__id_fixed before update of id on herald.jobs
  for each row when (old.id is distinct from new.id) execute function herald.tg_jobs__id_fixed();
