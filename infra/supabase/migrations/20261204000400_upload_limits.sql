-- Per-user upload limits of the Edge Function's POST /uploads (issue 19): presigned upload URLs per
-- hour and declared bytes per 24 hours, decided atomically per user beside the run limits
-- (request_run, migration 20261129001300). The figures come from the caller: the shared limits file
-- infra/supabase/functions/_shared/limits.json (max_uploads_per_hour_per_user,
-- max_upload_bytes_per_day_per_user), which the Python settings read too.

create table if not exists public.upload_requests (
    id          bigserial primary key,
    user_id     uuid not null references auth.users (id) on delete cascade,
    upload_key  text not null check (char_length(upload_key) <= 1024),
    bytes       bigint not null check (bytes > 0),  -- as declared: the presigned URLs allow no more
    created_at  timestamptz not null default now()
);
create index if not exists upload_requests_user_created_idx on public.upload_requests (user_id, created_at);

alter table public.upload_requests enable row level security;
revoke all on public.upload_requests from anon, authenticated;
grant select, insert, update, delete on public.upload_requests to service_role;
grant usage, select on sequence public.upload_requests_id_seq to service_role;
revoke all on sequence public.upload_requests_id_seq from anon, authenticated;

-- Decide and record one upload request. Answers {"outcome": …}:
--   created                  recorded; hand out the URL(s)
--   too_many_uploads_per_hour   p_max_per_hour URLs were handed out to the user in the last hour
--   too_many_upload_bytes       the user's declared bytes of the last 24 hours plus p_bytes exceed p_max_bytes_per_day
create or replace function public.request_upload(
    p_user_id           uuid,
    p_upload_key        text,
    p_bytes             bigint,
    p_max_per_hour      integer,
    p_max_bytes_per_day bigint
) returns jsonb
language plpgsql
security invoker
set search_path = ''
as $$
declare
    last_hour integer;
    last_day  bigint;
begin
    -- one decision at a time per user, so two calls cannot both pass a limit
    perform pg_advisory_xact_lock(hashtextextended('request_upload:' || p_user_id::text, 0));
    -- the limits look back one day at most: the user's older rows are of no use
    delete from public.upload_requests where user_id = p_user_id and created_at < now() - interval '1 day';
    select count(*) filter (where created_at > now() - interval '1 hour'),
           coalesce(sum(bytes) filter (where created_at > now() - interval '1 day'), 0)
        into last_hour, last_day
        from public.upload_requests where user_id = p_user_id;
    if last_hour >= p_max_per_hour then
        return jsonb_build_object('outcome', 'too_many_uploads_per_hour');
    end if;
    if last_day + p_bytes > p_max_bytes_per_day then
        return jsonb_build_object('outcome', 'too_many_upload_bytes');
    end if;
    insert into public.upload_requests (user_id, upload_key, bytes) values (p_user_id, p_upload_key, p_bytes);
    return jsonb_build_object('outcome', 'created');
end
$$;

revoke execute on function public.request_upload(uuid, text, bigint, integer, bigint) from public, anon, authenticated;
grant execute on function public.request_upload(uuid, text, bigint, integer, bigint) to service_role;
