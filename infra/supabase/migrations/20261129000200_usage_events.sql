-- usage_events: what each run used (bytes, calls, tokens, cost), turned into ledger rows by the
-- quota report. Written by the service role only; a user reads the rows of their own sessions.

create table if not exists public.usage_events (
    id            bigserial primary key,
    session_id    uuid null,
    kind          text not null check (kind in
                    ('storage_download', 'storage_upload', 'api_call', 'edge_response',
                     'realtime_message', 'status_write', 'result_download')),
    service       text null,
    bytes         bigint not null default 0 check (bytes >= 0),
    calls         integer not null default 0 check (calls >= 0),
    retries       integer not null default 0 check (retries >= 0),
    tokens        bigint not null default 0 check (tokens >= 0),
    audio_seconds double precision not null default 0 check (audio_seconds >= 0),
    cost_usd      numeric(12, 6) not null default 0 check (cost_usd >= 0),
    at            timestamptz not null default now(),
    meta          jsonb not null default '{}'
);

create index if not exists usage_events_at_idx on public.usage_events (at);
create index if not exists usage_events_session_idx on public.usage_events (session_id);
create index if not exists usage_events_service_kind_at_idx on public.usage_events (service, kind, at);

alter table public.usage_events enable row level security;

drop policy if exists "own sessions" on public.usage_events;
create policy "own sessions" on public.usage_events
    for select to authenticated using (
        exists (select 1 from public.processing_status s
                where s.session_id = usage_events.session_id
                  and s.user_id = (select auth.uid())));

revoke all on public.usage_events from anon, authenticated;
grant select on public.usage_events to authenticated;
grant select, insert, update, delete on public.usage_events to service_role;
grant usage, select on sequence public.usage_events_id_seq to service_role;
