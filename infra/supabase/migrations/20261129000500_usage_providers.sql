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
