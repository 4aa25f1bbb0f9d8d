with

source as (

    select * from {{ source('antenna', 'user_quota_limit') }}

),

renamed as (

    select
        "timestamp" as hour,
        email,
        usage as bytes,
        quota
    from source

)

select * from renamed
