-- A Prefect retry runs the same flow run again: its newer states (Running, then Completed) must
-- be able to replace the FAILED, CRASHED or CANCELLED row the first attempt left, or the row stays
-- FAILED while the run completed. COMPLETED stays final for its own flow run; a re-run (another
-- flow_run_id) may still restart any terminal row. Same rule as the SQLite store in
-- blocks/status_store.py; the signature and grants are those of 20261129000100.

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
               and excluded.flow_run_id is distinct from p.flow_run_id)
           or (p.status in ('FAILED', 'CRASHED', 'CANCELLED')
               and excluded.flow_run_id = p.flow_run_id))
    returning true into applied;
    return coalesce(applied, false);
end
$$;

