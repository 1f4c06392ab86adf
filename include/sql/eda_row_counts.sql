{#- Events, distinct users and time range of the events dataset in [params.start, params.end). -#}
{% import 'macros/xdm.sql' as xdm %}
SELECT
    COUNT(*) AS event_count,
    COUNT(DISTINCT _{{ tenant }}.userid) AS user_count,
    MIN(timestamp) AS first_event_at,
    MAX(timestamp) AS last_event_at
FROM {{ params.events_table }}
WHERE timestamp >= {{ xdm.ts(params.start) }} AND timestamp < {{ xdm.ts(params.end) }}
