-- processing_status: one compact row per session, mirrored from Prefect, watched over Realtime.
-- Kept well under 1 KB (no transcript): Realtime's Postgres-change payloads are capped at 1,024 KB
-- and every update is broadcast to the session's subscribers.

create table if not exists public.processing_status (
    session_id    uuid primary key,
    user_id       uuid references auth.users (id) on delete cascade,
    flow_run_id   text check (char_length(flow_run_id) <= 64),
    deployment    text check (char_length(deployment) <= 128),
    status        text not null check (status in
                    ('PENDING', 'RUNNING', 'COMPLETED', 'FAILED', 'CRASHED', 'CANCELLED')),
    stage         text check (char_length(stage) <= 32),
    progress      integer not null default 0 check (progress between 0 and 100),
    error_code    text check (char_length(error_code) <= 64),
    error_message text check (char_length(error_message) <= 500),
    result_key    text check (char_length(result_key) <= 256),
    seq           bigint not null,
    created_at    timestamptz not null default now(),
    updated_at    timestamptz not null default now()
);

create index if not exists processing_status_user_id_idx on public.processing_status (user_id);
create index if not exists processing_status_flow_run_id_idx on public.processing_status (flow_run_id);
-- reconcile-status scans the rows still open
create index if not exists processing_status_open_idx on public.processing_status (updated_at)
    where status in ('PENDING', 'RUNNING');

alter table public.processing_status enable row level security;

-- Clients read their own rows only; nobody but the service role writes.
drop policy if exists "own rows" on public.processing_status;
create policy "own rows" on public.processing_status
    for select to authenticated using (user_id = (select auth.uid()));

revoke all on public.processing_status from anon, authenticated;
grant select on public.processing_status to authenticated;
grant select, insert, update, delete on public.processing_status to service_role;

alter publication supabase_realtime add table public.processing_status;

-- Apply one status update atomically. Ignored (returns false) when p_seq is not newer than the
-- row's seq, or when the row is terminal and the update comes from the same flow run (or names
-- none); a different flow_run_id (a re-run) may restart a terminal row. The same rule as the
-- SQLite store in blocks/status_store.py. ON CONFLICT takes the row lock, so concurrent writers
-- serialize on the row and the WHERE sees the latest version.
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
        user_id       = coalesce(excluded.user_id, p.user_id),
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
      and (p.status not in ('COMPLETED', 'FAILED', 'CRASHED', 'CANCELLED')
           or (excluded.flow_run_id is not null
               and excluded.flow_run_id is distinct from p.flow_run_id))
    returning true into applied;
    return coalesce(applied, false);
end
$$;

revoke execute on function public.apply_status_update(uuid, text, bigint, uuid, text, text, text, integer, text, text, text)
    from public, anon, authenticated;
grant execute on function public.apply_status_update(uuid, text, bigint, uuid, text, text, text, integer, text, text, text)
    to service_role;
