-- 003_jobs: the job queue, its inputs and its log. Full history is kept (no deletion on
-- completion): a job and its log stay readable by id.

create table herald.jobs (
  id bigint generated always as identity primary key,
  type text not null check (type ~ '^[a-z][a-z0-9-]{0,63}$'),
  status text not null default 'queued' check (status in ('queued', 'running', 'succeeded', 'failed')),
  -- What was asked, as shown by the API (never archive bytes: those are in job_inputs).
  payload jsonb not null,
  -- Jobs with the same lock key never run at the same time (every job on one package
  -- shares `package:<name>`; index syncs share one global key).
  lock_key text,
  -- An identical request while one is queued or running gets the existing job.
  dedupe_key text,
  idempotency_key text unique check (octet_length(idempotency_key) <= 255),
  submitted_by text,
  attempts integer not null default 0,
  max_attempts integer not null check (max_attempts >= 1),
  run_at timestamptz not null default now(),
  -- The lease: a worker renews locked_until while it runs the job; a crashed worker's job
  -- becomes claimable again once it lapses.
  locked_by text,
  locked_until timestamptz,
  created_at timestamptz not null default now(),
  started_at timestamptz,
  finished_at timestamptz,
  result jsonb,
  error text
);
create index jobs_ready_idx on herald.jobs (run_at, id) where status = 'queued';
create index jobs_lease_idx on herald.jobs (locked_until) where status = 'running';
create index jobs_type_status_idx on herald.jobs (type, status, id);
create unique index jobs_dedupe_inflight_idx on herald.jobs (dedupe_key) where status in ('queued', 'running');
-- The lock, enforced by the database: at most one running job per lock key, whatever the
-- number of workers and processes.
create unique index jobs_running_lock_idx on herald.jobs (lock_key) where status = 'running';

-- Uploaded bytes a job needs (the publish archive), apart from the listed metadata.
create table herald.job_inputs (
  job_id bigint primary key references herald.jobs (id) on delete cascade,
  archive bytea not null
);

create table herald.job_logs (
  id bigint generated always as identity primary key,
  job_id bigint not null references herald.jobs (id) on delete cascade,
  -- 10 debug, 20 info, 30 warn, 40 error
  level smallint not null check (level in (10, 20, 30, 40)),
  message text not null,
  truncated boolean not null default false,
  at timestamptz not null default clock_timestamp()
);
create index job_logs_job_id_idx on herald.job_logs (job_id, id);

-- The JSON shapes of the API, defined once: `GET /api/v1/jobs/<id>` and the status events on
-- `job:<id>` both use job_json; the logs endpoint and log events both use job_log_json, so a
-- client decodes both with one decoder.
create function herald.iso(ts timestamptz) returns text
language sql immutable parallel safe as $$
  -- Same text as JavaScript's Date.prototype.toISOString().
  select to_char(ts at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
$$;

create function herald.job_json(j herald.jobs) returns jsonb
language sql stable parallel safe as $$
  select jsonb_build_object(
    'id', j.id, 'type', j.type, 'status', j.status, 'payload', j.payload,
    'createdAt', herald.iso(j.created_at), 'startedAt', herald.iso(j.started_at),
    'finishedAt', herald.iso(j.finished_at), 'attempts', j.attempts,
    'result', j.result, 'error', j.error)
$$;

create function herald.level_name(level smallint) returns text
language sql immutable parallel safe as $$
  select case level when 10 then 'debug' when 20 then 'info' when 30 then 'warn' else 'error' end
$$;

create function herald.job_log_json(l herald.job_logs) returns jsonb
language sql stable parallel safe as $$
  select jsonb_build_object('id', l.id, 'level', herald.level_name(l.level), 'message', l.message, 'at', herald.iso(l.at))
    || case when l.truncated then '{"truncated":true}'::jsonb else '{}'::jsonb end
$$;

-- Submit a job from SQL, inside any transaction (graphile-worker's add_job, for Herald):
-- the job and its `jobs`/`job:<id>` events commit with the caller's transaction.
create function herald.submit_job(type text, payload jsonb default '{}', lock_key text default null, max_attempts integer default 3)
returns bigint
language plpgsql as $$
declare
  j herald.jobs;
begin
  insert into herald.jobs (type, payload, lock_key, max_attempts)
  values (type, coalesce(payload, '{}'), lock_key, max_attempts)
  returning * into j;
  perform herald.emit_many(jsonb_build_array(
    jsonb_build_object('topic', 'job:' || j.id, 'type', 'status', 'data', herald.job_json(j)),
    jsonb_build_object('topic', 'jobs', 'type', 'created', 'data', herald.job_json(j))));
  return j.id;
end $$;
