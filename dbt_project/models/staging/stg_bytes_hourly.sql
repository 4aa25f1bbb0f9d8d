with

source as (

    select * from {{ source('antenna', 'bytes_hourly') }}

),

renamed as (

    select
        "timestamp" as hour,
        case type
            when 'antenna_total_bytes' then 'antenna'
            when 'email_total_bytes' then 'user'
            when 'app_total_bytes' then 'app'
        end as kind,
        -- an antenna id, a user's email or an app name, by kind
        id as entity,
        value as bytes
    from source

)

select * from renamed
