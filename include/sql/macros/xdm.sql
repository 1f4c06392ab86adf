{#-
  XDM field paths and date arithmetic, rendered for the two Query Service dialects:
  - dialect "spark":    the real Query Service (Spark SQL): nested dot paths, `_acme.userid`.
  - dialect "postgres": the emulator (PostgreSQL): one column per leaf, named by its quoted dotted path.
  `dialect` and `tenant` come from the template context (AEPQueryOperator sets them from the
  Query Service connection): import these macros `with context`. Dates are 'YYYY-MM-DD' strings,
  taken as UTC midnight.
-#}

{%- macro field(path) -%}
{%- if dialect == 'postgres' -%}"{{ path }}"{%- else -%}{{ path }}{%- endif -%}
{%- endmacro -%}

{%- macro userid() -%}{{ field('_' ~ tenant ~ '.userid') }}{%- endmacro -%}

{%- macro event_type() -%}{{ field('eventType') }}{%- endmacro -%}

{%- macro timestamp() -%}{{ field('timestamp') }}{%- endmacro -%}

{%- macro shift(days, interval) -%}
{%- if days > 0 %} + {{ interval | format(days) }}{% elif days < 0 %} - {{ interval | format(-days) }}{% endif -%}
{%- endmacro -%}

{#- UTC midnight of `day`, shifted by `days` (negative: earlier). -#}
{%- macro ts(day, days=0) -%}
{%- if dialect == 'postgres' -%}
(TIMESTAMPTZ '{{ day }} 00:00:00+00'{{ shift(days, "INTERVAL '%d days'") }})
{%- else -%}
(TIMESTAMP '{{ day }} 00:00:00'{{ shift(days, 'INTERVAL %d DAYS') }})
{%- endif -%}
{%- endmacro -%}

{#- Fractional days from `earlier` to `later` (NULL when either is NULL). -#}
{%- macro days_between(later, earlier) -%}
{%- if dialect == 'postgres' -%}
(EXTRACT(EPOCH FROM ({{ later }} - {{ earlier }})) / 86400.0)
{%- else -%}
((unix_timestamp({{ later }}) - unix_timestamp({{ earlier }})) / 86400.0)
{%- endif -%}
{%- endmacro -%}

{%- macro to_double(expression) -%}
{%- if dialect == 'postgres' -%}CAST({{ expression }} AS DOUBLE PRECISION){%- else -%}CAST({{ expression }} AS DOUBLE){%- endif -%}
{%- endmacro -%}
