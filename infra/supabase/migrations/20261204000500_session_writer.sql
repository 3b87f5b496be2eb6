-- What a run must know before it writes anything (flows/process_audio.py check_session): who owns
-- the session and which run is its current one. The run role reads no table (…000300_runs_role), so
-- this function hands it those three fields of one row, by the session's id, and nothing else
-- (null when the session has no row yet).
create or replace function public.session_writer(p_session_id uuid)
returns jsonb
language sql stable security definer set search_path = ''
as $$
    select jsonb_build_object('user_id', s.user_id, 'attempt', s.attempt, 'flow_run_id', s.flow_run_id)
    from public.processing_status s where s.session_id = p_session_id
$$;

revoke execute on function public.session_writer(uuid) from public, anon, authenticated;
grant execute on function public.session_writer(uuid) to service_role, vibeinsight_run;
