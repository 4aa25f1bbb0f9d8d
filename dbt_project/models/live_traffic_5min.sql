with

bytes as (

    select * from {{ source('antenna', 'bytes') }}

),

last_24_hours as (

    select
        "timestamp" as window_start,
        id,
        value,
        type
    from bytes
    where "timestamp" >= (now() at time zone 'utc') - interval '24 hours'

),

per_window as (

    select
        window_start,
        sum(value) filter (where type = 'antenna_total_bytes') as antenna_total_bytes,
        sum(value) filter (where type = 'user_total_bytes') as user_total_bytes,
        sum(value) filter (where type = 'app_total_bytes') as app_total_bytes,
        count(*) filter (where type = 'antenna_total_bytes') as active_antennas,
        count(*) filter (where type = 'user_total_bytes') as active_users,
        count(*) filter (where type = 'app_total_bytes') as active_apps
    from last_24_hours
    group by window_start

)

select
    window_start,
    window_start + interval '5 minutes' as window_end,
    coalesce(antenna_total_bytes, 0)::bigint as antenna_total_bytes,
    coalesce(user_total_bytes, 0)::bigint as user_total_bytes,
    coalesce(app_total_bytes, 0)::bigint as app_total_bytes,
    active_antennas,
    active_users,
    active_apps
from per_window
