-- usage_events names the provider that bills each row (issue 14): Supabase, Tigris, Fly, OpenAI,
-- Gemini, local (nothing billed) or other (a further S3 endpoint), with what that provider bills:
-- bytes out, bytes stored (kind storage_held), requests (calls), Machine seconds (kind machine_run,
-- `seconds`, size in meta.size), outbound transfer (kind transfer_out), tokens, audio seconds.
-- Reading an upload from Tigris is a `tigris` row: it is not Supabase egress.

alter table public.usage_events add column if not exists provider text;
alter table public.usage_events add column if not exists seconds double precision not null default 0
    check (seconds >= 0);

-- Rows written before this migration: the provider follows from the service they name.
update public.usage_events set provider = case
        when service in ('supabase', 'realtime') then 'supabase'
        when service in ('tigris', 'fly', 'openai', 'gemini', 'local') then service
        when service is null then 'local'
        else 'other' end
    where provider is null;

-- No default: a writer that does not say who bills a row fails loudly instead of booking it to nobody.
alter table public.usage_events alter column provider set not null;
alter table public.usage_events drop constraint if exists usage_events_provider_check;
alter table public.usage_events add constraint usage_events_provider_check
    check (provider in ('supabase', 'tigris', 'fly', 'openai', 'gemini', 'local', 'other'));

alter table public.usage_events drop constraint if exists usage_events_kind_check;
alter table public.usage_events add constraint usage_events_kind_check check (kind in
    ('storage_download', 'storage_upload', 'storage_held', 'api_call', 'edge_response', 'realtime_message',
     'status_write', 'result_download', 'machine_run', 'transfer_out'));

create index if not exists usage_events_provider_kind_at_idx on public.usage_events (provider, kind, at);

-- The ledger's REST functions (migration 20261129000400) with the provider columns: rows name who
-- bills them, reads return `provider` and `seconds`, daily egress is Supabase's only, and the guard
-- reads its daily totals in one call.
create or replace function public.record_usage_events(events jsonb) returns integer
language sql security invoker set search_path = '' as $$
    with ins as (
        insert into public.usage_events (session_id, kind, service, provider, bytes, calls, retries, tokens,
                                         audio_seconds, seconds, cost_usd, at, meta)
        select e.session_id, e.kind, e.service, e.provider, e.bytes, e.calls, e.retries, e.tokens, e.audio_seconds,
               coalesce(e.seconds, 0), e.cost_usd, coalesce(e.at, now()), coalesce(e.meta, '{}')
        from jsonb_populate_recordset(null::public.usage_events, events) e
        returning 1)
    select count(*)::integer from ins
$$;

create or replace function public.usage_events_between(p_start timestamptz, p_end timestamptz) returns jsonb
language sql stable security invoker set search_path = '' as $$
    select coalesce(jsonb_agg(jsonb_build_object(
               'session_id', session_id, 'kind', kind, 'service', service, 'provider', provider, 'bytes', bytes,
               'calls', calls, 'retries', retries, 'tokens', tokens, 'audio_seconds', audio_seconds,
               'seconds', seconds, 'cost_usd', cost_usd::float8, 'at', extract(epoch from at)::float8,
               'meta', meta) order by at), '[]'::jsonb)
    from public.usage_events where at >= p_start and at < p_end
$$;

-- Supabase egress per UTC day: only rows Supabase bills (a Tigris read is nobody's egress).
create or replace function public.usage_daily_egress(p_start timestamptz, p_end timestamptz, p_kinds text[])
returns jsonb language sql stable security invoker set search_path = '' as $$
    select coalesce(jsonb_object_agg(day, total), '{}'::jsonb) from (
        select to_char(at at time zone 'UTC', 'YYYY-MM-DD') as day, sum(bytes) as total
        from public.usage_events where at >= p_start and at < p_end and provider = 'supabase'
            and kind = any(p_kinds) group by 1) d
$$;

-- What the quota guard reads at the start of every run, per UTC day: Supabase egress, Realtime
-- messages, booked cost and sessions (vibeinsight.quota.DAILY_TOTALS).
create or replace function public.usage_daily_totals(p_start timestamptz, p_end timestamptz, p_egress_kinds text[],
                                                     p_realtime_kinds text[])
returns jsonb language sql stable security invoker set search_path = '' as $$
    select coalesce(jsonb_object_agg(day, jsonb_build_object(
               'supabase_egress_bytes', egress, 'realtime_messages', messages, 'cost_usd', cost, 'sessions', sessions)),
           '{}'::jsonb) from (
        select to_char(at at time zone 'UTC', 'YYYY-MM-DD') as day,
               sum(case when provider = 'supabase' and kind = any(p_egress_kinds) then bytes else 0 end) as egress,
               sum(case when provider = 'supabase' and kind = any(p_realtime_kinds) then calls else 0 end) as messages,
               sum(cost_usd)::float8 as cost,
               count(distinct case when kind = 'storage_download' then session_id end) as sessions
        from public.usage_events where at >= p_start and at < p_end group by 1) d
$$;

revoke all on function public.usage_daily_totals(timestamptz, timestamptz, text[], text[]) from public, anon, authenticated;
grant execute on function public.usage_daily_totals(timestamptz, timestamptz, text[], text[]) to service_role;
