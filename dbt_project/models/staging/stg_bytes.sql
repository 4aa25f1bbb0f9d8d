with

source as (

    select * from {{ source('antenna', 'bytes') }}

),

renamed as (

    select
        "timestamp" as window_start,
        case type
            when 'antenna_total_bytes' then 'antenna'
            when 'user_total_bytes' then 'user'
            when 'app_total_bytes' then 'app'
        end as kind,
        -- an antenna id, a device (user) id or an app name, by kind
        id as entity,
        value as bytes
    from source

)

select * from renamed
