with

bytes_hourly as (

    select * from {{ ref('stg_bytes_hourly') }}

),

antenna_bytes as (

    select
        hour,
        entity as antenna_id,
        bytes
    from bytes_hourly
    where kind = 'antenna'

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
