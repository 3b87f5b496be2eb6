-- One current run per session (issue 20, points 2 and 5).
--
-- 1. processing_status.attempt: the run request_run() last started for the session (0: its first run,
--    then re-runs); null on rows request_run() does not manage (the CLI's, `vibeinsight trigger`'s).
--    On a managed row only the current attempt's run writes: a write must carry that attempt (the
--    flow reads it from its Prefect idempotency key, vibeinsight/status_rule.py) and, once the row
--    knows its run, that flow_run_id. A re-run clears flow_run_id; the Edge Function writes the new
--    run's id as soon as Prefect answers (set_current_run, with the attempt: a stale answer cannot
--    win), or the run's own first write does. A state of an older run never moves the row again.
-- 2. request_run() takes the caller's request id and records its decision: the same request
--    repeated (the Edge Function's call() retries) gets the same answer, not `in_flight`.
-- 3. apply_status_update() takes p_max_ahead_s: a write whose seq (its state's time, in microseconds)
--    is further ahead of the database's clock is refused (the writers pass their skew setting).
-- Both functions get a new signature: the old ones are dropped so each name has one signature.

alter table public.processing_status
    add column if not exists attempt integer check (attempt >= 0);
alter table public.run_requests
    add column if not exists request_id  text check (char_length(request_id) <= 64),
    add column if not exists flow_run_id text check (char_length(flow_run_id) <= 64),
    add column if not exists decision    jsonb;
create unique index if not exists run_requests_request_id_idx on public.run_requests (user_id, request_id)
    where request_id is not null;

-- Rows request_run() made: their current attempt. A re-run still waiting (PENDING) names its old run:
-- forget it, so the new run's first write is the one that names the row's run.
update public.processing_status p set attempt = r.last_try
    from (select session_id, max(attempt) as last_try from public.run_requests group by session_id) r
    where r.session_id = p.session_id;
update public.processing_status set flow_run_id = null where attempt > 0 and status = 'PENDING';

drop function if exists public.apply_status_update(uuid, text, bigint, uuid, text, text, text, integer, text, text, text);

create function public.apply_status_update(
    p_session_id    uuid,
    p_status        text,
    p_seq           bigint,
    p_user_id       uuid default null,
    p_flow_run_id   text default null,
    p_deployment    text default null,
    p_stage         text default null,
    p_progress      integer default null,
    p_error_code    text default null,
    p_error_message text default null,
    p_result_key    text default null,
    p_attempt       integer default null,
    p_max_ahead_s   double precision default null
) returns boolean
language plpgsql
security invoker
set search_path = ''
as $$
declare
    applied boolean;
begin
    if p_seq > (extract(epoch from clock_timestamp()) + p_max_ahead_s) * 1000000 then
        return false;  -- from the future: it would outrank every true write after it
    end if;
    insert into public.processing_status as p
        (session_id, user_id, flow_run_id, deployment, status, stage, progress,
         error_code, error_message, result_key, seq)
    values
        (p_session_id, p_user_id, p_flow_run_id, p_deployment, p_status, p_stage,
         coalesce(p_progress, 0), p_error_code, left(p_error_message, 500), p_result_key, p_seq)
    on conflict (session_id) do update set
        user_id       = coalesce(p.user_id, excluded.user_id),  -- the first owner stays
        flow_run_id   = coalesce(excluded.flow_run_id, p.flow_run_id),
        deployment    = coalesce(excluded.deployment, p.deployment),
        status        = excluded.status,
        stage         = coalesce(excluded.stage, p.stage),
        progress      = coalesce(p_progress, p.progress),
        error_code    = excluded.error_code,
        error_message = excluded.error_message,
        result_key    = coalesce(excluded.result_key, p.result_key),
        seq           = excluded.seq,
        updated_at    = now()
    where excluded.seq > p.seq
      and (p.user_id is null or excluded.user_id = p.user_id)  -- an owned row: its owner's runs only
      and (p.attempt is null                                   -- a managed row: its current run only
           or (p_attempt = p.attempt
               and (p.flow_run_id is null or excluded.flow_run_id is null
                    or excluded.flow_run_id = p.flow_run_id)))
      and (p.status not in ('COMPLETED', 'FAILED', 'CRASHED', 'CANCELLED')
           or (excluded.flow_run_id is not null
               and excluded.flow_run_id is distinct from p.flow_run_id)
           or (p.status in ('FAILED', 'CRASHED', 'CANCELLED')
               and excluded.flow_run_id = p.flow_run_id))
    returning true into applied;
    return coalesce(applied, false);
end
$$;

revoke execute on function public.apply_status_update(uuid, text, bigint, uuid, text, text, text, integer, text, text, text, integer, double precision)
    from public, anon, authenticated;
grant execute on function public.apply_status_update(uuid, text, bigint, uuid, text, text, text, integer, text, text, text, integer, double precision)
    to service_role;

drop function if exists public.request_run(uuid, uuid, text, text, boolean, integer, integer);

-- Decide and record one run request of the Edge Function, atomically per user. Outcomes as in
-- 20261129001300. With p_request_id, a request already decided (created or rerun) answers exactly
-- as it did the first time.
create function public.request_run(
    p_session_id    uuid,
    p_user_id       uuid,
    p_upload_key    text,
    p_deployment    text,
    p_rerun         boolean,
    p_max_in_flight integer,
    p_max_per_hour  integer,
    p_request_id    text default null
) returns jsonb
language plpgsql
security invoker
set search_path = ''
as $$
declare
    row       public.processing_status;
    first_key text;
    last_try  integer;
    other     uuid;
    answer    jsonb;
    asked_for uuid;
begin
    -- one decision at a time per user, so two calls cannot both pass a limit
    perform pg_advisory_xact_lock(hashtextextended('request_run:' || p_user_id::text, 0));
    if p_request_id is not null then
        select r.decision, r.session_id into answer, asked_for from public.run_requests r
            where r.user_id = p_user_id and r.request_id = p_request_id;
        if found then
            -- the same request again: the same answer; a request id reused for another session is refused
            return case when asked_for = p_session_id then answer else jsonb_build_object('outcome', 'conflict') end;
        end if;
    end if;
    select * into row from public.processing_status where session_id = p_session_id for update;
    if found and row.user_id is distinct from p_user_id then
        return jsonb_build_object('outcome', 'conflict');
    end if;
    select r.upload_key, max(r.attempt) over () into first_key, last_try
        from public.run_requests r where r.session_id = p_session_id order by r.attempt limit 1;
    if found and first_key <> p_upload_key then
        return jsonb_build_object('outcome', 'key_mismatch');
    end if;
    if row.session_id is not null and not p_rerun then
        return jsonb_build_object('outcome', 'exists', 'attempt', coalesce(last_try, 0),
                                  'flow_run_id', row.flow_run_id, 'status', row.status);
    end if;
    if row.session_id is not null and row.status in ('PENDING', 'RUNNING') then
        return jsonb_build_object('outcome', 'in_flight', 'flow_run_id', row.flow_run_id, 'status', row.status);
    end if;
    if row.session_id is null then
        select r.session_id into other from public.run_requests r
            where r.upload_key = p_upload_key and r.attempt = 0;
        if found then
            return jsonb_build_object('outcome', 'upload_taken', 'session_id', other);
        end if;
    end if;
    if (select count(*) from public.processing_status s
        where s.user_id = p_user_id and s.status in ('PENDING', 'RUNNING')) >= p_max_in_flight then
        return jsonb_build_object('outcome', 'too_many_in_flight');
    end if;
    if (select count(*) from public.run_requests r
        where r.user_id = p_user_id and r.created_at > now() - interval '1 hour') >= p_max_per_hour then
        return jsonb_build_object('outcome', 'too_many_per_hour');
    end if;
    last_try := coalesce(last_try + 1, 0);
    answer := jsonb_build_object('outcome', case when row.session_id is null then 'created' else 'rerun' end,
                                 'attempt', last_try, 'status', 'PENDING');
    insert into public.run_requests (session_id, user_id, upload_key, attempt, request_id, decision)
        values (p_session_id, p_user_id, p_upload_key, last_try, p_request_id, answer);
    if row.session_id is null then
        perform public.apply_status_update(p_session_id, 'PENDING', 1, p_user_id, null, p_deployment, 'queued', 0);
        update public.processing_status set attempt = 0 where session_id = p_session_id;
    else
        -- A re-run: PENDING again, the new attempt current, no run yet (its id comes with Prefect's
        -- answer or with the run's first write); the seq stays, so the new run's first write applies.
        update public.processing_status
            set status = 'PENDING', stage = 'queued', progress = 0, error_code = null, error_message = null,
                flow_run_id = null, attempt = last_try, updated_at = now()
            where session_id = p_session_id;
    end if;
    return answer;
end
$$;

revoke execute on function public.request_run(uuid, uuid, text, text, boolean, integer, integer, text)
    from public, anon, authenticated;
grant execute on function public.request_run(uuid, uuid, text, text, boolean, integer, integer, text)
    to service_role;

-- The Edge Function, once Prefect answered: run `p_flow_run_id` is the session's attempt `p_attempt`.
-- Written only while that attempt is the row's current one and the row names no other run; true
-- when the row now names it.
create function public.set_current_run(
    p_session_id  uuid,
    p_user_id     uuid,
    p_attempt     integer,
    p_flow_run_id text
) returns boolean
language plpgsql
security invoker
set search_path = ''
as $$
declare
    applied boolean;
begin
    update public.run_requests set flow_run_id = p_flow_run_id
        where session_id = p_session_id and user_id = p_user_id and attempt = p_attempt and flow_run_id is null;
    update public.processing_status set flow_run_id = p_flow_run_id
        where session_id = p_session_id and user_id = p_user_id and attempt = p_attempt
          and (flow_run_id is null or flow_run_id = p_flow_run_id)
        returning true into applied;
    return coalesce(applied, false);
end
$$;

revoke execute on function public.set_current_run(uuid, uuid, integer, text) from public, anon, authenticated;
grant execute on function public.set_current_run(uuid, uuid, integer, text) to service_role;
