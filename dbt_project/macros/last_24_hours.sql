{#
    The speed layer's views keep the windows of the last 24 hours (UTC, as stored).
#}
{% macro last_24_hours(column) -%}
    {{ column }} >= (now() at time zone 'utc') - interval '24 hours'
{%- endmacro %}
