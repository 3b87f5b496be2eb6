-- Session ownership and per-user run limits for the Edge Function `process-audio`.
--
-- 1. A row's user_id, once set, never changes: apply_status_update no longer overwrites it (and
--    ignores an update that names another user), and a trigger refuses any other writer's change.
--    Otherwise the function is that of 20261129001100 (a Prefect retry may replace its own failure).
-- 2. run_requests: one row per run the Edge Function starts (the first run of a session and each
--    re-run), so the per-user in-flight and per-hour limits and "one session per upload key" are
--    checked atomically in one RPC, request_run().
-- 3. The sequences of usage_events and quota_alerts lose Supabase's default grants to clients.

create or replace function public.apply_status_update(
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
    p_result_key    text default null
) returns boolean
language plpgsql
security invoker
set search_path = ''
as $$
declare
    applied boolean;
begin
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
      and (excluded.user_id is null or p.user_id is null or excluded.user_id = p.user_id)
      and (p.status not in ('COMPLETED', 'FAILED', 'CRASHED', 'CANCELLED')
           or (excluded.flow_run_id is not null
               and excluded.flow_run_id is distinct from p.flow_run_id)
           or (p.status in ('FAILED', 'CRASHED', 'CANCELLED')
               and excluded.flow_run_id = p.flow_run_id))
    returning true into applied;
    return coalesce(applied, false);
end
$$;

revoke execute on function public.apply_status_update(uuid, text, bigint, uuid, text, text, text, integer, text, text, text)
    from public, anon, authenticated;
grant execute on function public.apply_status_update(uuid, text, bigint, uuid, text, text, text, integer, text, text, text)
    to service_role;

-- Any writer, the service role included: an owner once set is final.
create or replace function public.keep_session_owner() returns trigger
language plpgsql
set search_path = ''
as $$
begin
    if old.user_id is not null and new.user_id is distinct from old.user_id then
        raise exception 'processing_status.user_id of session % cannot change', old.session_id
            using errcode = '42501';
    end if;
    return new;
end
$$;

drop trigger if exists keep_session_owner on public.processing_status;
create trigger keep_session_owner before update of user_id on public.processing_status
    for each row execute function public.keep_session_owner();

create table if not exists public.run_requests (
    id          bigserial primary key,
    session_id  uuid not null,
    user_id     uuid not null references auth.users (id) on delete cascade,
    upload_key  text not null check (char_length(upload_key) <= 1024),
    attempt     integer not null check (attempt >= 0),  -- 0: the session's first run, then re-runs
    created_at  timestamptz not null default now(),
    unique (session_id, attempt)
);
-- one session per upload: a second session on the same key would be a second bill
create unique index if not exists run_requests_upload_key_idx on public.run_requests (upload_key) where attempt = 0;
create index if not exists run_requests_user_created_idx on public.run_requests (user_id, created_at);

alter table public.run_requests enable row level security;
revoke all on public.run_requests from anon, authenticated;
grant select, insert, update, delete on public.run_requests to service_role;
grant usage, select on sequence public.run_requests_id_seq to service_role;

-- Decide and record one run request of the Edge Function, atomically per user. Answers
-- {"outcome": …, "attempt": n, "flow_run_id": …, "status": …}. Outcomes:
--   created   a new session: its PENDING row (seq 1) and request are written; start run `attempt` 0
--   exists    the caller's own session, asked again: start (idempotently) the same run `attempt`
--   rerun     the caller's own finished session with p_rerun: start run `attempt` (row back to PENDING)
--   conflict  the session belongs to someone else (nothing about it is returned)
--   key_mismatch   the caller's session was made for another upload key
--   upload_taken   another session of the caller already processes this upload (its id is returned)
--   in_flight      a re-run was asked while the session still runs
--   too_many_in_flight / too_many_per_hour   the caller's limits
create or replace function public.request_run(
    p_session_id    uuid,
    p_user_id       uuid,
    p_upload_key    text,
    p_deployment    text,
    p_rerun         boolean,
    p_max_in_flight integer,
    p_max_per_hour  integer
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
begin
    -- one decision at a time per user, so two calls cannot both pass a limit
    perform pg_advisory_xact_lock(hashtextextended('request_run:' || p_user_id::text, 0));
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
    insert into public.run_requests (session_id, user_id, upload_key, attempt)
        values (p_session_id, p_user_id, p_upload_key, last_try);
    if row.session_id is null then
        perform public.apply_status_update(p_session_id, 'PENDING', 1, p_user_id, null, p_deployment, 'queued', 0);
        return jsonb_build_object('outcome', 'created', 'attempt', 0, 'status', 'PENDING');
    end if;
    -- A re-run: the row shows PENDING again but keeps its seq, so the new run's first write (a
    -- newer seq, another flow_run_id) applies and the old run's late writes do not.
    update public.processing_status
        set status = 'PENDING', stage = 'queued', progress = 0, error_code = null, error_message = null,
            updated_at = now()
        where session_id = p_session_id;
    return jsonb_build_object('outcome', 'rerun', 'attempt', last_try, 'status', 'PENDING');
end
$$;

revoke execute on function public.request_run(uuid, uuid, text, text, boolean, integer, integer)
    from public, anon, authenticated;
grant execute on function public.request_run(uuid, uuid, text, text, boolean, integer, integer)
    to service_role;

-- One user's Supabase-billed egress this month (rows whose meta.user_id is theirs): the quota
-- guard's per-user share, read by the Supabase ledger (blocks/usage_ledger.py).
create or replace function public.usage_user_egress(p_start timestamptz, p_end timestamptz, p_user_id text,
                                                    p_kinds text[])
returns bigint
language sql
stable
security invoker
set search_path = ''
as $$
    select coalesce(sum(bytes), 0)::bigint from public.usage_events
    where at >= p_start and at < p_end and provider = 'supabase' and kind = any(p_kinds)
      and meta ->> 'user_id' = p_user_id
$$;

revoke execute on function public.usage_user_egress(timestamptz, timestamptz, text, text[]) from public, anon, authenticated;
grant execute on function public.usage_user_egress(timestamptz, timestamptz, text, text[]) to service_role;

-- Supabase grants every new sequence to anon and authenticated by default privileges.
revoke all on sequence public.usage_events_id_seq from anon, authenticated;
revoke all on sequence public.quota_alerts_id_seq from anon, authenticated;
revoke all on sequence public.run_requests_id_seq from anon, authenticated;
