with

speed_totals as (

    select * from {{ ref('stg_bytes') }}

),

last_24_hours as (

    select * from speed_totals
    where {{ last_24_hours('window_start') }}

),

per_window as (

    select
        window_start,
        sum(bytes) filter (where kind = 'antenna') as antenna_total_bytes,
        sum(bytes) filter (where kind = 'user') as user_total_bytes,
        sum(bytes) filter (where kind = 'app') as app_total_bytes,
        count(*) filter (where kind = 'antenna') as active_antennas,
        count(*) filter (where kind = 'user') as active_users,
        count(*) filter (where kind = 'app') as active_apps
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
