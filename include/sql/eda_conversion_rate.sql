{#-
  Share of active users who converted (params.conversion_event) in [params.start, params.end).
  Users are counted with COUNT(DISTINCT userid), never by events (docs/reference-notes.md#m5).
-#}
{% import 'macros/xdm.sql' as xdm %}
WITH window_events AS (
    SELECT _{{ tenant }}.userid AS userid, eventType AS event_type
    FROM {{ params.events_table }}
    WHERE timestamp >= {{ xdm.ts(params.start) }} AND timestamp < {{ xdm.ts(params.end) }}
),
counts AS (
    SELECT
        COUNT(DISTINCT userid) AS active_users,
        COUNT(DISTINCT CASE WHEN event_type = '{{ params.conversion_event }}' THEN userid END) AS converted_users
    FROM window_events
)
SELECT
    active_users,
    converted_users,
    CAST(converted_users AS DOUBLE) / NULLIF(active_users, 0) AS conversion_rate
FROM counts
