with

bytes_hourly as (

    select * from {{ source('antenna', 'bytes_hourly') }}

),

antenna_bytes as (

    select
        "timestamp" as hour,
        id as antenna_id,
        value as bytes
    from bytes_hourly
    where type = 'antenna_total_bytes'

),

with_hour_total as (

    select
        hour,
        antenna_id,
        bytes,
        (sum(bytes) over (partition by hour))::bigint as hour_total_bytes
    from antenna_bytes

)

select
    hour,
    antenna_id,
    bytes,
    hour_total_bytes,
    bytes::double precision / nullif(hour_total_bytes, 0) as share
from with_hour_total
