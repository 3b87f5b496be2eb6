-- The usage ledger over Supabase's REST API (PostgREST RPC, service role only): what a run Machine
-- with SUPABASE_URL and the service role key, but no database connection string, writes and reads.
-- The same rows and rules as the direct PostgreSQL ledger (blocks/usage_ledger.py).

create or replace function public.record_usage_events(events jsonb) returns integer
language sql security invoker set search_path = '' as $$
    with ins as (
        insert into public.usage_events (session_id, kind, service, bytes, calls, retries, tokens, audio_seconds,
                                         cost_usd, at, meta)
        select e.session_id, e.kind, e.service, e.bytes, e.calls, e.retries, e.tokens, e.audio_seconds,
               e.cost_usd, coalesce(e.at, now()), coalesce(e.meta, '{}')
        from jsonb_populate_recordset(null::public.usage_events, events) e
        returning 1)
    select count(*)::integer from ins
$$;

-- Rows of [start, end) oldest first, `at` as seconds since the epoch (what the report's frame reads).
create or replace function public.usage_events_between(p_start timestamptz, p_end timestamptz) returns jsonb
language sql stable security invoker set search_path = '' as $$
    select coalesce(jsonb_agg(jsonb_build_object(
               'session_id', session_id, 'kind', kind, 'service', service, 'bytes', bytes, 'calls', calls,
               'retries', retries, 'tokens', tokens, 'audio_seconds', audio_seconds, 'cost_usd', cost_usd::float8,
               'at', extract(epoch from at)::float8, 'meta', meta) order by at), '[]'::jsonb)
    from public.usage_events where at >= p_start and at < p_end
$$;

-- Egress bytes per UTC day: the quota guard's cheap read at the start of every run.
create or replace function public.usage_daily_egress(p_start timestamptz, p_end timestamptz, p_kinds text[])
returns jsonb language sql stable security invoker set search_path = '' as $$
    select coalesce(jsonb_object_agg(day, total), '{}'::jsonb) from (
        select to_char(at at time zone 'UTC', 'YYYY-MM-DD') as day, sum(bytes) as total
        from public.usage_events where at >= p_start and at < p_end and kind = any(p_kinds) group by 1) d
$$;

-- One row per (month, plan, metric, basis, level): first_seen_at stays, last_seen_at moves.
create or replace function public.record_quota_alerts(alerts jsonb) returns integer
language sql security invoker set search_path = '' as $$
    with up as (
        insert into public.quota_alerts (month, plan, metric, basis, level, value, limit_value, pct, message,
                                         flow_run_id, first_seen_at, last_seen_at)
        select a.month, a.plan, a.metric, a.basis, a.level, a.value, a.limit_value, a.pct, a.message,
               a.flow_run_id, now(), now()
        from jsonb_populate_recordset(null::public.quota_alerts, alerts) a
        on conflict (month, plan, metric, basis, level) do update set value = excluded.value,
            limit_value = excluded.limit_value, pct = excluded.pct, message = excluded.message,
            flow_run_id = excluded.flow_run_id, last_seen_at = excluded.last_seen_at
        returning 1)
    select count(*)::integer from up
$$;

create or replace function public.quota_alerts_of(p_month text) returns jsonb
language sql stable security invoker set search_path = '' as $$
    select coalesce(jsonb_agg(to_jsonb(q) - 'id' order by month, metric, basis, level), '[]'::jsonb)
    from public.quota_alerts q where p_month is null or month = p_month
$$;

revoke all on function public.record_usage_events(jsonb), public.usage_events_between(timestamptz, timestamptz),
    public.usage_daily_egress(timestamptz, timestamptz, text[]), public.record_quota_alerts(jsonb),
    public.quota_alerts_of(text) from public, anon, authenticated;
grant execute on function public.record_usage_events(jsonb), public.usage_events_between(timestamptz, timestamptz),
    public.usage_daily_egress(timestamptz, timestamptz, text[]), public.record_quota_alerts(jsonb),
    public.quota_alerts_of(text) to service_role;
