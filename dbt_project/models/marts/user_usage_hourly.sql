with

bytes_hourly as (

    select * from {{ ref('stg_bytes_hourly') }}

),

users as (

    select * from {{ ref('stg_user_metadata') }}

),

email_bytes as (

    select
        hour,
        entity as email,
        bytes
    from bytes_hourly
    where kind = 'user'

),

joined as (

    select
        email_bytes.hour,
        users.user_id,
        users.name,
        email_bytes.email,
        email_bytes.bytes,
        users.quota,
        (sum(email_bytes.bytes) over (partition by email_bytes.hour))::bigint as hour_users_bytes
    from email_bytes
    left join users on users.email = email_bytes.email

)

select
    hour,
    user_id,
    name,
    email,
    bytes,
    quota,
    100.0 * bytes::double precision / nullif(quota, 0) as quota_pct,
    bytes > quota as over_quota,
    bytes::double precision / nullif(hour_users_bytes, 0) as share
from joined
