with

speed_totals as (

    select * from {{ ref('stg_bytes') }}

),

users as (

    select * from {{ ref('stg_user_metadata') }}

),

user_bytes as (

    select
        window_start,
        entity as user_id,
        bytes
    from speed_totals
    where kind = 'user' and {{ last_24_hours('window_start') }}

)

select
    user_bytes.window_start,
    user_bytes.window_start + interval '5 minutes' as window_end,
    user_bytes.user_id,
    users.name,
    users.email,
    user_bytes.bytes
from user_bytes
left join users on users.user_id = user_bytes.user_id
