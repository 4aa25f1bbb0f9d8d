with

bytes_hourly as (

    select * from {{ source('antenna', 'bytes_hourly') }}

),

app_bytes as (

    select
        "timestamp" as hour,
        id as app,
        value as bytes
    from bytes_hourly
    where type = 'app_total_bytes'

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
