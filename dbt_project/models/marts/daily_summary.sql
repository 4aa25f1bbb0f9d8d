with

antenna_traffic as (

    select * from {{ ref('antenna_traffic_hourly') }}

),

user_usage as (

    select * from {{ ref('user_usage_hourly') }}

),

app_usage as (

    select * from {{ ref('app_usage_hourly') }}

),

quota_breaches as (

    select * from {{ ref('quota_breaches') }}

),

traffic_per_day as (

    select
        hour::date as day,
        sum(bytes)::bigint as total_bytes,
        count(distinct antenna_id) as active_antennas
    from antenna_traffic
    group by 1

),

users_per_day as (

    select
        hour::date as day,
        count(distinct email) as active_users
    from user_usage
    group by 1

),

breaches_per_day as (

    select
        hour::date as day,
        count(*) as breaches,
        count(distinct email) as users_over_quota
    from quota_breaches
    group by 1

),

app_per_day as (

    select
        hour::date as day,
        app,
        sum(bytes)::bigint as bytes
    from app_usage
    group by 1, 2

),

top_app_per_day as (

    -- ties go to the alphabetically first app, so the answer is stable
    select distinct on (day)
        day,
        app as top_app,
        bytes as top_app_bytes
    from app_per_day
    order by day, bytes desc, app

),

days as (

    select day from traffic_per_day
    union
    select day from users_per_day
    union
    select day from app_per_day
    union
    select day from breaches_per_day

)

select
    days.day,
    coalesce(traffic_per_day.total_bytes, 0) as total_bytes,
    coalesce(users_per_day.active_users, 0) as active_users,
    coalesce(traffic_per_day.active_antennas, 0) as active_antennas,
    coalesce(breaches_per_day.breaches, 0) as breaches,
    coalesce(breaches_per_day.users_over_quota, 0) as users_over_quota,
    top_app_per_day.top_app,
    top_app_per_day.top_app_bytes
from days
left join traffic_per_day on traffic_per_day.day = days.day
left join users_per_day on users_per_day.day = days.day
left join breaches_per_day on breaches_per_day.day = days.day
left join top_app_per_day on top_app_per_day.day = days.day
