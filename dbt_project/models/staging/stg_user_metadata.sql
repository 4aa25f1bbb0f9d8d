with

source as (

    select * from {{ source('antenna', 'user_metadata') }}

),

renamed as (

    select
        id as user_id,
        name,
        email,
        quota
    from source

)

select * from renamed
