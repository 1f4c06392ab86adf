{#-
  Date arithmetic for the Query Service SQL templates (Spark SQL, as AEP and the emulator both run it).
  Dates are 'YYYY-MM-DD' strings, taken as UTC midnight (Query Service runs in UTC).
-#}

{#- UTC midnight of `day`, shifted by `days` (negative: earlier). -#}
{%- macro ts(day, days=0) -%}
(TIMESTAMP '{{ day }} 00:00:00'{% if days > 0 %} + INTERVAL {{ days }} DAYS{% elif days < 0 %} - INTERVAL {{ -days }} DAYS{% endif %})
{%- endmacro -%}

{#- Fractional days from `earlier` to `later` (NULL when either is NULL), to the microsecond. -#}
{%- macro days_between(later, earlier) -%}
((unix_micros({{ later }}) - unix_micros({{ earlier }})) / 86400000000.0)
{%- endmacro -%}
