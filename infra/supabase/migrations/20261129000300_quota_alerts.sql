-- quota_alerts: alerts of the quota-report flow (80 % / 100 % of a plan limit, now or forecast),
-- one row per month, plan, metric, basis and level; a later report moves last_seen_at.
-- Operators query it with the service role; clients never see it.

create table if not exists public.quota_alerts (
    id            bigserial primary key,
    month         text not null check (month ~ '^\d{4}-\d{2}$'),
    plan          text not null,
    metric        text not null,
    basis         text not null check (basis in ('now', 'forecast')),
    level         text not null check (level in ('warning', 'exceeded')),
    value         double precision not null,
    limit_value   double precision not null,
    pct           double precision not null,
    message       text not null,
    flow_run_id   text null,
    first_seen_at timestamptz not null default now(),
    last_seen_at  timestamptz not null default now(),
    unique (month, plan, metric, basis, level)
);

create index if not exists quota_alerts_month_idx on public.quota_alerts (month);

alter table public.quota_alerts enable row level security;

revoke all on public.quota_alerts from anon, authenticated;
grant select, insert, update, delete on public.quota_alerts to service_role;
grant usage, select on sequence public.quota_alerts_id_seq to service_role;
