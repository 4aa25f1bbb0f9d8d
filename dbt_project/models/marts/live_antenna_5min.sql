with

speed_totals as (

    select * from {{ ref('stg_bytes') }}

)

select
    window_start,
    window_start + interval '5 minutes' as window_end,
    entity as antenna_id,
    bytes
from speed_totals
where kind = 'antenna' and {{ last_24_hours('window_start') }}
