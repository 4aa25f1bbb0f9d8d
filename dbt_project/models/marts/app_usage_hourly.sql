with

bytes_hourly as (

    select * from {{ ref('stg_bytes_hourly') }}

),

app_bytes as (

    select
        hour,
        entity as app,
        bytes
    from bytes_hourly
    where kind = 'app'

),

with_hour_total as (

    select
        hour,
        app,
        bytes,
        (sum(bytes) over (partition by hour))::bigint as hour_total_bytes
    from app_bytes

)

select
    hour,
    app,
    bytes,
    hour_total_bytes,
    bytes::double precision / nullif(hour_total_bytes, 0) as share
from with_hour_total
