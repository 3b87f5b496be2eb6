-- The role of the run Machines (issue 19): a run writes its status row and books its usage, and
-- nothing else. vibeinsight_run holds no table, sequence or view grant and may execute only:
--   apply_status_update   the status hooks' writes (blocks/status_store.py)
--   record_usage_events   the run's usage rows (blocks/usage_ledger.py, UsageLedger.record)
--   usage_daily_totals, usage_user_egress   the quota guard's two reads at the start of every run
--                         (flows/process_audio.py quota_guard): sums only, never a row; without
--                         them the guard would be skipped on every run
-- Not request_run, not the report's reads, not the alerts. Those functions write and read tables
-- the role cannot touch, so they run as their owner: SECURITY DEFINER with an empty search_path
-- (every name in them is schema-qualified). A later migration that CREATE OR REPLACEs one of them
-- must keep `security definer` (tests/test_runs_role.py fails otherwise).
--
-- How runs authenticate as this role:
--   Supabase's REST API: a JWT whose `role` claim is vibeinsight_run, signed with the project's JWT
--     secret (`vibeinsight keys run-token`), sent as `Authorization: Bearer …` with the anon key
--     as `apikey`. PostgREST's authenticator switches to the role, hence the grant below.
--   postgresql:// stores: a login role that is a member of vibeinsight_run, e.g.
--     create role vibeinsight_run_machine login password '…' in role vibeinsight_run;

-- Roles are cluster-wide: another database of the cluster may have made it already, maybe at the
-- same instant (unique_violation on pg_authid).
do $$ begin
    create role vibeinsight_run nologin noinherit nosuperuser nocreatedb nocreaterole nobypassrls;
exception when duplicate_object or unique_violation then null;
end $$;

grant usage on schema public to vibeinsight_run;

do $$ begin
    if exists (select 1 from pg_roles where rolname = 'authenticator') then
        grant vibeinsight_run to authenticator;
    end if;
end $$;

-- By name, over every overload: the status and run-request functions gain parameters in other
-- migrations, and each signature must be covered.
do $$
declare
    fn regprocedure;
begin
    for fn in
        select p.oid::regprocedure from pg_proc p join pg_namespace n on n.oid = p.pronamespace
        where n.nspname = 'public'
          and p.proname in ('apply_status_update', 'record_usage_events', 'usage_daily_totals', 'usage_user_egress')
    loop
        execute format('alter function %s security definer set search_path = %L', fn, '');
        execute format('revoke execute on function %s from public, anon, authenticated', fn);
        execute format('grant execute on function %s to service_role, vibeinsight_run', fn);
    end loop;
end $$;
