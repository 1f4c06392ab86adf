{#- Events, distinct users and time range of the events dataset in [params.start, params.end). -#}
{% import 'macros/xdm.sql' as xdm with context %}
SELECT
    COUNT(*) AS event_count,
    COUNT(DISTINCT {{ xdm.userid() }}) AS user_count,
    MIN({{ xdm.timestamp() }}) AS first_event_at,
    MAX({{ xdm.timestamp() }}) AS last_event_at
FROM {{ params.events_table }}
WHERE {{ xdm.timestamp() }} >= {{ xdm.ts(params.start) }} AND {{ xdm.timestamp() }} < {{ xdm.ts(params.end) }}
