-- 015_submit_jobs: many job submissions in one statement (issue 15, the job engine). Adds a
-- function; nothing else changes, so the migration is not breaking.
--
-- JobStore.submit (the API's submissions) wrote each job in a statement of its own, and each
-- such commit took the event log's id lock and held it across its WAL flush: concurrent
-- submitters queued on the lock one commit at a time. The job store now gathers the
-- submissions that arrive while one is in flight (src/group-commit.ts) and writes them here,
-- one commit and one turn of the lock for all of them.
--
-- Each submission is the statement it was alone: an INSERT with ON CONFLICT DO NOTHING (so a
-- duplicate in flight, even one earlier in the same call, is skipped, not an error), its
-- upload beside it, in array order; the jobs written come back as (nth, job), nth being the
-- submission's 1-based position. A submission that does not come back conflicted with a key:
-- the caller looks up the job that holds it. Then every written job's `status` on `job:<id>`
-- and `created` on `jobs`, in submission order, go into the log with herald.append_rows: the
-- id lock is taken last and held to the commit, so call this in autocommit only.
create function herald.submit_jobs(
  types text[], payloads jsonb[], lock_keys text[], dedupe_keys text[], idempotency_keys text[],
  submitted_bys text[], max_attempts integer[], archives bytea[]
) returns table (nth integer, job jsonb)
language plpgsql as $$
declare
  n integer := coalesce(cardinality(types), 0);
  j herald.jobs;
  topics text[] := '{}';
  kinds text[] := '{}';
  datas jsonb[] := '{}';
begin
  for i in 1 .. n loop
    insert into herald.jobs as x (type, payload, lock_key, dedupe_key, idempotency_key, submitted_by, max_attempts)
    values (types[i], payloads[i], lock_keys[i], dedupe_keys[i], idempotency_keys[i], submitted_bys[i], max_attempts[i])
    on conflict do nothing
    returning x.* into j;
    continue when not found;
    if archives[i] is not null then
      insert into herald.job_inputs (job_id, archive) values (j.id, archives[i]);
    end if;
    nth := i;
    job := herald.job_json(j);
    topics := topics || array['job:' || j.id, 'jobs'];
    kinds := kinds || array['status', 'created'];
    datas := datas || array[job, job];
    return next;
  end loop;
  perform herald.append_rows(topics, kinds, datas);
end $$;
