-- 014_append_rows: herald.append for rows a statement already has, as arrays, without a JSON
-- round trip (issue 15, the chatty job). Adds a function; nothing else changes, so the
-- migration is not breaking.
--
-- The job engine's statements (src/jobs/store.ts: submit, the claim/outcome cycle, log lines)
-- end with an append of the events of the rows they wrote. Through herald.append(jsonb) each
-- event was built as a JSON object, aggregated into one array, and taken apart again by
-- jsonb_array_elements: for a write of 500 log lines that was as long as inserting the lines
-- themselves. Here the columns travel as arrays, unnested in order.
--
-- Same rules as herald.append: the id lock is taken here, at the end of the caller's
-- statement, and held to its commit, so call it only from a statement that commits right
-- after (autocommit); ids are contiguous in array order; `at` is read once, after the lock.
create function herald.append_rows(topics text[], types text[], datas jsonb[]) returns setof bigint
language plpgsql as $$
declare
  n bigint := coalesce(cardinality(topics), 0);
  first_id bigint;
  ts timestamptz;
begin
  if n = 0 then
    return;
  end if;
  if cardinality(types) <> n or cardinality(datas) <> n then
    raise exception 'herald.append_rows: % topics, % types and % datas', n, cardinality(types), cardinality(datas)
      using errcode = 'invalid_parameter_value';
  end if;
  perform herald.lock_ids();
  first_id := herald.take_ids(n);
  ts := clock_timestamp();
  return query
    insert into herald.events (id, topic, type, data, at)
    select first_id + u.ord - 1, u.topic, u.type, coalesce(u.data, 'null'::jsonb), ts
    from unnest(topics, types, datas) with ordinality as u(topic, type, data, ord)
    returning id;
  perform herald.ring();
end $$;
