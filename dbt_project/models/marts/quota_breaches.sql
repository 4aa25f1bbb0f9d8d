with

breaches as (

    select * from {{ ref('stg_user_quota_limit') }}

),

users as (

    select * from {{ ref('stg_user_metadata') }}

),

with_recent_count as (

    -- the 24 hours that end with the breach's hour: (hour - 23h) .. hour
    select
        hour,
        email,
        bytes,
        quota,
        count(*) over (
            partition by email
            order by hour
            range between interval '23 hours' preceding and current row
        ) as hours_over_last_24h
    from breaches

)

select
    with_recent_count.hour,
    users.user_id,
    users.name,
    with_recent_count.email,
    with_recent_count.bytes,
    with_recent_count.quota,
    with_recent_count.bytes - with_recent_count.quota as over_by_bytes,
    100.0 * (with_recent_count.bytes - with_recent_count.quota)::double precision
        / nullif(with_recent_count.quota, 0) as over_by_pct,
    with_recent_count.hours_over_last_24h
from with_recent_count
left join users on users.email = with_recent_count.email
