-- 011_idempotency_and_webhook_replay: what makes a repeated registry request a repeat, and
-- nothing more (issue 14, "registry doors").
--
-- Idempotency keys. Until now a submission's `Idempotency-Key` went straight into the unique
-- herald.jobs.idempotency_key: global, so carol's key answered alice's publish with carol's
-- retract job (which then never ran for alice), and the same key on a different request
-- silently returned the first job. A key now belongs to a subject (the token's user) and to
-- the one request first sent with it: this table binds (subject, key) to a hash of that
-- request. The job itself is still found through herald.jobs.idempotency_key, which now holds
-- a digest of (subject, key) (src/registry/idempotency.ts): its unique index keeps settling
-- races between two equal requests, as before. The binding is claimed before the job is
-- submitted, so of two different requests racing with one key exactly one gets a job and the
-- other `422 idempotency_key_reused`. Rows are kept forever, like the jobs they key.
--
-- Rejected: a request-hash column on herald.jobs. The check would then live in the generic job
-- store, which knows nothing of subjects or routes, and the first of two racing requests
-- could not be told from the second without a lock.
create table herald.idempotency_keys (
  -- The user whose token sent the request.
  subject text not null,
  key text not null check (octet_length(key) between 1 and 255),
  -- sha256 of the request in canonical form: the job type, its payload without the actor,
  -- and the sha256 of an uploaded archive.
  request_sha256 bytea not null check (octet_length(request_sha256) = 32),
  created_at timestamptz not null default now(),
  primary key (subject, key)
);

-- Webhook replays. A captured signed delivery could be sent again with new delivery ids
-- (20 times, in the issue) and each one queued a sync. The signature is an HMAC of the body,
-- so the same signature is the same body from someone who once held it: within the replay
-- window (HERALD_INDEX_WEBHOOK_REPLAY_WINDOW_MS) it is a duplicate, whatever its
-- X-GitHub-Delivery. In the database rather than in memory, so it holds across restarts and
-- across the processes behind one load balancer. A delivery claims its signature first and
-- fills in job_id once its job is queued; rows older than the window are deleted by the
-- deliveries that come later (and a late repeat of an expired one claims it afresh).
create table herald.webhook_signatures (
  -- The 32 bytes of `X-Hub-Signature-256`, as verified.
  signature bytea primary key check (octet_length(signature) = 32),
  job_id bigint references herald.jobs (id) on delete set null,
  received_at timestamptz not null default now()
);
create index webhook_signatures_received_at_idx on herald.webhook_signatures (received_at);
