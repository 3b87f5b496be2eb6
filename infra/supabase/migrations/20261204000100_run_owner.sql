-- The row's owner decides (issue 20, point 1). Until now a status write that named no user still
-- moved a row that has an owner: a run started through the Prefect API with someone else's
-- session_id (and no user_id) could write its FAILED over the victim's row. Now a write to a row
-- with an owner must name that owner; a row without one (the CLI's, `vibeinsight trigger`'s) keeps
-- the old rule, and its first writer that names a user becomes its owner.
-- Otherwise the function is that of 20261129001300 (signature and grants unchanged).

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
      and (p.user_id is null or excluded.user_id = p.user_id)  -- an owned row: its owner's runs only
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
