with

bytes_hourly as (

    select * from {{ source('antenna', 'bytes_hourly') }}

),

user_metadata as (

    select * from {{ source('antenna', 'user_metadata') }}

),

email_bytes as (

    select
        "timestamp" as hour,
        id as email,
        value as bytes
    from bytes_hourly
    where type = 'email_total_bytes'

),

joined as (

    select
        email_bytes.hour,
        user_metadata.id as user_id,
        user_metadata.name,
        email_bytes.email,
        email_bytes.bytes,
        user_metadata.quota
    from email_bytes
    left join user_metadata on user_metadata.email = email_bytes.email

)

select
    hour,
    user_id,
    name,
    email,
    bytes,
    quota,
    100.0 * bytes::double precision / nullif(quota, 0) as quota_pct,
    bytes > quota as over_quota
from joined
