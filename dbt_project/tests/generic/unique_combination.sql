{#
    The combination of `columns` is unique in `model` (no dbt_utils: `dbt deps`
    needs the internet, and this is all we use from it).
#}
{% test unique_combination(model, columns) %}

select
    {{ columns | join(', ') }},
    count(*) as n_rows
from {{ model }}
group by {{ columns | join(', ') }}
having count(*) > 1

{% endtest %}
