{#
    Use the configured schema as is (`serving`), not dbt's default
    `<target_schema>_<custom_schema>`: dashboards and BI tools point at `serving`.
#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- else -%}
        {{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
