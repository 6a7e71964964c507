-- 006_takedown: takedown requests from the public form. Contact details live here, not in
-- the job payload: jobs are publicly readable, requesters' addresses are not.
create table herald.takedown_requests (
  id bigint generated always as identity primary key,
  job_id bigint references herald.jobs (id) on delete set null,
  package text not null,
  requester_name text not null,
  requester_email text not null,
  reason text not null,
  created_at timestamptz not null default now()
);
