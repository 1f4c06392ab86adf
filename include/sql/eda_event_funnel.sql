{#-
  Events and distinct users per eventType in [params.start, params.end), in funnel order
  (params.event_types, the shared constants). Known types with no events show 0; types outside
  the list show with a NULL funnel_position, so a misspelt or unexpected type is visible (docs/reference-notes.md#m5).
-#}
{% import 'macros/xdm.sql' as xdm %}
WITH known AS (
{%- for event_type in params.event_types %}
    SELECT '{{ event_type }}' AS event_type, {{ loop.index }} AS funnel_position{{ ' UNION ALL' if not loop.last }}
{%- endfor %}
),
observed AS (
    SELECT
        eventType AS event_type,
        COUNT(*) AS event_count,
        COUNT(DISTINCT _{{ tenant }}.userid) AS user_count
    FROM {{ params.events_table }}
    WHERE timestamp >= {{ xdm.ts(params.start) }} AND timestamp < {{ xdm.ts(params.end) }}
    GROUP BY eventType
)
SELECT
    COALESCE(known.event_type, observed.event_type) AS event_type,
    known.funnel_position,
    COALESCE(observed.event_count, 0) AS event_count,
    COALESCE(observed.user_count, 0) AS user_count
FROM known
FULL OUTER JOIN observed ON observed.event_type = known.event_type
ORDER BY known.funnel_position, event_type
