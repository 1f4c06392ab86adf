{#-
  One row per user as of the cut-off T = params.as_of (UTC midnight), from events before T only.

  Population: users with at least one event in [T - max(lookback_days), T) who had not converted
  (params.conversion_event) at any time before T. Dedup key: (userid, as_of_date).
  Features, for each params.feature_events entry (slug s):
    cnt_<s>_<n>d   events of the type in [T - n days, T), for each n in params.lookback_days
    days_since_<s> fractional days from the last such event (in the longest lookback) to T;
                   NULL when there was none ("never" is not "just now", docs/reference-notes.md#m3)
    has_<s>        1 when there was one in the longest lookback, else 0
  label (params.with_label): 1 when the user converted in [T, T + label_window_days), else 0.
  Scoring mode (with_label false): label is NULL, no event at or after T is read.
  Runs as CTAS: a per-run output table, replaced when the task is re-run (docs/reference-notes.md#m9).
-#}
{% import 'macros/xdm.sql' as xdm %}
{%- set cutoff = xdm.ts(params.as_of) %}
{%- set window_start = xdm.ts(params.as_of, -(params.lookback_days | max)) %}
DROP TABLE IF EXISTS {{ params.output_table }};
CREATE TABLE {{ params.output_table }} AS
WITH windowed_events AS (
    SELECT
        _{{ tenant }}.userid AS userid,
        eventType AS event_type,
        timestamp AS event_time
    FROM {{ params.events_table }}
    WHERE timestamp < {{ xdm.ts(params.as_of, params.label_window_days) if params.with_label else cutoff }}
      AND _{{ tenant }}.userid IS NOT NULL
),
converted_before AS (
    SELECT DISTINCT userid
    FROM windowed_events
    WHERE event_type = '{{ params.conversion_event }}' AND event_time < {{ cutoff }}
),
per_user AS (
    SELECT
        userid,
{%- for event in params.feature_events %}
{%- for days in params.lookback_days %}
        SUM(CASE WHEN event_type = '{{ event.event_type }}' AND event_time >= {{ xdm.ts(params.as_of, -days) }} AND event_time < {{ cutoff }} THEN 1 ELSE 0 END) AS cnt_{{ event.slug }}_{{ days }}d,
{%- endfor %}
        MAX(CASE WHEN event_type = '{{ event.event_type }}' AND event_time < {{ cutoff }} THEN event_time END) AS last_{{ event.slug }},
{%- endfor %}
{%- if params.with_label %}
        MAX(CASE WHEN event_type = '{{ params.conversion_event }}' AND event_time >= {{ cutoff }} THEN 1 ELSE 0 END) AS label,
{%- endif %}
        SUM(CASE WHEN event_time < {{ cutoff }} THEN 1 ELSE 0 END) AS events_before_cutoff
    FROM windowed_events
    WHERE event_time >= {{ window_start }}
    GROUP BY userid
)
SELECT
    per_user.userid,
    DATE '{{ params.as_of }}' AS as_of_date,
{%- for event in params.feature_events %}
{%- for days in params.lookback_days %}
    per_user.cnt_{{ event.slug }}_{{ days }}d,
{%- endfor %}
    {{ xdm.days_between(cutoff, 'per_user.last_' ~ event.slug) }} AS days_since_{{ event.slug }},
    CASE WHEN per_user.last_{{ event.slug }} IS NULL THEN 0 ELSE 1 END AS has_{{ event.slug }},
{%- endfor %}
    {{ 'per_user.label' if params.with_label else 'CAST(NULL AS INT)' }} AS label
FROM per_user
LEFT JOIN converted_before ON converted_before.userid = per_user.userid
WHERE converted_before.userid IS NULL
  AND per_user.events_before_cutoff > 0
